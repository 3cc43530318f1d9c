package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// smallLinkRouters is the path of the PMTU tests: the link between
// routers 2 and 3 has an MTU of 1400, and with hide router 3 drops the
// frag-needed (packet-too-big) it owes the server.
func smallLinkRouters(hide bool) []lab.Router {
	rs := make([]lab.Router, 3)
	rs[1].LinkMTU, rs[2].HideFragNeeded = 1400, hide
	return rs
}

// bracketHolds reports whether an MTU bracket [lo, hi] holds mtu.
func bracketHolds(bracket []int, mtu int) bool {
	return len(bracket) == 2 && bracket[0] <= mtu && bracket[1] >= mtu
}

// holesTowardClient are a run report's pmtu-blackhole findings toward the
// client.
func holesTowardClient(rep diagnose.Report) []*diagnose.Finding {
	var out []*diagnose.Finding
	for i := range rep.Findings {
		if rep.Findings[i].Kind == tcpcheck.KindPMTUBlackhole && rep.Findings[i].Direction == "toward-client" {
			out = append(out, &rep.Findings[i])
		}
	}
	return out
}

// The link between routers 2 and 3 has an MTU of 1400 and router 3 drops
// the frag-needed it owes the server: the server's full-size segments
// toward the client die, and its TLS flight (a public-CA-sized chain,
// more than one segment) never arrives. The Java profile's connections
// all hang; the Go profile's first one does (its 1.5 KB hello teaches the
// client's kernel the path MTU from router 2, which does answer, so later
// connections advertise a smaller MSS and pass: the issue's "1 of N timed
// out, origin unknown"). Either way a connection with a clamped MSS
// completes: a pmtu-blackhole toward the client, its MTU bracket holding
// 1400. With the frag-needed let through there is no finding.
func TestTCPPMTUBlackholeTowardClient(t *testing.T) {
	t.Parallel() // mostly waiting for stalled handshakes
	for _, tc := range []struct {
		profile string
		hide    bool
	}{
		{"java", true},
		{"go", true},
		{"java", false},
	} {
		name := tc.profile + map[bool]string{true: "/frag-needed hidden", false: "/frag-needed allowed"}[tc.hide]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "pmtu-client-" + tc.profile, Routers: smallLinkRouters(tc.hide)})
			rep, wall := tcpJSON(t, l, "connect", "--count", "4", "--rate", "5", "--tls-profile", tc.profile,
				"--ca-file", l.CAFile, "--token-file", l.TokenFile(), fmt.Sprintf("https://%s", l.Server4))
			if !tc.hide {
				if len(rep.Findings) != 0 {
					t.Fatalf("findings %+v with frag-needed allowed; %s", rep.Findings, resultSummary(rep))
				}
				return
			}
			f := oneFinding(t, rep, tcpcheck.KindPMTUBlackhole)
			if f.Direction != "toward-client" || !bracketHolds(f.MTUBracket, 1400) ||
				!strings.Contains(f.Advice, "MSS") {
				t.Errorf("finding %+v: want toward-client, a bracket holding 1400, MSS clamping advice", f)
			}
			for _, other := range rep.Findings {
				if other.Kind == tcpcheck.KindConnectTimeout {
					t.Errorf("a connect-timeout finding beside the pmtu-blackhole that explains it: %+v", other)
				}
			}
			t.Logf("%s: MTU bracket %v, wall %.1fs; %s", tc.profile, f.MTUBracket, wall.Seconds(), strings.Join(f.Evidence, " | "))
		})
	}
}

