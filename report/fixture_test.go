package report

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./report -run %s -update creates it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./report -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// The demo lab: client 198.18.0.1 → routers 1..5 (router k is
// 198.18.(k-1).2) → server 198.18.5.2 at hop 6.
func routerAddr(k int) string { return fmt.Sprintf("198.18.%d.2", k-1) }

const (
	apiAddr = "198.18.5.2"
	mqAddr  = "198.18.5.3"
)

// hop is an answered hop: all probes answered by addr.
func hop(ttl int, addr, hostname string, avg float64, kind string) trace.Hop {
	return trace.Hop{
		TTL: ttl, Sent: 3, Received: 3, ReplyTTL: 65 - ttl,
		Responders: []trace.Responder{{Address: addr, Hostname: hostname, MPLS: []probe.MPLSLabel{}, Received: 3, Kinds: []string{kind}}},
		RTTms:      trace.RTTStats{Last: avg + 0.01, Min: avg - 0.01, Avg: avg, Max: avg + 0.02, Stdev: 0.01},
		JitterMs:   0.01,
	}
}

func silentHop(ttl int) trace.Hop {
	return trace.Hop{TTL: ttl, Sent: 3, Responders: []trace.Responder{}, LossPct: 100, ReplyTTL: -1, Note: "no reply"}
}

func demoTrace(proto string, port int, address string, hops []trace.Hop) trace.Trace {
	return trace.Trace{
		Target:    trace.Target{Host: address, Address: address, Port: port, Protocol: proto},
		Privilege: "raw", Reached: true, ReachedTTL: hops[len(hops)-1].TTL,
		Flows: 1, Rounds: 1, Queries: 3, Hops: hops, DurationS: 0.21,
	}
}

// apiPath is the path to the API server as one protocol sees it.
func apiPath(proto string, last string, rtt0 float64) []trace.Hop {
	names := []string{"gw.lab.example", "r2.lab.example", "r3.lab.example", "r4.lab.example", "r5.lab.example"}
	var hops []trace.Hop
	for k := 1; k <= 5; k++ {
		hops = append(hops, hop(k, routerAddr(k), names[k-1], rtt0+0.01*float64(k), "time-exceeded"))
	}
	return append(hops, hop(6, apiAddr, "api.lab.example", rtt0+0.07, last))
}

// idleConnections are the idle ladder's records as tcpcheck writes them:
// survivors carry their reuses, failures their idle time.
func idleConnections() []tcpcheck.ConnRecord {
	var cs []tcpcheck.ConnRecord
	for i := 1; i <= 12; i++ {
		cs = append(cs, tcpcheck.ConnRecord{ID: i, LocalPort: uint16(40100 + i), StartS: 0.01 * float64(i),
			Phases: tcpcheck.PhasesMs{}, Outcome: tcpcheck.OutcomeOK, Uses: 1 + i%3})
	}
	rst := func(id int, idle, at float64) {
		c := &cs[id-1]
		c.Outcome, c.Phase, c.IdleS, c.EndS, c.Uses = tcpcheck.OutcomeReset, tcpcheck.PhaseRequest, idle, at, 0
		c.Error = "read: connection reset by peer"
		c.Packets = []tcpcheck.PacketRec{{Flags: "RST", AtS: at, TTL: 62, IPID: 0, DF: true, Hop: 3,
			Origin: probe.OriginMiddlebox, Reason: "TTL 62 means hop 3, nearer than the server at hop 6"}}
	}
	rst(5, 10.13, 16.9)
	rst(7, 8.9, 26.2)
	rst(9, 8.45, 34.8)
	return cs
}

