package e2e

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/trace"
)

// Issue 9: routers keep the kernel's default ICMP rate limits (a burst of
// about 6, then 1/s per client). Each test starts from a rested path (a new
// lab) unless it says otherwise.

// everyHopAnswers checks a trace that should list every router and reach
// the server right after them, with no hop beyond and no rewrite note.
func everyHopAnswers(t *testing.T, tr trace.Trace, routers []netip.Addr, server netip.Addr) {
	t.Helper()
	name := tr.Target.Protocol + " " + tr.Target.Address
	if tr.Error != "" || !tr.Reached || tr.ReachedTTL != len(routers)+1 || len(tr.Hops) != len(routers)+1 {
		t.Errorf("%s: error %q, reached %v at %d, %d hops; want reached at %d: %s", name, tr.Error, tr.Reached, tr.ReachedTTL, len(tr.Hops), len(routers)+1, hopSummary(tr))
		return
	}
	for i, h := range tr.Hops {
		want := server
		if i < len(routers) {
			want = routers[i]
		}
		if h.Received == 0 || len(h.Responders) != 1 || h.Responders[0].Address != want.String() {
			t.Errorf("%s: hop %d answered by %v (%d of %d), want %s: %s", name, h.TTL, responderAddrs(h), h.Received, h.Sent, want, hopSummary(tr))
		}
		if h.LossKind == trace.LossPath {
			t.Errorf("%s: hop %d reads as path loss on a lossless path: %s", name, h.TTL, h.Note)
		}
		if strings.Contains(h.Note, "rewritten") {
			t.Errorf("%s: hop %d note %q: nothing rewrites TTLs here", name, h.TTL, h.Note)
		}
	}
}

// TestTraceAllProtocolsWithDefaultLimits: `trace -P all` from a rested path
// lists every hop in all three protocols, IPv4 and IPv6 (the issue saw a
// whole protocol column of '*').
func TestTraceAllProtocolsWithDefaultLimits(t *testing.T) {
	t.Parallel() // paced by the routers' budget: mostly waiting
	l := buildLab(t, lab.Scenario{Name: "pall", Routers: make([]lab.Router, 5)})
	for _, fam := range []struct {
		server  netip.Addr
		routers []netip.Addr
	}{{l.Server4, l.Router4}, {l.Server6, l.Router6}} {
		rep := traceJSON(t, l, nil, "--protocol", "all", netip.AddrPortFrom(fam.server, 443).String())
		if len(rep.Traces) != 3 {
			t.Fatalf("%d traces, want 3", len(rep.Traces))
		}
		for _, tr := range rep.Traces {
			everyHopAnswers(t, tr, fam.routers, fam.server)
		}
		t.Logf("%s: %.1f s", fam.server, rep.DurationS)
	}
}

// TestTraceRouterClasses: a router limited by nft to 2 answers a second
// (burst 3) and one that answers only every 3rd probe; every hop is still
// listed, and their missing answers read as rate limiting, not path loss.
// One protocol after the other, without rest: the every-3rd router's count
// is shared by all protocols, so that -P all could leave one protocol with
// only unlucky slots (up to the retries).
func TestTraceRouterClasses(t *testing.T) {
	t.Parallel()
	rs := make([]lab.Router, 4)
	rs[1].ICMPRateLimit, rs[1].ICMPBurst = 2, 3
	rs[2].ICMPEveryNth = 3
	l := buildLab(t, lab.Scenario{Name: "classes", Routers: rs})
	var traces []trace.Trace
	for _, proto := range []string{"icmp", "udp", "tcp"} {
		traces = append(traces, traceJSON(t, l, nil, "--protocol", proto, l.Server4.String()+":443").Traces...)
	}
	sawLimit := false
	for _, tr := range traces {
		everyHopAnswers(t, tr, l.Router4, l.Server4)
		if len(tr.Hops) > 2 && tr.Hops[2].Received < tr.Hops[2].Sent {
			sawLimit = true
			if tr.Hops[2].LossKind != trace.LossRateLimit {
				t.Errorf("%s hop 3 (every 3rd): %d of %d, loss kind %q, want rate-limit", tr.Target.Protocol, tr.Hops[2].Received, tr.Hops[2].Sent, tr.Hops[2].LossKind)
			}
		}
	}
	if !sawLimit {
		t.Error("the every-3rd router answered every probe: the knob does nothing")
	}
}

// TestRunHTTPSAndAMQPSTraces: `hopcheck run` with an https:// and an
// amqps:// target on the same server: every trace of every target lists
// every hop, none beyond the destination, no 'TTL rewritten' (the issue saw
// 4 of 6 traces without intermediate hops and a UDP trace 'reached at hop
// 22').
func TestRunHTTPSAndAMQPSTraces(t *testing.T) {
	t.Parallel()
	l := buildLab(t, lab.Scenario{Name: "run-traces", Routers: make([]lab.Router, 6)})
	r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", "-4", "--profile", "quick", "--idle-max", "1s",
		"--in-flow-max", "0", "--target", "https://"+labHost, "--target", "amqps://"+labHost+":5671",
		"--ca-file", l.CAFile, "--token-file", l.TokenFile())
	if r.code != 0 && r.code != 1 {
		t.Fatalf("hopcheck run: exit %d\nstderr: %s", r.code, r.stderr)
	}
	rep := decodeJSON[diagnose.Report](t, r)
	if len(rep.Targets) != 2 {
		t.Fatalf("%d targets, want 2", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if len(tg.Traces) != 3 {
			t.Errorf("%s: %d traces, want 3", tg.Target, len(tg.Traces))
		}
		for _, tr := range tg.Traces {
			everyHopAnswers(t, tr, l.Router4, l.Server4)
		}
	}
}
