package localise

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// The probes over a scripted path (fakePath): no root, no sockets.

func TestProbeRewritesOverFakePath(t *testing.T) {
	clampAt2 := routers(4)
	clampAt2[1].clampMSS = 1200
	silentAfterClamp := routers(4)
	silentAfterClamp[1].clampMSS = 1200
	silentAfterClamp[2].addr = netip.Addr{}
	limited := routers(4)
	limited[1].clampMSS = 1200
	limited[2].tokens = tokens(0) // its burst spent by a trace just before
	for _, c := range []struct {
		name     string
		hops     []fakeHop
		attempts int
		sendErr  error
		status   tri.State
		changes  map[int]string // hop → its rewrites
		upTo     map[int]int
		rows     int
		err      string
	}{
		{"clean path", routers(3), 2, nil, tri.No, map[int]string{}, nil, 4, ""},
		{"mss clamped at hop 2", clampAt2, 2, nil, tri.Yes, map[int]string{2: "[mss 1460→1200]"}, nil, 5, ""},
		{"silent hop 3 after the clamp: hop 2-3", silentAfterClamp, 2, nil, tri.Yes, map[int]string{2: "[mss 1460→1200]"}, map[int]int{2: 3}, 5, ""},
		{"rate-limited hop 3 answers the retry: hop 2 exactly", limited, 2, nil, tri.Yes, map[int]string{2: "[mss 1460→1200]"}, map[int]int{2: 2}, 5, ""},
		{"rate-limited hop 3 without a retry: hop 2-3", limited, 1, nil, tri.Yes, map[int]string{2: "[mss 1460→1200]"}, map[int]int{2: 3}, 5, ""},
		{"send fails", routers(2), 2, errSend, "", nil, nil, 0, "network is unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakePath(clone(c.hops)...)
			f.sendErr = c.sendErr
			hops, err := ProbeRewrites(context.Background(), f, netip.AddrPortFrom(client4, 40000), netip.AddrPortFrom(server4, 443), 8, f.options(c.attempts))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(hops) != c.rows || hops[len(hops)-1].Answer != AnswerDestination || hops[len(hops)-1].Address != server4.String() {
				t.Fatalf("%d rows %+v, want %d ending at the server", len(hops), hops, c.rows)
			}
			if got := RewritesFound(hops); got != c.status {
				t.Errorf("status %s, want %s", got, c.status)
			}
			for _, h := range hops {
				if got := listText(h.Changes); got != c.changes[h.Hop] {
					t.Errorf("hop %d: rewrites %s, want %q", h.Hop, got, c.changes[h.Hop])
				}
				if up, ok := c.upTo[h.Hop]; ok && h.HopUpTo != up {
					t.Errorf("hop %d: up to %d, want %d", h.Hop, h.HopUpTo, up)
				}
			}
		})
	}
	f := newFakePath(routers(2)...)
	if _, err := ProbeRewrites(context.Background(), f, netip.AddrPortFrom(client4, 40000), netip.AddrPortFrom(server4, 443), 0, f.options(2)); err == nil {
		t.Error("max TTL 0 accepted")
	}
	if _, err := ProbeRewrites(context.Background(), f, netip.AddrPortFrom(client6, 40000), netip.AddrPortFrom(server4, 443), 8, f.options(2)); err == nil {
		t.Error("a source of another family accepted")
	}
}

func clone(hs []fakeHop) []fakeHop {
	out := make([]fakeHop, len(hs))
	copy(out, hs)
	for i := range out {
		if out[i].tokens != nil {
			out[i].tokens = tokens(*out[i].tokens)
		}
	}
	return out
}

