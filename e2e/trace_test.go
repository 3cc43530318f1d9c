package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/trace"
)

// silentChain is the foundation scenario: 6 routers, routers 2 and 4 send
// no ICMP at all.
func silentChain() lab.Scenario {
	rs := make([]lab.Router, 6)
	rs[1].NoICMP = true
	rs[3].NoICMP = true
	return lab.Scenario{Name: "silent-chain", Routers: rs}
}

// wantPath checks a trace against the lab: hops answered by the right
// router, silent hops silent, destination reached at len(routers)+1.
func wantPath(t *testing.T, tr trace.Trace, routers []netip.Addr, silent map[int]bool, server netip.Addr) {
	t.Helper()
	name := fmt.Sprintf("%s %s", tr.Target.Protocol, tr.Target.Address)
	if tr.Error != "" {
		t.Fatalf("%s: trace error %q", name, tr.Error)
	}
	if !tr.Reached || tr.ReachedTTL != len(routers)+1 {
		t.Fatalf("%s: reached=%v at %d, want reached at hop %d; hops: %s", name, tr.Reached, tr.ReachedTTL, len(routers)+1, hopSummary(tr))
	}
	if len(tr.Hops) != len(routers)+1 {
		t.Fatalf("%s: %d hops, want %d: %s", name, len(tr.Hops), len(routers)+1, hopSummary(tr))
	}
	for i, h := range tr.Hops {
		ttl := i + 1
		if h.TTL != ttl {
			t.Fatalf("%s: hop %d has ttl %d", name, i, h.TTL)
		}
		want := server
		if ttl <= len(routers) {
			want = routers[ttl-1]
		}
		if silent[ttl] {
			if len(h.Responders) != 0 || h.Received != 0 {
				t.Errorf("%s: hop %d should be silent, got %s", name, ttl, hopSummary(tr))
			}
			continue
		}
		if len(h.Responders) != 1 || h.Responders[0].Address != want.String() {
			t.Errorf("%s: hop %d responders %v, want exactly %s", name, ttl, responderAddrs(h), want)
		}
		wantAllAnswered(t, name, h, tr.Queries*tr.Flows)
	}
}

// wantAllAnswered: with the routers' ICMP rate limits a hop may need
// probes retried after a pause (sent > received), but it must end with
// every wanted answer, and its loss must read as rate limiting, never as
// path loss.
func wantAllAnswered(t *testing.T, name string, h trace.Hop, want int) {
	t.Helper()
	if h.Received != want {
		t.Errorf("%s: hop %d received %d of %d, want %d answers", name, h.TTL, h.Received, h.Sent, want)
	}
	if h.Received < h.Sent && h.LossKind != trace.LossRateLimit {
		t.Errorf("%s: hop %d received %d of %d, loss kind %q, want rate-limit; note %q", name, h.TTL, h.Received, h.Sent, h.LossKind, h.Note)
	}
}

func responderAddrs(h trace.Hop) []string {
	var out []string
	for _, r := range h.Responders {
		out = append(out, r.Address)
	}
	return out
}

func hopSummary(tr trace.Trace) string {
	var b strings.Builder
	for _, h := range tr.Hops {
		fmt.Fprintf(&b, "[%d %v %d/%d %s] ", h.TTL, responderAddrs(h), h.Received, h.Sent, h.Note)
	}
	return b.String()
}

func traceJSON(t *testing.T, l *lab.Lab, prefix []string, args ...string) trace.Report {
	t.Helper()
	r := runIn(t, l, l.ClientNS, prefix, append([]string{"--format", "json", "trace", "-n"}, args...)...)
	if r.code != 0 {
		t.Fatalf("hopcheck %v: exit %d\nstderr: %s\nstdout: %s", args, r.code, r.stderr, r.stdout)
	}
	checkTraceSchema(t, r.stdout)
	return decodeJSON[trace.Report](t, r)
}