// run in the same lab (frag-needed hidden toward the server): the
// connect phase's stalled handshakes become the pmtu-blackhole finding
// toward the client, in the java and the go profile alike.
func TestRunPMTUBlackholeTowardClient(t *testing.T) {
	t.Parallel() // mostly waiting for stalled handshakes
	for _, profile := range []string{"java", "go"} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "run-pmtu-client-" + profile, Routers: smallLinkRouters(true)})
			start := time.Now()
			rep, _ := runReport(t, l, "--idle-max", "2s", "--tls-profile", profile)
			if rep.TLSProfile != tcpcheck.TLSProfile(profile) {
				t.Errorf("tls_profile %q, want %s", rep.TLSProfile, profile)
			}
			holes := holesTowardClient(rep)
			if len(holes) == 0 {
				t.Fatalf("no pmtu-blackhole toward the client: %v", kindsOf(rep))
			}
			f := holes[len(holes)-1]
			if !bracketHolds(f.MTUBracket, 1400) {
				t.Errorf("mtu bracket %v, want it to hold 1400", f.MTUBracket)
			}
			// The forward DF search places the small link: router 2 reports it.
			if f.Hop != 2 || f.HopAddress != l.Router4[1].String() || f.MTU != 1400 {
				t.Errorf("pmtu-blackhole at hop %d (%s) mtu %d; want hop 2 (%s), mtu 1400 (localisation %+v)", f.Hop, f.HopAddress, f.MTU, l.Router4[1], rep.Targets[0].Localisation)
			}
			// The go profile's hello taught the kernel the path MTU during
			// the connect test: the run says that the cache shaped it.
			cached := strings.Contains(strings.Join(rep.Warnings, "\n"), "cached path MTU")
			if cached != (profile == "go") {
				t.Errorf("warnings %q: a cached-path-MTU warning %v, want %v", rep.Warnings, cached, profile == "go")
			}
			t.Logf("%s: findings %v, bracket %v, wall %v", profile, kindsOf(rep), f.MTUBracket, time.Since(start).Round(time.Second))
		})
	}
}

// run's localisation probes the path MTU with DF packets (router 2
// answers frag-needed, MTU 1400): the probes must not teach the client's
// kernel that path MTU, or every connection to the server advertises a
// smaller MSS for the next 10 minutes and a later test (the next
// scheduled run) cannot see a black hole toward the client.
func TestRunLeavesNoPathMTUCached(t *testing.T) {
	t.Parallel()
	l := buildLab(t, lab.Scenario{Name: "run-no-pmtu-cache", Routers: smallLinkRouters(false)})
	rep, _ := runReport(t, l, "--idle-max", "2s")
	loc := rep.Targets[0].Localisation
	if loc == nil || loc.PMTU == nil || loc.PMTU.MTU != 1400 || loc.PMTU.FragNeededHop != 2 {
		t.Fatalf("localisation %+v: want the DF search to find MTU 1400 at hop 2", loc)
	}
	after, _ := tcpJSON(t, l, "connect", "--count", "1", "--ca-file", l.CAFile, fmt.Sprintf("https://%s", l.Server4))
	si := after.Results[0].Connections[0].Segment
	if si == nil || si.PathMTU != 1500 || si.AdvMSS < 1400 {
		out, _ := l.Command(t.Context(), l.ClientNS, "ip", "route", "get", l.Server4.String()).CombinedOutput()
		t.Fatalf("after run: segment %+v; want pmtu 1500 and a full MSS (route: %s)", si, out)
	}
}

