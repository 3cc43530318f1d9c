package tcpcheck

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

func TestPathPrintsOf(t *testing.T) {
	te := func(ttl, reply int, from string) trace.Observation {
		return trace.Observation{TTL: ttl, Response: &probe.Response{From: netip.MustParseAddr(from), Kind: probe.KindTimeExceeded, ReplyTTL: reply, ReplyIPID: -1}}
	}
	obs := []trace.Observation{
		te(1, 64, "198.18.0.2"), te(2, 61, "198.19.251.1"), te(2, 61, "198.19.251.1"),
		{TTL: 3},
		{TTL: 4, Response: &probe.Response{From: netip.MustParseAddr("198.18.3.2"), Kind: probe.KindSynAck, ReplyTTL: 59}},
		{TTL: 5, Response: &probe.Response{From: netip.MustParseAddr("198.18.3.2"), Kind: probe.KindSynAck, ReplyTTL: 59}},
	}
	pp := pathPrintsOf(obs)
	if pp.ServerHop != 4 || len(pp.Hops) != 2 || pp.Hops[1].Hop != 2 || pp.Hops[1].TTL != 61 || pp.Hops[1].Address != "198.19.251.1" || pp.Hops[1].Samples != 2 {
		t.Errorf("got %+v", pp)
	}
}

func TestReattributionApply(t *testing.T) {
	f := Finding{Hop: 4, Origin: probe.OriginMiddlebox, Confidence: "high", HopAddress: "198.18.3.2"}
	ra := &reattribution{result: attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Candidates: []int{3}, Confidence: "high",
		Observations: []attrib.Observation{attrib.ObsAsymmetricReturn}, Evidence: []string{"fingerprint"}}, address: "198.18.2.2"}
	ra.apply(&f)
	if f.Hop != 3 || f.HopAddress != "198.18.2.2" || f.Confidence != "high" || f.HopCandidates != nil ||
		!slices.Equal(f.Observations, []string{"asymmetric-return"}) || len(f.Evidence) != 2 {
		t.Errorf("got %+v", f)
	}
	// Undecided: both candidates, and never more confident than before.
	f = Finding{Hop: 3, Origin: probe.OriginMiddlebox, Confidence: "medium"}
	(&reattribution{result: attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Candidates: []int{3, 4}, Confidence: "high"}}).apply(&f)
	if !slices.Equal(f.HopCandidates, []int{3, 4}) || f.Confidence != "medium" {
		t.Errorf("got %+v", f)
	}
	var none *reattribution
	none.apply(&f) // no lookup: unchanged
}