func TestProbePMTUOverFakePath(t *testing.T) {
	withLink := func(hop, mtu int, frag bool, limitedHop int) []fakeHop {
		hs := routers(4)
		hs[hop-1].linkMTU, hs[hop-1].fragMTU = mtu, frag
		if limitedHop > 0 {
			hs[limitedHop-1].tokens = tokens(0)
		}
		return hs
	}
	for _, c := range []struct {
		name      string
		hops      []fakeHop
		proto     probe.Protocol
		attempts  int
		sendErr   error
		verdict   PMTUVerdict
		status    tri.State
		mtu       int
		blackhole tri.State
		bhHop     int
		bhUpTo    int
		fragHop   int
		err       string
	}{
		{"no bottleneck", routers(4), probe.TCP, 2, nil, PMTUNoBottleneck, tri.No, 1500, tri.No, 0, 0, 0, ""},
		{"frag-needed from hop 2", withLink(2, 1400, true, 0), probe.TCP, 2, nil, PMTUAnnounced, tri.Yes, 1400, tri.No, 0, 0, 2, ""},
		{"black hole behind hop 3", withLink(3, 1280, false, 0), probe.TCP, 2, nil, PMTUBlackhole, tri.Yes, 1280, tri.Yes, 3, 3, 0, ""},
		{"black hole, echo probes", withLink(3, 1280, false, 0), probe.ICMP, 2, nil, PMTUBlackhole, tri.Yes, 1280, tri.Yes, 3, 3, 0, ""},
		{"black hole behind a rate-limited hop 3: the retry places it", withLink(3, 1280, false, 3), probe.TCP, 2, nil, PMTUBlackhole, tri.Yes, 1280, tri.Yes, 3, 3, 0, ""},
		{"black hole behind a rate-limited hop 3 without a retry: misplaced", withLink(3, 1280, false, 3), probe.TCP, 1, nil, PMTUBlackhole, tri.Yes, 1280, tri.Yes, 2, 3, 0, ""},
		{"send fails", routers(2), probe.TCP, 2, errSend, PMTUUndetermined, tri.NotTested, 0, tri.NotTested, 0, 0, 0, "network is unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakePath(clone(c.hops)...)
			f.icmp, f.sendErr = c.proto == probe.ICMP, c.sendErr
			opt := PMTUOptions{Protocol: c.proto, Port: 443, MaxTTL: 8, Attempts: c.attempts, Sleep: f.sleep, Timeout: 1}
			r, err := ProbePMTU(context.Background(), f, netip.AddrPortFrom(client4, 40000), 1500, server4, opt)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(r.Error, c.err) {
					t.Fatalf("err %v (result error %q), want %q", err, r.Error, c.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != c.verdict || r.Status != c.status || r.MTU != c.mtu || r.Blackhole != c.blackhole ||
				r.BlackholeHop != c.bhHop || r.BlackholeHopUpTo != c.bhUpTo || r.FragNeededHop != c.fragHop {
				t.Errorf("%s %s mtu %d black hole %s hop %d-%d frag-needed hop %d (%s); want %s %s mtu %d black hole %s hop %d-%d frag-needed hop %d",
					r.Verdict, r.Status, r.MTU, r.Blackhole, r.BlackholeHop, r.BlackholeHopUpTo, r.FragNeededHop, r.Reason,
					c.verdict, c.status, c.mtu, c.blackhole, c.bhHop, c.bhUpTo, c.fragHop)
			}
			if c.bhHop > 0 && r.BlackholeHopAddress != fakeRouter(c.bhHop).String() {
				t.Errorf("black hole address %s, want %s", r.BlackholeHopAddress, fakeRouter(c.bhHop))
			}
			if c.fragHop > 0 && (!r.FragNeededSeen || r.FragNeededHopAddress != fakeRouter(c.fragHop).String()) {
				t.Errorf("frag-needed seen %v from %s, want from %s", r.FragNeededSeen, r.FragNeededHopAddress, fakeRouter(c.fragHop))
			}
		})
	}
	t.Run("destination silent", func(t *testing.T) {
		f := newFakePath(routers(2)...)
		f.dst = netip.MustParseAddr("198.18.9.9") // the probes go to server4, which is not where the path ends
		r, err := ProbePMTU(context.Background(), f, netip.AddrPortFrom(client4, 40000), 1500, server4, PMTUOptions{Protocol: probe.TCP, Sleep: f.sleep, Timeout: 1})
		if err != nil || r.Verdict != PMTUUndetermined || r.Status != tri.NotTested || r.Error != "" || r.MTU != 0 {
			t.Errorf("%+v %v; want undetermined, not tested, no error", r, err)
		}
	})
}

func TestProbeInFlowOverFakePath(t *testing.T) {
	flow := FlowState{Local: netip.AddrPortFrom(client4, 40000), Remote: netip.AddrPortFrom(server4, 443), Seq: 1000, Ack: 5000}
	with := func(hop int, f func(*fakeHop)) []fakeHop {
		hs := routers(4)
		f(&hs[hop-1])
		return hs
	}
	for _, c := range []struct {
		name             string
		healthy, expired []fakeHop
		attempts         int
		behaviour        LossBehaviour
		status           tri.State
		hop, upTo        int
		last             InFlowKind
	}{
		{"flow alive", routers(4), routers(4), 2, LossNone, tri.No, 0, 0, InFlowACK},
		{"reset behind hop 3", routers(4), with(3, func(h *fakeHop) { h.resetFlow = true }), 2, LossReset, tri.Yes, 3, 3, InFlowRST},
		{"drop behind hop 2", routers(4), with(2, func(h *fakeHop) { h.dropFlow = true }), 2, LossDrop, tri.Yes, 2, 2, InFlowNone},
		{"drop behind hop 2, hop 2 rate-limited, asked again", routers(4),
			with(2, func(h *fakeHop) { h.dropFlow, h.tokens = true, tokens(0) }), 2, LossDrop, tri.Yes, 2, 2, InFlowNone},
		{"drop behind hop 2, hop 2 rate-limited, no retry: the wrong hop", routers(4),
			with(2, func(h *fakeHop) { h.dropFlow, h.tokens = true, tokens(0) }), 1, LossDrop, tri.Yes, 1, 1, InFlowNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := func(hops []fakeHop) []InFlowAnswer {
				f := newFakePath(clone(hops)...)
				as, err := ProbeInFlow(context.Background(), f, flow, 8, f.options(c.attempts))
				if err != nil {
					t.Fatal(err)
				}
				return as
			}
			healthy, expired := run(c.healthy), run(c.expired)
			if len(healthy) != 5 || healthy[4].Kind != InFlowACK || healthy[4].SenderHop != 5 {
				t.Fatalf("healthy run %+v, want 4 routers and the server's ACK from hop 5", healthy)
			}
			in := NewInFlow("f", healthy, expired)
			if LossBehaviour(in.Behaviour) != c.behaviour || in.Status != c.status || in.Hop != c.hop || in.HopUpTo != c.upTo {
				t.Errorf("%s %s hop %d-%d (%s), want %s %s hop %d-%d", in.Behaviour, in.Status, in.Hop, in.HopUpTo, in.Reason, c.behaviour, c.status, c.hop, c.upTo)
			}
			if c.hop > 0 && in.HopAddress != fakeRouter(c.hop).String() {
				t.Errorf("hop address %q, want %s", in.HopAddress, fakeRouter(c.hop))
			}
			if got := expired[len(expired)-1].Kind; got != c.last {
				t.Errorf("expired run ends with %s, want %s", got, c.last)
			}
		})
	}
	t.Run("v6", func(t *testing.T) {
		f := newFakePath(routers(2)...)
		f.src, f.dst = client6, server6
		flow6 := FlowState{Local: netip.AddrPortFrom(client6, 40000), Remote: netip.AddrPortFrom(server6, 443), Seq: 1000, Ack: 5000}
		as, err := ProbeInFlow(context.Background(), f, flow6, 8, f.options(2))
		if err != nil || len(as) != 3 || as[0].Kind != InFlowTimeExceeded || as[1].From != fakeRouter(2).String() || as[2].Kind != InFlowACK {
			t.Errorf("%+v %v, want 2 routers and the server's ACK", as, err)
		}
	})
	t.Run("stops after silent TTLs in a row", func(t *testing.T) {
		hs := routers(8)
		hs[1].dropFlow = true
		f := newFakePath(hs...)
		opt := f.options(2)
		opt.MaxSilentTTLs = 3
		as, err := ProbeInFlow(context.Background(), f, flow, 30, opt)
		if err != nil || len(as) != 5 || as[1].Kind != InFlowTimeExceeded || as[4].Kind != InFlowNone {
			t.Errorf("%+v %v, want 2 routers then 3 silent TTLs", as, err)
		}
	})
	t.Run("send fails", func(t *testing.T) {
		f := newFakePath(routers(2)...)
		f.sendErr = errSend
		if _, err := ProbeInFlow(context.Background(), f, flow, 8, f.options(2)); !errors.Is(err, errSend) {
			t.Errorf("err %v, want the send error", err)
		}
	})
	t.Run("bad flow", func(t *testing.T) {
		f := newFakePath(routers(2)...)
		if _, err := ProbeInFlow(context.Background(), f, FlowState{Local: flow.Local}, 8, f.options(2)); err == nil {
			t.Error("a flow without a remote end accepted")
		}
	})
}

