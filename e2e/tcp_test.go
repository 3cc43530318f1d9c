package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// tcpJSON runs `hopcheck tcp ARGS --format json` in the lab's client
// namespace and decodes the report; exit code 0 or 1 is expected.
func tcpJSON(t *testing.T, l *lab.Lab, args ...string) (tcpcheck.Report, time.Duration) {
	t.Helper()
	start := time.Now()
	r := runIn(t, l, l.ClientNS, nil, append([]string{"--format", "json", "tcp"}, args...)...)
	wall := time.Since(start)
	if r.code != 0 && r.code != 1 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	rep := decodeJSON[tcpcheck.Report](t, r)
	if strings.Contains(r.stdout+r.stderr, l.Server.Token) {
		t.Errorf("the access token appears in the output")
	}
	if (len(rep.Findings) > 0) != (r.code == 1) {
		t.Errorf("exit %d with %d findings", r.code, len(rep.Findings))
	}
	return rep, wall
}

func oneFinding(t *testing.T, rep tcpcheck.Report, kind string) tcpcheck.Finding {
	t.Helper()
	var got []string
	for _, f := range rep.Findings {
		if f.Kind == kind {
			return f
		}
		got = append(got, f.Kind)
	}
	t.Fatalf("no %s finding; findings %v; results %s", kind, got, resultSummary(rep))
	return tcpcheck.Finding{}
}

func resultSummary(rep tcpcheck.Report) string {
	var b strings.Builder
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "[%s %s err=%q counts=%v server_hop=%d", r.Target, r.Address, r.Error, r.Counts, r.ServerHop)
		if r.Idle != nil {
			fmt.Fprintf(&b, " idle=%+v", *r.Idle)
		}
		if r.Concurrency != nil {
			fmt.Fprintf(&b, " conc=%+v", *r.Concurrency)
		}
		b.WriteString("] ")
	}
	return b.String()
}

func checkIdle(t *testing.T, f tcpcheck.Finding, trueT float64) {
	t.Helper()
	if math.Abs(f.IdleTimeoutS-trueT) > 1 {
		t.Errorf("idle timeout %.2fs, true %.0fs (bracket %v)", f.IdleTimeoutS, trueT, f.IdleBracketS)
	}
	if len(f.IdleBracketS) != 2 || f.IdleBracketS[0] >= trueT+0.3 || f.IdleBracketS[1] < trueT-0.3 {
		t.Errorf("bracket %v does not hold %.0fs", f.IdleBracketS, trueT)
	}
	if f.Advice == "" || !strings.Contains(f.Advice, "IdleConnTimeout") {
		t.Errorf("advice %q", f.Advice)
	}
}

