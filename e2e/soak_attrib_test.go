package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Router 3 of 3 resets flows idle 2 s and sends everything back toward
// the client over two extra routers: its RSTs arrive with TTL 60, which a
// symmetric count reads as hop 5. A short soak (one pooled connection
// reused every 4 s, so every reuse is reset) must place them at hop 3 by
// the hop's return-path fingerprint, like `tcp idle` does
// (TestAttribReturnDetours), in resets_by_hop and in its finding.
func TestSoakPlacesResetsByFingerprintOnAsymmetricReturn(t *testing.T) {
	t.Parallel()
	rs := make([]lab.Router, 3)
	rs[2].IdleTimeout, rs[2].IdleAction, rs[2].ReturnDetour = 2*time.Second, lab.IdleActionReset, 2
	l := buildLab(t, lab.Scenario{Name: "soak-attrib", Routers: rs})
	rep := soakJSON(t, l, "--duration", "24s", "--rate", "0.25", "--pool", "1", "--fresh-share", "0",
		fmt.Sprintf("tcp://%s:%d", l.Server4, l.Server.EchoPort))
	tr := rep.Targets[0]
	culprits := culpritAddrs(l, false)
	t.Logf("%d requests, resets %d, outcomes %v, server hop %d (TTL %d); resets by hop %+v", tr.Requests, tr.Resets.Count, tr.Outcomes,
		tr.ServerHop, tr.ServerTTL, tr.ResetsByHop)
	if rep.Evidence != "packets" || tr.Resets.Count == 0 {
		t.Fatalf("evidence %s, %d resets: nothing to place", rep.Evidence, tr.Resets.Count)
	}
	if len(tr.ResetsByHop) != 1 {
		t.Fatalf("resets by hop %+v: want every reset at one hop", tr.ResetsByHop)
	}
	h := tr.ResetsByHop[0]
	if h.Origin != probe.OriginMiddlebox || h.Hop != 3 || h.Count != tr.Resets.Count || h.Method != "fingerprint" ||
		!slices.Contains(culprits, h.HopAddress) || h.TTLCountHop != 5 || !slices.Contains(h.Observations, "asymmetric-return") {
		t.Errorf("resets by hop %+v; want a middlebox at hop 3 (%v) placed by fingerprint, a TTL count of 5, asymmetric-return", h, culprits)
	}
	var f *tcpcheck.Finding
	for i := range rep.Findings {
		if rep.Findings[i].Kind == tcpcheck.KindIdleReset {
			f = &rep.Findings[i]
		}
	}
	if f == nil {
		t.Fatalf("no idle-reset finding: %+v", rep.Findings)
	}
	ev := strings.Join(f.Evidence, "\n")
	t.Logf("finding: hop %d (%s) origin %s confidence %s observations %v; evidence:\n  %s", f.Hop, f.HopAddress, f.Origin, f.Confidence,
		f.Observations, strings.Join(f.Evidence, "\n  "))
	checkCulprit(t, "soak", f.Hop, f.HopAddress, f.Origin, f.HopCandidates, f.Evidence, culprits)
	if !slices.Contains(f.Observations, "asymmetric-return") || !strings.Contains(ev, "correct the TTL count: hop 3, not hop 5") ||
		!strings.Contains(ev, "placed by fingerprint") {
		t.Errorf("finding observations %v; evidence without the method or the count's correction:\n%s", f.Observations, ev)
	}
}
