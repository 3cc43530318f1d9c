package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// A PMTU black hole toward the client that only the download meets: the
// link between routers 2 and 3 has an MTU of 1400, router 3 drops the
// frag-needed it owes the server, and the server's TLS flight is one
// small segment (a one-certificate ECDSA chain), so every handshake
// completes and the market descriptions' full-size segments die. The
// data test retries the download once with the MSS clamped; it completes:
// a pmtu-blackhole toward the client, not a data-stall (IPv4 and IPv6:
// router 3 drops its packet-too-big too). With the frag-needed let
// through the download completes: no finding, no retry.
func TestTCPDataPMTUBlackholeTowardClient(t *testing.T) {
	t.Parallel() // mostly waiting for the stall
	for _, tc := range []struct{ hide, v6 bool }{{true, false}, {true, true}, {false, false}} {
		hide := tc.hide
		name := map[bool]string{true: "frag-needed hidden", false: "frag-needed allowed"}[hide] + map[bool]string{true: "/ipv6", false: "/ipv4"}[tc.v6]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "data-pmtu-" + map[bool]string{true: "hidden", false: "allowed"}[hide] + map[bool]string{true: "6", false: "4"}[tc.v6], Routers: smallLinkRouters(hide),
				Server: lab.Server{SmallCertChain: true, LargeSize: 1 << 20}})
			target := fmt.Sprintf("https://%s", l.Server4)
			if tc.v6 {
				target = fmt.Sprintf("https://[%s]", l.Server6)
			}
			rep, wall := tcpJSON(t, l, "data", "--stall", "2s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), target)
			if len(rep.Results) != 1 || rep.Results[0].Transfer == nil {
				t.Fatalf("no transfer: %s", resultSummary(rep))
			}
			tr := rep.Results[0].Transfer
			if !hide {
				if len(rep.Findings) != 0 || tr.Stalled || tr.Cure != nil || tr.Bytes < 1<<20 {
					t.Fatalf("findings %+v, transfer %+v with frag-needed allowed; %s", rep.Findings, tr, resultSummary(rep))
				}
				t.Logf("allowed: %d bytes, pmtu %d, wall %v", tr.Bytes, tr.PathMTU, wall.Round(100*time.Millisecond))
				return
			}
			f := oneFinding(t, rep, tcpcheck.KindPMTUBlackhole)
			if f.Direction != "toward-client" || !bracketHolds(f.MTUBracket, 1400) ||
				!strings.Contains(f.Advice, "TCPMSS") {
				t.Errorf("finding %+v: want toward-client, a bracket holding 1400, MSS clamping advice", f)
			}
			for _, other := range rep.Findings {
				if other.Kind == tcpcheck.KindDataStall {
					t.Errorf("a data-stall beside the pmtu-blackhole that explains it: %+v", other)
				}
			}
			if !tr.Stalled || tr.Cure == nil || tr.Cure.Outcome != tcpcheck.OutcomeOK || tr.Cure.Bytes < 1<<20 || tr.Cure.AdvMSS > 1360 {
				t.Errorf("transfer %+v cure %+v: want a stalled download and one clamped retry that completed", tr, tr.Cure)
			}
			t.Logf("hidden: stalled after %d bytes, cure %+v, bracket %v, wall %v; %s", tr.Bytes, *tr.Cure, f.MTUBracket,
				wall.Round(100*time.Millisecond), strings.Join(f.Evidence, " | "))
		})
	}
}

// run in the same lab (frag-needed hidden, small server flight): the
// connect test passes, the data test's download stalls and a clamped
// retry cures it; the forward DF search places the black hole at router 2
// (it reports the MTU 1400 link).
func TestRunDataPMTUBlackholeTowardClient(t *testing.T) {
	t.Parallel() // mostly waiting for the stall and the localisation
	l := buildLab(t, lab.Scenario{Name: "run-data-pmtu", Routers: smallLinkRouters(true), Server: lab.Server{SmallCertChain: true, LargeSize: 1 << 20}})
	start := time.Now()
	rep, _ := runReport(t, l, "--idle-max", "2s")
	var holes []string
	for _, f := range holesTowardClient(rep) {
		holes = append(holes, fmt.Sprintf("%v@%d", f.MTUBracket, f.Hop))
		if !bracketHolds(f.MTUBracket, 1400) {
			t.Errorf("mtu bracket %v, want it to hold 1400", f.MTUBracket)
		}
		if f.Hop != 2 || f.HopAddress != l.Router4[1].String() || f.MTU != 1400 {
			t.Errorf("pmtu-blackhole at hop %d (%s) mtu %d; want hop 2 (%s), mtu 1400", f.Hop, f.HopAddress, f.MTU, l.Router4[1])
		}
	}
	for _, f := range rep.Findings {
		if f.Kind == tcpcheck.KindDataStall || f.Kind == tcpcheck.KindConnectTimeout {
			t.Errorf("a %s beside the black hole: %+v", f.Kind, f)
		}
	}
	if len(holes) != 1 {
		t.Fatalf("%d pmtu-blackhole toward the client (%v), want 1: %v", len(holes), holes, kindsOf(rep))
	}
	t.Logf("findings %v, black hole %v, wall %v", kindsOf(rep), holes, time.Since(start).Round(time.Second))
}