// Scenario 1: router 3 of 5 resets flows idle ≥ 10 s.
func TestTCPIdleResetByRouter(t *testing.T) {
	t.Parallel() // it mostly waits
	rs := make([]lab.Router, 5)
	rs[2].IdleTimeout, rs[2].IdleAction = 10*time.Second, lab.IdleActionReset
	l := buildLab(t, lab.Scenario{Name: "idle-reset-r3", Routers: rs})
	target := fmt.Sprintf("https://%s", l.Server4)
	rep, wall := tcpJSON(t, l, "idle", "--idle-max", "30s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), target)
	f := oneFinding(t, rep, tcpcheck.KindIdleReset)
	checkIdle(t, f, 10)
	if f.Origin != probe.OriginMiddlebox || f.Hop != 3 || f.HopAddress != l.Router4[2].String() {
		t.Errorf("origin %s hop %d (%s), want middlebox hop 3 (%s); evidence %v", f.Origin, f.Hop, f.HopAddress, l.Router4[2], f.Evidence)
	}
	t.Logf("idle-reset: T=%.2fs bracket %v (true 10s), wall %v; %s", f.IdleTimeoutS, f.IdleBracketS, wall.Round(100*time.Millisecond), resultSummary(rep))
}

// Scenario 2: router 2 of 4 silently drops flows idle ≥ 8 s.
func TestTCPIdleDropByRouter(t *testing.T) {
	t.Parallel() // it mostly waits
	rs := make([]lab.Router, 4)
	rs[1].IdleTimeout, rs[1].IdleAction = 8*time.Second, lab.IdleActionDrop
	l := buildLab(t, lab.Scenario{Name: "idle-drop-r2", Routers: rs})
	target := fmt.Sprintf("https://%s", l.Server4)
	rep, wall := tcpJSON(t, l, "idle", "--idle-max", "30s", "--ca-file", l.CAFile, target)
	f := oneFinding(t, rep, tcpcheck.KindIdleDrop)
	checkIdle(t, f, 8)
	if f.Origin != probe.OriginMiddlebox || f.Hop != 2 || f.HopAddress != l.Router4[1].String() {
		t.Errorf("origin %s hop %d (%s), want middlebox hop 2 (%s); evidence %v", f.Origin, f.Hop, f.HopAddress, l.Router4[1], f.Evidence)
	}
	t.Logf("idle-drop: T=%.2fs bracket %v (true 8s), wall %v; %s", f.IdleTimeoutS, f.IdleBracketS, wall.Round(100*time.Millisecond), resultSummary(rep))
}

// Scenario 3: the server closes idle keep-alive connections after 6 s.
func TestTCPIdleCloseByServer(t *testing.T) {
	t.Parallel() // it mostly waits
	l := buildLab(t, lab.Scenario{Name: "idle-close-server", Routers: make([]lab.Router, 2),
		Server: lab.Server{IdleClose: 6 * time.Second}})
	target := fmt.Sprintf("https://%s", l.Server4)
	rep, wall := tcpJSON(t, l, "idle", "--idle-max", "30s", "--ca-file", l.CAFile, target)
	f := oneFinding(t, rep, tcpcheck.KindIdleClose)
	checkIdle(t, f, 6)
	if f.Origin != probe.OriginServer {
		t.Errorf("origin %s, want server; evidence %v", f.Origin, f.Evidence)
	}
	t.Logf("idle-close: T=%.2fs bracket %v (true 6s), wall %v", f.IdleTimeoutS, f.IdleBracketS, wall.Round(100*time.Millisecond))
}

// Scenario 4: the server resets connections beyond 15 concurrent.
func TestTCPConcurrencyLimitAtServer(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "conc-limit", Routers: make([]lab.Router, 2), Server: lab.Server{MaxConns: 15}})
	target := fmt.Sprintf("https://%s", l.Server4)
	rep, wall := tcpJSON(t, l, "concurrency", "--conns", "32", "--ca-file", l.CAFile, target)
	f := oneFinding(t, rep, tcpcheck.KindConcurrencyLimit)
	if f.Limit < 14 || f.Limit > 16 {
		t.Errorf("limit %d, want 15±1", f.Limit)
	}
	if f.Origin != probe.OriginServer || rep.Results[0].ServerHop != 3 {
		t.Errorf("origin %s, server hop %d; want server at hop 3; evidence %v", f.Origin, rep.Results[0].ServerHop, f.Evidence)
	}
	t.Logf("concurrency: limit %d, wall %v", f.Limit, wall.Round(100*time.Millisecond))
}

