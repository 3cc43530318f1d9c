package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Attribution on paths where a TTL count is wrong (issue 10): return paths
// longer than the way there, boxes whose packets start at 128 or 255, a box
// that forges the server's TTL, a box that sends no ICMP. Router 3 of 5
// resets flows idle for attribIdle; the idle timeouts are short and the
// tests parallel: they mostly wait.

const attribIdle = 5 * time.Second

// attribLab builds 5 routers, router 3 resetting idle flows, with extra
// knobs set by knobs.
func attribLab(t *testing.T, name string, knobs func(rs []lab.Router)) *lab.Lab {
	t.Helper()
	rs := make([]lab.Router, 5)
	rs[2].IdleTimeout, rs[2].IdleAction = attribIdle, lab.IdleActionReset
	knobs(rs)
	return buildLab(t, lab.Scenario{Name: name, Routers: rs})
}

// runFamily runs `hopcheck run` over one family (-4 or -6), quick profile.
func runFamily(t *testing.T, l *lab.Lab, family string) diagnose.Report {
	t.Helper()
	r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", family, "--profile", "quick",
		"--target", "https://"+labHost, "--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--idle-max", "15s")
	if r.code != 0 && r.code != 1 {
		t.Fatalf("hopcheck run %s: exit %d\nstderr: %s", family, r.code, r.stderr)
	}
	return decodeJSON[diagnose.Report](t, r)
}

// tcpIdleAt runs `hopcheck tcp idle` against the server's address.
func tcpIdleAt(t *testing.T, l *lab.Lab, server netip.Addr) tcpcheck.Finding {
	t.Helper()
	rep, _ := tcpJSON(t, l, "idle", "--idle-max", "15s", "--no-verify", "--ca-file", l.CAFile, "--token-file", l.TokenFile(),
		"https://"+netip.AddrPortFrom(server, 443).String())
	return oneFinding(t, rep, tcpcheck.KindIdleReset)
}

// culpritAddrs are the addresses router 3 may answer from: its usual one,
// and its detour link's for IPv4 when it sends back through a detour.
func culpritAddrs(l *lab.Lab, v6 bool) []string {
	d4, d6 := l.DetourSource()
	if v6 {
		out := []string{l.Router6[2].String()}
		if d6.IsValid() {
			out = append(out, d6.String())
		}
		return out
	}
	out := []string{l.Router4[2].String()}
	if d4.IsValid() {
		out = append(out, d4.String())
	}
	return out
}

// checkCulprit wants hop 3, a middlebox, decided, at one of addrs.
func checkCulprit(t *testing.T, what string, hop int, addr string, origin probe.Origin, cands []int, evidence []string, addrs []string) {
	t.Helper()
	t.Logf("%s: hop %d (%s) origin %s candidates %v; evidence:\n  %s", what, hop, addr, origin, cands, strings.Join(evidence, "\n  "))
	if hop != 3 || origin != probe.OriginMiddlebox || len(cands) > 1 || !slices.Contains(addrs, addr) {
		t.Errorf("%s: hop %d (%s) origin %s candidates %v; want hop 3 (%v), middlebox, decided. Evidence:\n%s",
			what, hop, addr, origin, cands, addrs, strings.Join(evidence, "\n"))
	}
}

// Return detours of one and two extra routers, before the culprit (router
// 2 or 3 sends back through them: router 3's RSTs arrive as if from hop 4
// or 5) and after it (only the server's and later hops' answers are
// shifted). Each lab runs `run` over one family and `tcp idle` over the
// other, swapped between labs, so that every detour is checked with both
// commands and, across the four, both families with each.
func TestAttribReturnDetours(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		router    int // the router with the detour (1-based)
		extra     int
		runFamily string // run over this family, tcp idle over the other
	}{
		{"detour-1-before", 2, 1, "-4"},
		{"detour-2-at", 3, 2, "-6"},
		{"detour-1-after", 4, 1, "-6"},
		{"detour-2-after", 4, 2, "-4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := attribLab(t, "attrib-"+tc.name, func(rs []lab.Router) { rs[tc.router-1].ReturnDetour = tc.extra })
			runV6 := tc.runFamily == "-6"
			done := make(chan struct{})
			var idleObs []string
			go func() {
				defer close(done)
				idleServer := l.Server6
				if runV6 {
					idleServer = l.Server4
				}
				f := tcpIdleAt(t, l, idleServer)
				checkCulprit(t, "tcp idle "+idleServer.String(), f.Hop, f.HopAddress, f.Origin, f.HopCandidates, f.Evidence, culpritAddrs(l, !runV6))
				if tc.router <= 3 && !slices.Contains(f.Observations, "asymmetric-return") {
					t.Errorf("tcp idle: observations %v lack asymmetric-return", f.Observations)
				}
				idleObs = f.Observations
			}()
			defer func() { <-done }() // also when run fails: t must outlive the goroutine
			rep := runFamily(t, l, tc.runFamily)
			f := findKind(rep, "idle-reset")
			if f == nil {
				t.Fatalf("run %s: no idle-reset finding: %v", tc.runFamily, kindsOf(rep))
			}
			checkCulprit(t, "run "+tc.runFamily, f.Hop, f.HopAddress, f.Origin, f.HopCandidates, f.Evidence, culpritAddrs(l, runV6))
			if rep.Targets[0].CulpritHop != 3 {
				t.Errorf("run %s: culprit hop %d, want 3", tc.runFamily, rep.Targets[0].CulpritHop)
			}
			<-done
			// The box rejects the request itself: nothing of the server
			// follows its RST in the connection's capture. (The capture's
			// packet history is read by another goroutine than the RST: now
			// and then the snapshot lacks the RST and the answer is "not
			// tested", so one of the two commands must say it.)
			if !slices.Contains(f.Observations, "in-path-blocking") && !slices.Contains(idleObs, "in-path-blocking") {
				t.Errorf("run %s observations %v, tcp idle's %v: neither says in-path-blocking", tc.runFamily, f.Observations, idleObs)
			}
			if slices.Contains(f.Observations, "on-path-injection") || slices.Contains(idleObs, "on-path-injection") {
				t.Errorf("run %s observations %v, tcp idle's %v: an in-path box called on-path", tc.runFamily, f.Observations, idleObs)
			}
			// The in-flow record itself makes the same k / k+1 choice.
			if loc := rep.Targets[0].Localisation; loc == nil || loc.InFlow == nil || loc.InFlow.Hop != 3 || loc.InFlow.HopUpTo > 3 {
				t.Errorf("run %s: in-flow record %+v, want hop 3 exactly", tc.runFamily, loc)
			}
			checkAsymmColumn(t, rep, tc.router, tc.extra)
		})
	}
}