// The IPv6 twin of the two tests above, in one lab per case: the link
// between routers 2 and 3 has an MTU of 1400 and router 3 drops the
// packet-too-big it owes the server. `tcp connect -6` and then `run -6`
// (java profile) report a pmtu-blackhole toward the client whose bracket
// holds 1400 (IPv6 headers are 40+20 bytes, not 20+20); with the
// packet-too-big let through `tcp connect -6` reports nothing.
func TestPMTUBlackholeTowardClientIPv6(t *testing.T) {
	t.Parallel() // mostly waiting for stalled handshakes
	for _, hide := range []bool{true, false} {
		name := map[bool]string{true: "packet-too-big hidden", false: "packet-too-big allowed"}[hide]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: fmt.Sprintf("pmtu6-client-%v", hide), Routers: smallLinkRouters(hide)})
			rep, wall := tcpJSON(t, l, "connect", "-6", "--count", "4", "--rate", "5", "--tls-profile", "java",
				"--ca-file", l.CAFile, "--token-file", l.TokenFile(), "https://"+netip.AddrPortFrom(l.Server6, 443).String())
			if !hide {
				if len(rep.Findings) != 0 {
					t.Fatalf("findings %+v with packet-too-big allowed; %s", rep.Findings, resultSummary(rep))
				}
				// run -6's DF search draws router 2's packet-too-big: it must
				// not teach the client's kernel the path MTU (the IPv6 twin of
				// TestRunLeavesNoPathMTUCached).
				r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", "-6", "--profile", "quick", "--idle-max", "2s",
					"--target", "https://"+labHost, "--ca-file", l.CAFile, "--token-file", l.TokenFile())
				runRep := decodeJSON[diagnose.Report](t, r)
				if loc := runRep.Targets[0].Localisation; loc == nil || loc.PMTU == nil || loc.PMTU.MTU != 1400 || loc.PMTU.FragNeededHop != 2 {
					t.Errorf("run -6: localisation %+v: want the DF search to find MTU 1400 at hop 2", loc)
				}
				after, _ := tcpJSON(t, l, "connect", "-6", "--count", "1", "--ca-file", l.CAFile, "https://"+netip.AddrPortFrom(l.Server6, 443).String())
				if si := after.Results[0].Connections[0].Segment; si == nil || si.PathMTU != 1500 || si.AdvMSS < 1400 {
					out, _ := l.Command(t.Context(), l.ClientNS, "ip", "-6", "route", "get", l.Server6.String()).CombinedOutput()
					t.Errorf("after run -6: segment %+v; want pmtu 1500 and a full MSS (route: %s)", si, out)
				}
				return
			}
			f := oneFinding(t, rep, tcpcheck.KindPMTUBlackhole)
			if f.Direction != "toward-client" || !bracketHolds(f.MTUBracket, 1400) ||
				!strings.Contains(f.Advice, "MSS") {
				t.Errorf("tcp connect -6: finding %+v: want toward-client, a bracket holding 1400, MSS clamping advice", f)
			}
			t.Logf("tcp connect -6: MTU bracket %v, wall %.1fs; %s", f.MTUBracket, wall.Seconds(), strings.Join(f.Evidence, " | "))

			start := time.Now()
			r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", "-6", "--profile", "quick", "--idle-max", "2s",
				"--tls-profile", "java", "--target", "https://"+labHost, "--ca-file", l.CAFile, "--token-file", l.TokenFile())
			if r.code != 1 {
				t.Fatalf("run -6: exit %d, want 1 (findings)\nstderr: %s", r.code, r.stderr)
			}
			runRep := decodeJSON[diagnose.Report](t, r)
			holes := holesTowardClient(runRep)
			if len(holes) == 0 {
				t.Fatalf("run -6: no pmtu-blackhole toward the client: %v", kindsOf(runRep))
			}
			rf := holes[len(holes)-1]
			if !bracketHolds(rf.MTUBracket, 1400) {
				t.Errorf("run -6: mtu bracket %v, want it to hold 1400", rf.MTUBracket)
			}
			// The forward DF search places the small link: router 2 reports it.
			if rf.Hop != 2 || rf.HopAddress != l.Router6[1].String() || rf.MTU != 1400 {
				t.Errorf("run -6: pmtu-blackhole at hop %d (%s) mtu %d; want hop 2 (%s), mtu 1400 (localisation %+v)",
					rf.Hop, rf.HopAddress, rf.MTU, l.Router6[1], runRep.Targets[0].Localisation)
			}
			t.Logf("run -6: findings %v, bracket %v, hop %d mtu %d, wall %v", kindsOf(runRep), rf.MTUBracket, rf.Hop, rf.MTU, time.Since(start).Round(time.Second))
		})
	}
}