// Scenario 5: router 2 resets 2 % of SYNs. A 95 % interval misses the
// true rate in one run of 20 by design, so two reruns are allowed for that
// check alone (all three missing: 1 in 8000; with one rerun, 1 in 400,
// it did fail a CI run: 0.0110 then 0.0290, while 8 runs in a row gave
// 0.012-0.025, binomial spread around 0.02). A biased rate still fails.
func TestTCPConnectResetBySYNResetter(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[1].SYNResetPercent = 2
	l := buildLab(t, lab.Scenario{Name: "syn-reset-r2", Routers: rs})
	target := fmt.Sprintf("tcp://%s:%d", l.Server4, l.Server.EchoPort)
	for attempt := 1; attempt <= 3; attempt++ {
		rep, wall := tcpJSON(t, l, "connect", "--count", "1000", "--rate", "400", target)
		f := oneFinding(t, rep, tcpcheck.KindConnectReset)
		if f.Origin != probe.OriginMiddlebox || f.Hop != 2 || f.HopAddress != l.Router4[1].String() {
			t.Errorf("origin %s hop %d (%s), want middlebox hop 2 (%s); evidence %v", f.Origin, f.Hop, f.HopAddress, l.Router4[1], f.Evidence)
		}
		if f.Rate <= 0 {
			t.Fatalf("rate %v", f.Rate)
		}
		res := rep.Results[0]
		if r, ok := res.Rates[tcpcheck.OutcomeRefused]; !ok || r.Of != 1000 || r.Count != res.Counts[tcpcheck.OutcomeRefused] {
			t.Errorf("rates %+v, counts %v", res.Rates, res.Counts)
		}
		if res.ResetsByOrigin["middlebox"] == 0 || res.ResetsByOrigin["middlebox"] != res.Counts[tcpcheck.OutcomeRefused] {
			t.Errorf("resets by origin %v, counts %v", res.ResetsByOrigin, res.Counts)
		}
		t.Logf("connect attempt %d: rate %.4f CI %v, wall %v", attempt, f.Rate, f.RateCI, wall.Round(100*time.Millisecond))
		if len(f.RateCI) == 2 && f.RateCI[0] <= 0.02 && f.RateCI[1] >= 0.02 {
			return
		}
	}
	t.Errorf("rate_ci missed 0.02 in three runs")
}

// Scenario 6: a PMTU black hole stalls a large transfer; it is no reset.
// The hole is toward the client (router 3 drops the frag-needed it owes
// the server), where an SDK meets it: the server's large segments die.
// (It was toward the server, router 2 hiding its own frag-needed: only
// hopcheck's former 1.5 KB ClientHello fell into it; a UOF client's
// small packets pass.)
func TestTCPDataStallOnPMTUBlackHole(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[1].LinkMTU, rs[2].HideFragNeeded = 1280, true
	l := buildLab(t, lab.Scenario{Name: "pmtu-black-hole", Routers: rs})
	target := fmt.Sprintf("https://%s", l.Server4)
	rep, wall := tcpJSON(t, l, "data", "--stall", "3s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), target)
	oneFinding(t, rep, tcpcheck.KindDataStall)
	for _, f := range rep.Findings {
		if f.Kind == tcpcheck.KindMidstreamReset {
			t.Errorf("a stall reported as a reset: %+v", f)
		}
	}
	t.Logf("data: wall %v", wall.Round(100*time.Millisecond))
}

// Scenario 8: bad input is one line naming the value, exit 2, before
// anything is sent.
func TestTCPBadInput(t *testing.T) {
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown scheme", []string{"tcp", "idle", "ftp://198.18.0.1"}, "ftp"},
		{"port out of range", []string{"tcp", "connect", "198.18.0.1:70000"}, "70000"},
		{"idle-max below 1s", []string{"tcp", "idle", "--idle-max", "500ms", "tcp://198.18.0.1:7"}, "500ms"},
		{"conns 0", []string{"tcp", "concurrency", "--conns", "0", "tcp://198.18.0.1:7"}, "--conns 0"},
		{"too many toward betradar", []string{"tcp", "concurrency", "--conns", "41", "https://api.betradar.com"}, "41"},
		{"data over amqps", []string{"tcp", "data", "amqps://198.18.0.1:5671"}, "amqps://198.18.0.1:5671"},
		{"unreadable ca-file", []string{"tcp", "connect", "--ca-file", unreadable, "https://198.18.0.1"}, unreadable},
		{"unreadable token-file", []string{"tcp", "connect", "--token-file", unreadable, "https://198.18.0.1"}, unreadable},
		{"unknown tls-profile", []string{"tcp", "connect", "--tls-profile", "openssl", "https://198.18.0.1"}, "openssl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "report.json")
			r := runLocal(t, dir, append([]string{"-o", out}, c.args...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q: want one line naming %q", r.stderr, c.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("report written")
			}
			matches, _ := filepath.Glob(filepath.Join(dir, ".report.json.tmp-*"))
			if len(matches) > 0 {
				t.Errorf("temporary files left: %v", matches)
			}
		})
	}
}