// TestInFlowRecords: the records diagnose keeps of a confirmation that
// ran, found nothing usable, was not run, or failed.
func TestInFlowRecords(t *testing.T) {
	undetermined := NewInFlow("f", nil, nil)
	skipped := InFlowSkipped("beyond --in-flow-max")
	failed := InFlowFailed("f", "healthy probes: x", errSend)
	for _, c := range []struct {
		name      string
		in        InFlow
		behaviour string
		status    tri.State
		err       string
	}{
		{"no runs to compare", undetermined, string(LossUndetermined), tri.NotTested, ""},
		{"not run", skipped, InFlowNotTested, tri.NotTested, ""},
		{"failed", failed, string(LossUndetermined), tri.NotTested, errSend.Error()},
	} {
		if c.in.Behaviour != c.behaviour || c.in.Status != c.status || c.in.Error != c.err || c.in.Reason == "" {
			t.Errorf("%s: %+v, want %s %s error %q with a reason", c.name, c.in, c.behaviour, c.status, c.err)
		}
	}
}

func TestProbeNATOverFakePath(t *testing.T) {
	sent := netip.AddrPortFrom(client4, 40000)
	for _, c := range []struct {
		name       string
		seen       netip.AddrPort
		hops       []fakeHop
		translated tri.State
		hop        int
	}{
		{"not translated", sent, routers(3), tri.No, 0},
		{"masquerading hop 2", netip.AddrPortFrom(fakeRouter(2), 1024), routers(3), tri.Yes, 2},
		{"hop 2 rate-limited toward the server: asked again", netip.AddrPortFrom(fakeRouter(2), 1024),
			func() []fakeHop { hs := routers(3); hs[1].tokens = tokens(0); return hs }(), tri.Yes, 2},
		{"translated address does not answer", netip.AddrPortFrom(netip.MustParseAddr("198.18.7.7"), 1024), routers(3), tri.Yes, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakePath(clone(c.hops)...)
			f.icmp = true
			n, err := ProbeNAT(context.Background(), f, client4, sent, c.seen, server4, 8, f.options(2))
			if err != nil || n.Translated != c.translated || n.Status != c.translated || n.Hop != c.hop {
				t.Fatalf("%+v %v, want translated %s at hop %d", n, err, c.translated, c.hop)
			}
			if c.hop > 0 && n.HopAddress != fakeRouter(c.hop).String() {
				t.Errorf("hop address %s, want %s", n.HopAddress, fakeRouter(c.hop))
			}
		})
	}
	failed := NATFailed(errSend)
	if failed.Status != tri.NotTested || failed.Error == "" || !strings.Contains(failed.Evidence, "no server view") {
		t.Errorf("failed server view: %+v", failed)
	}
}