// checkTraceSchema asserts the JSON keys the schema promises.
func checkTraceSchema(t *testing.T, doc string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if v, ok := m["schema_version"].(float64); !ok || int(v) != trace.SchemaVersion {
		t.Fatalf("schema_version = %v, want %d", m["schema_version"], trace.SchemaVersion)
	}
	traces, _ := m["traces"].([]any)
	if len(traces) == 0 {
		t.Fatalf("no traces[] in %s", doc)
	}
	for _, tr := range traces {
		tm := tr.(map[string]any)
		need(t, tm, "target", "privilege", "reached", "hops")
		need(t, tm["target"].(map[string]any), "host", "address", "port", "protocol")
		for _, h := range tm["hops"].([]any) {
			hm := h.(map[string]any)
			need(t, hm, "ttl", "responders", "sent", "received", "loss_pct", "rtt_ms", "note")
			need(t, hm["rtt_ms"].(map[string]any), "last", "min", "avg", "max", "stdev")
			for _, r := range hm["responders"].([]any) {
				need(t, r.(map[string]any), "address", "hostname", "asn", "mpls")
			}
		}
	}
}

func need(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Fatalf("JSON object lacks %q: %v", k, m)
		}
	}
}

func TestTraceSilentRoutersAllProtocols(t *testing.T) {
	l := buildLab(t, silentChain())
	silent := map[int]bool{2: true, 4: true}
	for _, fam := range []struct {
		name    string
		server  netip.Addr
		routers []netip.Addr
	}{{"ipv4", l.Server4, l.Router4}, {"ipv6", l.Server6, l.Router6}} {
		for _, proto := range []string{"icmp", "udp", "tcp"} {
			t.Run(fam.name+"/"+proto, func(t *testing.T) {
				rep := traceJSON(t, l, nil, "--protocol", proto, netip.AddrPortFrom(fam.server, 443).String())
				if len(rep.Traces) != 1 {
					t.Fatalf("%d traces, want 1", len(rep.Traces))
				}
				tr := rep.Traces[0]
				if tr.Privilege != "raw" {
					t.Errorf("privilege %q, want raw as root", tr.Privilege)
				}
				wantPath(t, tr, fam.routers, silent, fam.server)
			})
		}
	}
}

func TestTraceUnprivileged(t *testing.T) {
	l := buildLab(t, silentChain())
	drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	for _, proto := range []string{"udp", "tcp"} {
		for _, server := range []struct {
			addr    netip.Addr
			routers []netip.Addr
		}{{l.Server4, l.Router4}, {l.Server6, l.Router6}} {
			t.Run(proto+"/"+server.addr.String(), func(t *testing.T) {
				rep := traceJSON(t, l, drop, "--protocol", proto, server.addr.String())
				tr := rep.Traces[0]
				if tr.Privilege != "unprivileged" {
					t.Fatalf("privilege %q, want unprivileged", tr.Privilege)
				}
				wantPath(t, tr, server.routers, map[int]bool{2: true, 4: true}, server.addr)
			})
		}
	}
}

func TestTraceConcurrentRunsDoNotMix(t *testing.T) {
	l := buildLab(t, silentChain())
	var wg sync.WaitGroup
	reps := make([]trace.Report, 2)
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i] = traceJSON(t, l, nil, "--protocol", "udp", "--queries", "5", l.Server4.String())
		}()
	}
	wg.Wait()
	for _, rep := range reps {
		if t.Failed() {
			return
		}
		wantPath(t, rep.Traces[0], l.Router4, map[int]bool{2: true, 4: true}, l.Server4)
	}
}

func TestTraceRateLimitIsNotPathLoss(t *testing.T) {
	rs := make([]lab.Router, 4)
	rs[1].ICMPRateLimit = 1
	l := buildLab(t, lab.Scenario{Name: "ratelimit", Routers: rs})
	rep := traceJSON(t, l, nil, "--protocol", "icmp", "--queries", "10", l.Server4.String())
	tr := rep.Traces[0]
	if !tr.Reached {
		t.Fatalf("not reached: %s", hopSummary(tr))
	}
	h := tr.Hops[1]
	if h.Received >= h.Sent || h.Received == 0 {
		t.Fatalf("hop 2 received %d of %d; the lab's rate limit should drop some but not all", h.Received, h.Sent)
	}
	if h.LossKind != "rate-limit" {
		t.Errorf("hop 2 loss kind %q, want rate-limit; note %q", h.LossKind, h.Note)
	}
	for _, later := range tr.Hops[2:] {
		if later.LossKind == "path-loss" {
			t.Errorf("hop %d labelled path loss: %s", later.TTL, hopSummary(tr))
		}
	}
}