// demoReport is the report of `hopcheck demo`: router 3 resets flows idle
// for 8 s or more, the server accepts 10 connections at once; a second
// target (AMQP) has a clean path with a silent router 2.
func demoReport() diagnose.Report {
	api := diagnose.TargetReport{
		Target: "https://api.lab.example", Host: "api.lab.example", Address: apiAddr, Port: 443, App: "https",
		Traces: []trace.Trace{
			demoTrace("icmp", 0, apiAddr, apiPath("icmp", "echo-reply", 0.02)),
			demoTrace("udp", 443, apiAddr, apiPath("udp", "dest-unreachable", 0.02)),
			demoTrace("tcp", 443, apiAddr, apiPath("tcp", "syn-ack", 0.05)),
		},
		Tests: map[string]tcpcheck.Result{
			"connect": {Target: "https://api.lab.example", Address: apiAddr, Port: 443, App: "https", ServerTTL: 59, ServerHop: 6,
				Counts: map[tcpcheck.Outcome]int{tcpcheck.OutcomeOK: 20}, Connections: []tcpcheck.ConnRecord{}},
			"concurrency": {Target: "https://api.lab.example", Address: apiAddr, Port: 443, App: "https", ServerTTL: 59, ServerHop: 6,
				Counts:      map[tcpcheck.Outcome]int{tcpcheck.OutcomeOK: 10, tcpcheck.OutcomeResetInHandshake: 3},
				Connections: []tcpcheck.ConnRecord{}, Concurrency: &tcpcheck.ConcResult{Cap: 16, Reached: 10, FirstFail: 11}},
			"idle": {Target: "https://api.lab.example", Address: apiAddr, Port: 443, App: "https", ServerTTL: 59, ServerHop: 6,
				Counts:      map[tcpcheck.Outcome]int{tcpcheck.OutcomeOK: 9, tcpcheck.OutcomeReset: 3},
				Connections: idleConnections(),
				Idle: &tcpcheck.IdleResult{TimeoutS: 8.2, BracketS: [2]float64{7.95, 8.45}, MaxS: 60, Behaviour: "reset",
					Width: 12, Verified: "survived"}},
		},
		Localisation: &diagnose.Localisation{InFlow: &diagnose.InFlow{
			Flow: "198.18.0.1:40109 > 198.18.5.2:443",
			Healthy: []diagnose.InFlowAnswer{
				{TTL: 1, From: routerAddr(1), Kind: "time-exceeded"}, {TTL: 2, From: routerAddr(2), Kind: "time-exceeded"},
				{TTL: 3, From: routerAddr(3), Kind: "time-exceeded"}, {TTL: 4, From: routerAddr(4), Kind: "time-exceeded"},
				{TTL: 5, From: routerAddr(5), Kind: "time-exceeded"}, {TTL: 6, From: apiAddr, Kind: "ack"},
			},
			Expired: []diagnose.InFlowAnswer{
				{TTL: 1, From: routerAddr(1), Kind: "time-exceeded"}, {TTL: 2, From: routerAddr(2), Kind: "time-exceeded"},
				{TTL: 3, From: routerAddr(3), Kind: "rst"}, {TTL: 4, Kind: "none"}, {TTL: 5, Kind: "none"}, {TTL: 6, Kind: "none"},
			},
			Hop: 3, HopAddress: routerAddr(3), Behaviour: "reset",
		}},
		CulpritHop: 3,
	}

	mqHops := func(rtt0 float64, last string) []trace.Hop {
		hops := []trace.Hop{hop(1, routerAddr(1), "gw.lab.example", rtt0, "time-exceeded"), silentHop(2)}
		for k := 3; k <= 5; k++ {
			hops = append(hops, hop(k, routerAddr(k), "", rtt0+0.01*float64(k), "time-exceeded"))
		}
		return append(hops, hop(6, mqAddr, "mq.lab.example", rtt0+0.06, last))
	}
	tcpMQ := mqHops(0.06, "syn-ack")
	// From hop 5 on, replies come back over one more router (tracepath's
	// "asymm"): the hop table says so.
	for _, h := range []*trace.Hop{&tcpMQ[4], &tcpMQ[5]} {
		h.ReplyTTL, h.ReturnHops, h.Asymm = h.ReplyTTL-1, h.TTL+1, 1
	}
	icmp := mqHops(0.02, "echo-reply")
	icmp[3].Received, icmp[3].LossPct, icmp[3].LossKind = 2, 33.3, trace.LossRateLimit
	icmp[3].Note = "loss here does not persist: ICMP rate limiting, not path loss"
	mq := diagnose.TargetReport{
		Target: "amqps://mq.lab.example:5671", Host: "mq.lab.example", Address: mqAddr, Port: 5671, App: "amqps",
		Traces: []trace.Trace{
			demoTrace("tcp", 5671, mqAddr, tcpMQ),
			demoTrace("icmp", 0, mqAddr, icmp),
		},
		Tests: map[string]tcpcheck.Result{
			"connect": {Target: "amqps://mq.lab.example:5671", Address: mqAddr, Port: 5671, App: "amqps", ServerTTL: 59, ServerHop: 6,
				Counts: map[tcpcheck.Outcome]int{tcpcheck.OutcomeOK: 20}, Connections: []tcpcheck.ConnRecord{}},
		},
	}

	idleReset := diagnose.Finding{
		Finding: tcpcheck.Finding{
			Kind: tcpcheck.KindIdleReset, Target: api.Target, Address: apiAddr, Hop: 3, HopAddress: routerAddr(3),
			Origin: probe.OriginMiddlebox, Confidence: "high", Method: "fingerprint",
			Evidence: []string{
				"3 connection(s) failed (reset) after idling 8.45s or more; the longest idle that still worked was 7.95s",
				"RST TTL 62 means hop 3, nearer than the server at hop 6 (SYN-ACK TTL 59)",
				"in-flow TTL-limited probes confirm hop 3 (198.18.2.2) lost the flow's state (reset)",
			},
			Advice: "Idle connections are reset after about 8s: reusing a pooled connection after that fails with a reset. " +
				"Keep idle time below it: Java HttpClient evictIdleConnections(4 s) (SDK: no eviction by default); " +
				".NET SocketsHttpHandler.PooledConnectionIdleTimeout = 4 s; Go http.Transport.IdleConnTimeout = 4 s; " +
				"TCP keepalive time 4 s (net.ipv4.tcp_keepalive_time, or per socket TCP_KEEPIDLE); AMQP heartbeat 4 s.",
			IdleTimeoutS: 8.2, IdleBracketS: []float64{7.95, 8.45},
		},
		Phase: "idle", Severity: "critical",
	}
	concurrency := diagnose.Finding{
		Finding: tcpcheck.Finding{
			Kind: tcpcheck.KindConcurrencyLimit, Target: api.Target, Address: apiAddr, Hop: 6,
			Origin: probe.OriginServer, Confidence: "medium", Method: "server",
			Evidence: []string{
				"10 connections worked at once; connections 11 to 13 were reset during the TLS handshake",
				"RST TTL 59 is the server's (hop 6, the same initial TTL as its SYN-ACK)",
			},
			Advice: "The server accepts at most 10 connections at once from this client. Keep the pool at or below 10: " +
				"Java HttpClient setMaxConnPerRoute(10); .NET SocketsHttpHandler.MaxConnectionsPerServer = 10; " +
				"Go http.Transport.MaxConnsPerHost = 10.",
			Limit: 10,
		},
		Phase: "setup", Severity: "critical",
	}
	return diagnose.Report{
		SchemaVersion: diagnose.SchemaVersion, Tool: "hopcheck v0.4.0",
		StartedAt: time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC), DurationS: 118.4,
		Profile: "quick", Privilege: "raw",
		Targets:  []diagnose.TargetReport{api, mq},
		Findings: []diagnose.Finding{idleReset, concurrency},
	}
}

// cleanReport has one target and no findings.
func cleanReport() diagnose.Report {
	r := demoReport()
	r.Targets = r.Targets[1:]
	r.Findings = []diagnose.Finding{}
	return r
}

func strconvItoa(n int) string { return fmt.Sprint(n) }

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}