// A clean path: the large transfer completes, no findings, exit 0.
func TestTCPDataCleanPath(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "data-clean", Routers: make([]lab.Router, 2)})
	for _, target := range []string{fmt.Sprintf("https://%s", l.Server4), fmt.Sprintf("tcp://%s:%d", l.Server4, l.Server.EchoPort)} {
		rep, wall := tcpJSON(t, l, "data", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), target)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 || rep.Results[0].Counts[tcpcheck.OutcomeOK] != 1 {
			t.Errorf("%s: findings %+v; %s", target, rep.Findings, resultSummary(rep))
		}
		if tr := rep.Results[0].Transfer; tr == nil || tr.Stalled || tr.Bytes < 4<<20 || tr.SendMSS == 0 {
			t.Errorf("%s: transfer %+v", target, tr)
		} else if strings.HasPrefix(target, "https") && (tr.Path != tcpcheck.DefaultDataPath || tr.Bytes < lab.DefaultLargeSize) {
			t.Errorf("%s: downloaded %d bytes of %q; want the UOF market descriptions, %d bytes", target, tr.Bytes, tr.Path, lab.DefaultLargeSize)
		}
		t.Logf("%s: data clean, wall %v", target, wall.Round(100*time.Millisecond))
	}
}

// An error page is no transfer: without the token (401) or at a path the
// server does not have (404) the data test did not run; exit 3 naming
// the status, no findings.
func TestTCPDataErrorPageIsNotATransfer(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "data-error-page", Routers: make([]lab.Router, 1)})
	target := fmt.Sprintf("https://%s", l.Server4)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ca-file", l.CAFile}, "HTTP 401 Unauthorized for GET " + tcpcheck.DefaultDataPath},
		{[]string{"--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--path", "/nope"}, "HTTP 404 Not Found for GET /nope"},
	} {
		args := append(append([]string{"--format", "json", "tcp", "data"}, c.args...), target)
		r := runIn(t, l, l.ClientNS, nil, args...)
		rep := decodeJSON[tcpcheck.Report](t, r)
		if r.code != 3 || len(rep.Findings) != 0 || len(rep.Results) != 1 || rep.Results[0].Transfer != nil ||
			!strings.Contains(rep.Results[0].Error, c.want) || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, findings %v, %s; stderr %q; want exit 3 naming %q", c.args, r.code, rep.Findings, resultSummary(rep), r.stderr, c.want)
		}
	}
}

// BenchmarkLabIdleLadder measures `hopcheck tcp idle` (defaults: 12
// connections, keepalive verification on) against the true timeout:
// scenario 1 (router resets on reuse, target wall ≤ 2.2·T) and scenario 3
// (server closes, target wall ≤ 1.1·T + 5 s).
func BenchmarkLabIdleLadder(b *testing.B) {
	rs := make([]lab.Router, 5)
	rs[2].IdleTimeout, rs[2].IdleAction = 10*time.Second, lab.IdleActionReset
	reset := buildLab(b, lab.Scenario{Name: "bench-idle-reset", Routers: rs})
	closing := buildLab(b, lab.Scenario{Name: "bench-idle-close", Routers: make([]lab.Router, 2), Server: lab.Server{IdleClose: 6 * time.Second}})
	for i := 0; i < b.N; i++ {
		for _, c := range []struct {
			name   string
			l      *lab.Lab
			trueT  float64
			target func(T float64) float64
		}{
			{"reset", reset, 10, func(T float64) float64 { return 2.2 * T }},
			{"close", closing, 6, func(T float64) float64 { return 1.1*T + 5 }},
		} {
			wall := idleWall(b, c.l, "--format", "json", "tcp", "idle", "--idle-max", "60s", "--ca-file", c.l.CAFile,
				fmt.Sprintf("https://%s", c.l.Server4))
			b.ReportMetric(wall.Seconds()/c.trueT, "wall/T-"+c.name)
			fmt.Printf("idle %-5s T=%.0fs wall %.1fs = %.2f×T (target <= %.1fs)\n", c.name, c.trueT, wall.Seconds(),
				wall.Seconds()/c.trueT, c.target(c.trueT))
		}
	}
}