func TestTraceTCPBlockedWhileICMPPasses(t *testing.T) {
	rs := make([]lab.Router, 4)
	rs[2].DropTCPPort = 443
	l := buildLab(t, lab.Scenario{Name: "tcpblock", Routers: rs})
	rep := traceJSON(t, l, nil, "--protocol", "all", "--max-hops", "8", "--timeout", "1s", l.Server4.String()+":443")
	if len(rep.Traces) != 3 {
		t.Fatalf("%d traces, want icmp, udp and tcp", len(rep.Traces))
	}
	for _, tr := range rep.Traces {
		switch tr.Target.Protocol {
		case "icmp", "udp":
			wantPath(t, tr, l.Router4, nil, l.Server4)
		case "tcp":
			if tr.Reached {
				t.Fatalf("tcp trace reached the server through a router that drops tcp/443: %s", hopSummary(tr))
			}
			for _, h := range tr.Hops {
				answered := len(h.Responders) > 0
				if h.TTL <= 3 && (!answered || h.Responders[0].Address != l.Router4[h.TTL-1].String()) {
					t.Errorf("tcp hop %d should be router %s: %s", h.TTL, l.Router4[h.TTL-1], hopSummary(tr))
				}
				if h.TTL > 3 && answered {
					t.Errorf("tcp hop %d answered past the dropping router: %s", h.TTL, hopSummary(tr))
				}
			}
		default:
			t.Errorf("unexpected protocol %q", tr.Target.Protocol)
		}
	}
}

func TestTraceBadInput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "report.json")
	cases := []struct {
		args []string
		want string // the bad value, named in the message
	}{
		{[]string{"trace", "--protocol", "sctp", "127.0.0.1"}, "sctp"},
		{[]string{"trace", "127.0.0.1:0"}, "0"},
		{[]string{"trace", "127.0.0.1:70000"}, "70000"},
		{[]string{"trace", "--max-hops", "0", "127.0.0.1"}, "0"},
		{[]string{"trace", "--max-hops", "300", "127.0.0.1"}, "300"},
		{[]string{"trace"}, "TARGET"},
		{[]string{"trace", "ftp://127.0.0.1"}, "ftp"},
		{[]string{"trace", "--timeout", "soon", "127.0.0.1"}, "soon"},
		{[]string{"--format", "yaml", "trace", "127.0.0.1"}, "yaml"},
		{[]string{"trace", "--format", "yaml", "127.0.0.1"}, "yaml"},
		{[]string{"trace", "--first-hop", "40", "127.0.0.1"}, "40"},
		{[]string{"trace", "--privilege", "root", "127.0.0.1"}, "root"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			args := append([]string{"-o", out}, c.args...)
			r := runLocal(t, dir, args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr should be one line naming %q, got %q", c.want, r.stderr)
			}
			if strings.Contains(r.stderr, "goroutine") || r.stdout != "" {
				t.Fatalf("unexpected output: stdout %q stderr %q", r.stdout, r.stderr)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Fatalf("files left behind: %v", entries)
			}
		})
	}
}

// TestTraceNames: a name is traced to every address it resolves to, and an
// unresolvable name is a usage error naming it. Lookups stay inside the
// lab (see isolateDNS).
func TestTraceNames(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "names", Routers: make([]lab.Router, 2)})
	rep := traceJSON(t, l, nil, "--protocol", "icmp", "https://"+labHost)
	got := map[string]bool{}
	for _, tr := range rep.Traces {
		got[tr.Target.Address] = tr.Reached
		if tr.Target.Host != labHost || tr.Target.Port != 0 {
			t.Errorf("target %+v, want host %s (icmp: port 0)", tr.Target, labHost)
		}
	}
	if len(got) != 2 || !got[l.Server4.String()] || !got[l.Server6.String()] {
		t.Fatalf("traced %v, want both %s and %s reached", got, l.Server4, l.Server6)
	}
	v6 := traceJSON(t, l, nil, "-6", "--protocol", "udp", labHost)
	if len(v6.Traces) != 1 || v6.Traces[0].Target.Address != l.Server6.String() {
		t.Fatalf("-6 traced %+v, want only %s", v6.Traces, l.Server6)
	}

	// -o to a device writes in place: /dev/null stays a device.
	if r := runIn(t, l, l.ClientNS, nil, "-o", os.DevNull, "trace", "-n", "--protocol", "icmp", l.Server4.String()); r.code != 0 {
		t.Fatalf("-o %s: exit %d: %s", os.DevNull, r.code, r.stderr)
	}
	if st, err := os.Stat(os.DevNull); err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Fatalf("%s is no longer a device after -o: %v %v", os.DevNull, st.Mode(), err)
	}

	r := runIn(t, l, l.ClientNS, nil, "trace", "no-such-host.invalid")
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "no-such-host.invalid") {
		t.Fatalf("unresolvable name: exit %d, stderr %q; want exit 2 and one line naming it", r.code, r.stderr)
	}
}