// checkAsymmColumn: the hop table shows the detour from its router on.
func checkAsymmColumn(t *testing.T, rep diagnose.Report, router, extra int) {
	t.Helper()
	for _, tr := range rep.Targets[0].Traces {
		if tr.Target.Protocol != "icmp" {
			continue
		}
		for _, h := range tr.Hops {
			if h.Received == 0 || h.ReturnHops == 0 {
				continue
			}
			want := 0
			if h.TTL >= router {
				want = extra
			}
			if h.Asymm != want {
				t.Errorf("icmp trace hop %d: asymm %d (return hops %d), want %d", h.TTL, h.Asymm, h.ReturnHops, want)
			}
		}
	}
}

// Boxes whose own packets start at TTL 255 and 128: their time-exceeded
// answers and RSTs arrive from that start; the culprit is still hop 3.
func TestAttribInitialTTLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		initial int
		run     bool // run -4, else tcp idle over IPv6
	}{{255, true}, {128, false}} {
		t.Run(fmt.Sprint(tc.initial), func(t *testing.T) {
			t.Parallel()
			l := attribLab(t, fmt.Sprintf("attrib-ttl%d", tc.initial), func(rs []lab.Router) { rs[2].InitialTTL = tc.initial })
			if tc.run {
				rep := runFamily(t, l, "-4")
				f := findKind(rep, "idle-reset")
				if f == nil {
					t.Fatalf("no idle-reset finding: %v", kindsOf(rep))
				}
				checkCulprit(t, "run -4", f.Hop, f.HopAddress, f.Origin, f.HopCandidates, f.Evidence, culpritAddrs(l, false))
				return
			}
			f := tcpIdleAt(t, l, l.Server6)
			checkCulprit(t, "tcp idle v6", f.Hop, f.HopAddress, f.Origin, f.HopCandidates, f.Evidence, culpritAddrs(l, true))
		})
	}
}

// A box that forges the server's TTL on its RSTs: the in-flow probes still
// place it (hop 3 first, hop 4 the other candidate: a forged TTL tells
// nothing of the k / k+1 choice) and the finding says the TTL was forged.
// A box that sends no ICMP at all: both candidates, confidence not high.
func TestAttribForgedAndSilentBoxes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		knob func(r *lab.Router)
		obs  string
	}{
		{"forged", func(r *lab.Router) { r.ForgeServerTTL = true }, "forged-ttl"},
		{"no-icmp", func(r *lab.Router) { r.NoICMP = true }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := attribLab(t, "attrib-"+tc.name, func(rs []lab.Router) { tc.knob(&rs[2]) })
			rep := runFamily(t, l, "-4")
			f := findKind(rep, "idle-reset")
			if f == nil {
				t.Fatalf("no idle-reset finding: %v", kindsOf(rep))
			}
			ev := strings.Join(f.Evidence, "\n")
			t.Logf("hop %d candidates %v confidence %s observations %v; evidence:\n%s", f.Hop, f.HopCandidates, f.Confidence, f.Observations, ev)
			if f.Hop != 3 || f.Origin != probe.OriginMiddlebox || !slices.Equal(f.HopCandidates, []int{3, 4}) || f.Confidence == "high" {
				t.Errorf("hop %d origin %s candidates %v confidence %s; want hop 3 of [3 4], middlebox, not high. Evidence:\n%s",
					f.Hop, f.Origin, f.HopCandidates, f.Confidence, ev)
			}
			if tc.obs != "" && (!slices.Contains(f.Observations, tc.obs) || !strings.Contains(ev, "forged")) {
				t.Errorf("observations %v, evidence without %q:\n%s", f.Observations, tc.obs, ev)
			}
			if tc.obs == "" && !strings.Contains(ev, "falling back to the forward bracket") {
				t.Errorf("the evidence does not say it fell back to the in-flow bracket:\n%s", ev)
			}
		})
	}
}