// idleWall runs hopcheck once in the client namespace (exit 1, findings,
// is expected) and returns its wall time.
func idleWall(b *testing.B, l *lab.Lab, args ...string) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, l.ClientNS, binary, args...)
	start := time.Now()
	out, err := cmd.Output()
	d := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		b.Fatalf("%v: %v\n%s", args, err, out)
	}
	return d
}

// Scenario 1 without CAP_NET_RAW: no capture, so the origin comes from the
// IP_MINTTL A/B check (a reset from nearer than the server is ignored and
// the reuse times out), with low confidence and no hop.
func TestTCPIdleResetUnprivileged(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[1].IdleTimeout, rs[1].IdleAction = 5*time.Second, lab.IdleActionReset
	l := buildLab(t, lab.Scenario{Name: "idle-reset-unpriv", Routers: rs})
	drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	r := runIn(t, l, l.ClientNS, drop, "--format", "json", "tcp", "idle", "--idle-max", "20s", "--no-verify", "--insecure",
		fmt.Sprintf("https://%s", l.Server4))
	if r.code != 1 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "CAP_NET_RAW") {
		t.Errorf("no warning about weaker evidence: %q", r.stderr)
	}
	rep := decodeJSON[tcpcheck.Report](t, r)
	if rep.Evidence != "socket" {
		t.Errorf("evidence %q", rep.Evidence)
	}
	f := oneFinding(t, rep, tcpcheck.KindIdleReset)
	checkIdle(t, f, 5)
	if f.Origin != probe.OriginMiddlebox || f.Confidence != "low" || rep.Results[0].ServerHop != 4 {
		t.Errorf("origin %s confidence %s server hop %d; evidence %v", f.Origin, f.Confidence, rep.Results[0].ServerHop, f.Evidence)
	}
	t.Logf("unprivileged idle-reset: T=%.2fs, evidence %v", f.IdleTimeoutS, f.Evidence)
}