// ecmpChain: 4 routers, router 2 has a twin in parallel; router 1 spreads
// flows over both by their 5-tuple.
func ecmpChain() lab.Scenario {
	return lab.Scenario{Name: "ecmp", Routers: make([]lab.Router, 4), ECMPRouter: 2}
}

// ecmpFamily is one address family of the ECMP lab.
type ecmpFamily struct {
	name      string
	server    netip.Addr
	routers   []netip.Addr
	twin      netip.Addr // answers at hop 2 beside routers[1]
	afterTwin netip.Addr // router 3 on the twin's link (ICMPv6 errors come from it)
	v6        bool
}

func ecmpFamilies(l *lab.Lab) []ecmpFamily {
	return []ecmpFamily{
		{"ipv4", l.Server4, l.Router4, l.Twin4, l.AfterTwin4, false},
		{"ipv6", l.Server6, l.Router6, l.Twin6, l.AfterTwin6, true},
	}
}

// allowed lists the addresses that may answer at ttl of the ECMP lab.
func (f ecmpFamily) allowed(ttl int) []string {
	switch {
	case ttl == 2:
		return []string{f.routers[1].String(), f.twin.String()}
	case ttl == 3 && f.v6:
		return []string{f.routers[2].String(), f.afterTwin.String()}
	case ttl <= len(f.routers):
		return []string{f.routers[ttl-1].String()}
	}
	return []string{f.server.String()}
}

// checkECMPTrace checks a trace of the ECMP lab with flows Paris flows:
// reached at hop 5, only allowed responders, and every flow answered at
// each hop by one responder only (its 5-tuple, and so its path, is the
// same at every TTL), every probe answered. It returns the responders of
// hop 2.
func checkECMPTrace(t *testing.T, tr trace.Trace, f ecmpFamily, flows, queries int) []string {
	t.Helper()
	if tr.Error != "" || !tr.Reached || tr.ReachedTTL != len(f.routers)+1 || len(tr.Hops) != len(f.routers)+1 || tr.Flows != flows {
		t.Fatalf("error %q, reached %v at %d, %d hops, %d flows; want hop %d, %d flows: %s",
			tr.Error, tr.Reached, tr.ReachedTTL, len(tr.Hops), tr.Flows, len(f.routers)+1, flows, hopSummary(tr))
	}
	var atHop2 []string
	viaTwin := map[int]bool{} // flow → answered by the twin at hop 2
	for _, h := range tr.Hops {
		wantAllAnswered(t, "ecmp", h, flows*queries)
		seen := map[int]string{}
		for _, r := range h.Responders {
			if !slices.Contains(f.allowed(h.TTL), r.Address) {
				t.Errorf("hop %d: responder %s, want one of %v", h.TTL, r.Address, f.allowed(h.TTL))
			}
			if r.Received != len(r.Flows)*queries {
				t.Errorf("hop %d: %s answered %d probes of flows %v: a flow's probes went to several responders", h.TTL, r.Address, r.Received, r.Flows)
			}
			for _, fl := range r.Flows {
				if other, dup := seen[fl]; dup {
					t.Errorf("hop %d: flow %d answered by %s and %s: the flow changed paths", h.TTL, fl, other, r.Address)
				}
				seen[fl] = r.Address
			}
			switch {
			case h.TTL == 2:
				atHop2 = append(atHop2, r.Address)
				for _, fl := range r.Flows {
					viaTwin[fl] = r.Address == f.twin.String()
				}
			case h.TTL == 3 && f.v6:
				// Router 3 answers from the link the flow came in on: a
				// flow keeps its path from one TTL to the next.
				for _, fl := range r.Flows {
					if (r.Address == f.afterTwin.String()) != viaTwin[fl] {
						t.Errorf("flow %d: twin at hop 2 %v, but hop 3 answered from %s", fl, viaTwin[fl], r.Address)
					}
				}
			}
		}
		if len(seen) != flows {
			t.Errorf("hop %d: flows %v answered, want all %d", h.TTL, seen, flows)
		}
	}
	return atHop2
}