// A router that resets flows beyond 1 MB: the 8 MiB download (and an
// echoed upload) is reset after the handshakes, mid-transfer, and the flow
// observer puts the RST at hop 2, not at the server.
func TestTCPDataResetMidstreamByRouter(t *testing.T) {
	const limit = 1_000_000
	rs := make([]lab.Router, 3)
	rs[1].ResetAfterBytes = limit
	l := buildLab(t, lab.Scenario{Name: "midstream-reset-r2", Routers: rs})
	for _, c := range []struct {
		target string
		router string
		// minBytes: what must have arrived before the reset. A download
		// gets about limit (the ACKs count too); an echo sends most of it.
		minBytes int64
	}{
		{fmt.Sprintf("https://%s", l.Server4), l.Router4[1].String(), limit * 9 / 10},
		{fmt.Sprintf("https://[%s]", l.Server6), l.Router6[1].String(), limit * 9 / 10},
		{fmt.Sprintf("tcp://%s:%d", l.Server4, l.Server.EchoPort), l.Router4[1].String(), 32 << 10},
	} {
		t.Run(c.target, func(t *testing.T) {
			rep, wall := tcpJSON(t, l, "data", "--stall", "3s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), c.target)
			if len(rep.Results) != 1 || len(rep.Results[0].Connections) != 1 {
				t.Fatalf("want one result with one connection: %s", resultSummary(rep))
			}
			res := rep.Results[0]
			conn := res.Connections[0]
			// A reset after the TCP handshake and, for HTTPS, after TLS and
			// the first exchange: in the transfer.
			if conn.Outcome != tcpcheck.OutcomeReset || conn.Phase != tcpcheck.PhaseRequest || conn.Phases.TCP <= 0 {
				t.Errorf("connection %s in phase %q (%s), want reset in %q; %s", conn.Outcome, conn.Phase, conn.Error, tcpcheck.PhaseRequest, resultSummary(rep))
			}
			if res.App == "https" && (conn.Phases.TLS <= 0 || conn.Phases.FirstByte <= 0) {
				t.Errorf("phases %+v: TLS and the first exchange should have completed", conn.Phases)
			}
			if tr := res.Transfer; tr == nil || tr.Stalled || tr.Bytes < c.minBytes || tr.Bytes > 2*limit {
				t.Errorf("transfer %+v, want %d..%d bytes, not stalled", tr, c.minBytes, 2*limit)
			}
			if res.ServerHop != len(rs)+1 {
				t.Errorf("server hop %d (TTL %d), want %d", res.ServerHop, res.ServerTTL, len(rs)+1)
			}
			if len(conn.Packets) == 0 {
				t.Errorf("the observer captured no RST")
			}
			for _, p := range conn.Packets {
				if !strings.Contains(p.Flags, "RST") || p.Origin != probe.OriginMiddlebox || p.Hop != 2 {
					t.Errorf("captured %s from %s at hop %d (TTL %d), want RSTs from the middlebox at hop 2", p.Flags, p.Origin, p.Hop, p.TTL)
				}
			}
			f := oneFinding(t, rep, tcpcheck.KindMidstreamReset)
			if f.Origin != probe.OriginMiddlebox || f.Hop != 2 || f.HopAddress != c.router || f.Confidence != "high" {
				t.Errorf("origin %s hop %d (%s) confidence %s, want middlebox hop 2 (%s), high; evidence %v", f.Origin, f.Hop, f.HopAddress, f.Confidence, c.router, f.Evidence)
			}
			if len(rep.Findings) != 1 {
				t.Errorf("findings %+v, want only the reset", rep.Findings)
			}
			t.Logf("reset after %d bytes at hop %d (%s), server hop %d, wall %v", res.Transfer.Bytes, f.Hop, f.HopAddress, res.ServerHop, wall.Round(time.Millisecond))
		})
	}
}

// The server ends a download with a FIN after 1 MiB of the 8 MiB its
// Content-Length announced (GET /truncated: a graceful restart
// mid-response, as the client sees it). No reset, no stall: a
// midstream-close from the server, at the server's hop.
func TestTCPDataTruncatedByServer(t *testing.T) {
	rs := make([]lab.Router, 3)
	l := buildLab(t, lab.Scenario{Name: "midstream-close-server", Routers: rs})
	sent, announced := int64(lab.TruncatedSize(l.Server)), int64(l.Server.WithDefaults().LargeSize)
	for _, target := range []string{fmt.Sprintf("https://%s", l.Server4), fmt.Sprintf("https://[%s]", l.Server6)} {
		t.Run(target, func(t *testing.T) {
			start := time.Now()
			r := runIn(t, l, l.ClientNS, nil, "--format", "json", "tcp", "data", "--path", "/truncated", "--stall", "3s",
				"--ca-file", l.CAFile, "--token-file", l.TokenFile(), target)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1 (findings)\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			rep := decodeJSON[tcpcheck.Report](t, r)
			if len(rep.Results) != 1 || len(rep.Results[0].Connections) != 1 {
				t.Fatalf("want one result with one connection: %s", resultSummary(rep))
			}
			res := rep.Results[0]
			conn := res.Connections[0]
			if conn.Outcome != tcpcheck.OutcomeClosed || conn.Phase != tcpcheck.PhaseRequest || conn.Phases.TLS <= 0 || conn.Phases.FirstByte <= 0 {
				t.Errorf("connection %s in phase %q (%s), phases %+v; want closed in %q after TLS and the first exchange",
					conn.Outcome, conn.Phase, conn.Error, conn.Phases, tcpcheck.PhaseRequest)
			}
			// The decrypted stream: the body sent plus the response headers.
			if tr := res.Transfer; tr == nil || tr.Stalled || tr.Bytes < sent || tr.Bytes > sent+4096 {
				t.Errorf("transfer %+v, want %d..%d bytes, not stalled", tr, sent, sent+4096)
			}
			if res.ServerHop != len(rs)+1 {
				t.Errorf("server hop %d (TTL %d), want %d", res.ServerHop, res.ServerTTL, len(rs)+1)
			}
			if len(conn.Packets) == 0 || !strings.Contains(conn.Packets[0].Flags, "FIN") || strings.Contains(conn.Packets[0].Flags, "RST") ||
				conn.Packets[0].Origin != probe.OriginServer {
				t.Errorf("captured %+v, want a FIN from the server first", conn.Packets)
			}
			if len(rep.Findings) != 1 {
				t.Fatalf("findings %+v, want exactly one midstream-close", rep.Findings)
			}
			f := rep.Findings[0]
			if f.Kind != tcpcheck.KindMidstreamClose || f.Origin != probe.OriginServer || f.Hop != len(rs)+1 || f.HopAddress != "" || f.Confidence != "high" {
				t.Errorf("%s from %s at hop %d (%q), confidence %s; want midstream-close from the server at hop %d, high; evidence %v",
					f.Kind, f.Origin, f.Hop, f.HopAddress, f.Confidence, len(rs)+1, f.Evidence)
			}
			if f.TransferBytes != sent || f.ExpectedBytes != announced {
				t.Errorf("finding says %d of %d bytes, want %d of %d", f.TransferBytes, f.ExpectedBytes, sent, announced)
			}
			if ev := strings.Join(f.Evidence, "; "); !strings.Contains(ev, fmt.Sprintf("after %d of %d bytes", sent, announced)) {
				t.Errorf("evidence %q does not give the byte counts", ev)
			}
			if !strings.Contains(f.Advice, "graceful restart") || !strings.Contains(f.Advice, "retry idempotent") || strings.Contains(f.Advice, "session limits") {
				t.Errorf("advice %q does not fit a server", f.Advice)
			}
			t.Logf("closed after %d of %d body bytes (%d on the stream), FIN TTL %d at hop %d, wall %v",
				f.TransferBytes, f.ExpectedBytes, res.Transfer.Bytes, conn.Packets[0].TTL, f.Hop, time.Since(start).Round(time.Millisecond))
		})
	}
}

// tcp connect learns the server's SYN-ACK TTL for every protocol, with
// packet capture (the SYN-ACK) and without it (IP_MINTTL search): the
// server sits behind 2 routers, at hop 3.
func TestTCPConnectLearnsServerTTL(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "connect-ttl", Routers: make([]lab.Router, 2)})
	drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	for _, target := range []string{fmt.Sprintf("https://%s", l.Server4), fmt.Sprintf("amqps://%s:%d", l.Server4, l.Server.AMQPPort),
		fmt.Sprintf("tcp://%s:%d", l.Server4, l.Server.EchoPort), fmt.Sprintf("amqps://[%s]:%d", l.Server6, l.Server.AMQPPort)} {
		for _, privileged := range []bool{true, false} {
			var prefix []string
			if !privileged {
				prefix = drop
			}
			r := runIn(t, l, l.ClientNS, prefix, "--format", "json", "tcp", "connect", "--count", "2", "--rate", "20", "--insecure", target)
			if r.code != 0 {
				t.Fatalf("%s (privileged %v): exit %d\nstdout:\n%s\nstderr:\n%s", target, privileged, r.code, r.stdout, r.stderr)
			}
			rep := decodeJSON[tcpcheck.Report](t, r)
			if len(rep.Results) != 1 || rep.Results[0].ServerHop != 3 || rep.Results[0].ServerTTL != 62 {
				t.Errorf("%s (privileged %v): %s; want server_ttl 62, server_hop 3", target, privileged, resultSummary(rep))
			}
		}
	}
}