// TestTraceECMPParisFlows: with 8 Paris flows both routers of the ECMP hop
// answer, each flow always from the same one (the engine keeps a flow's
// 5-tuple constant across TTLs); with one flow every hop has exactly one
// responder. The source ports are random, so all 8 flows hash onto one
// path in 1 run of 128: one rerun is allowed for that alone.
func TestTraceECMPParisFlows(t *testing.T) {
	t.Parallel() // 16 probes per router and trace: mostly waiting for the routers' ICMP budget
	l := buildLab(t, ecmpChain())
	for _, fam := range ecmpFamilies(l) {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(fam.name+"/"+proto, func(t *testing.T) {
				dst := netip.AddrPortFrom(fam.server, 443).String()
				for attempt := 1; ; attempt++ {
					rep := traceJSON(t, l, nil, "--protocol", proto, "--flows", "8", "--queries", "2", dst)
					tr := rep.Traces[0]
					hop2 := checkECMPTrace(t, tr, fam, 8, 2)
					if len(hop2) == 2 {
						if !strings.Contains(tr.Hops[1].Note, "ECMP: 2 responders") {
							t.Errorf("hop 2 note %q", tr.Hops[1].Note)
						}
						t.Logf("8 flows: %s", hopSummary(tr))
						break
					}
					if attempt == 2 || t.Failed() {
						t.Fatalf("hop 2 responders %v in %d runs, want both %s and %s: %s", hop2, attempt, fam.routers[1], fam.twin, hopSummary(tr))
					}
					t.Logf("all 8 flows hashed onto %v; once more", hop2)
				}
				rep := traceJSON(t, l, nil, "--protocol", proto, "--flows", "1", "--queries", "5", dst)
				tr := rep.Traces[0]
				checkECMPTrace(t, tr, fam, 1, 5)
				for _, h := range tr.Hops {
					if len(h.Responders) != 1 {
						t.Errorf("one flow, hop %d: responders %v, want one", h.TTL, responderAddrs(h))
					}
				}
				t.Logf("1 flow: %s", hopSummary(tr))
			})
		}
	}
}

// manyAddressLab: four routers with the kernel's default ICMP rate limits,
// the server with n addresses behind them.
func manyAddressLab(t testing.TB, n int) (*lab.Lab, []netip.Addr) {
	l := buildLab(t, lab.Scenario{Name: "many", Routers: make([]lab.Router, 4), Server: lab.Server{ExtraAddresses: n - 1}})
	return l, append([]netip.Addr{l.Server4}, l.ServerExtra4...)
}

// answeredCells counts the (address, hop) cells with an answer, and the
// cells the path has (every hop up to the server answers in this lab).
func answeredCells(rep trace.Report, hops int) (found, want int) {
	for _, tr := range rep.Traces {
		want += hops
		for _, h := range tr.Hops {
			if h.TTL <= hops && h.Received > 0 {
				found++
			}
		}
	}
	return found, want
}

// TestTraceManyAddressesShareHops: 48 addresses of one server behind the
// same rate-limiting routers; the routers are probed once for the group
// (Doubletree), each address only at its own hop, and every report lists
// every hop. (Wall time is a benchmark: BenchmarkLabTraceManyAddresses.)
func TestTraceManyAddressesShareHops(t *testing.T) {
	l, addrs := manyAddressLab(t, 48)
	args := []string{"--protocol", "tcp"}
	for _, a := range addrs {
		args = append(args, netip.AddrPortFrom(a, 443).String())
	}
	rep := traceJSON(t, l, nil, args...)
	if len(rep.Traces) != len(addrs) {
		t.Fatalf("%d traces, want %d", len(rep.Traces), len(addrs))
	}
	found, want := answeredCells(rep, 5)
	t.Logf("%d of %d cells in %.2f s", found, want, rep.DurationS)
	if found*100 < want*95 {
		t.Errorf("%d of %d (address, hop) cells answered, want at least 95 %%", found, want)
	}
	shared := 0
	for _, tr := range rep.Traces {
		if !tr.Reached || tr.ReachedTTL != 5 {
			t.Errorf("%s: reached %v at %d, want hop 5: %s", tr.Target.Address, tr.Reached, tr.ReachedTTL, hopSummary(tr))
		}
		if tr.SharedWith != "" {
			shared++
			if tr.SharedHops != 4 {
				t.Errorf("%s: %d shared hops, want 4", tr.Target.Address, tr.SharedHops)
			}
		}
	}
	if shared < len(addrs)-3 {
		t.Errorf("%d traces took the group's hops, want nearly all %d", shared, len(addrs))
	}
}
