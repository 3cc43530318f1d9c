package report

import (
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

func TestWhereNamesCandidatesAndObservations(t *testing.T) {
	f := diagnose.Finding{Finding: tcpcheck.Finding{Hop: 3, HopAddress: "198.18.2.2", Origin: probe.OriginMiddlebox,
		HopCandidates: []int{3, 4}, Observations: []string{"forged-ttl"}}}
	want := "middlebox at hop 3 (198.18.2.2), undecided between hops 3 and 4; forged-ttl"
	if got := where(f); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAsymmNote(t *testing.T) {
	for _, tc := range []struct {
		h    trace.Hop
		want string
	}{
		{trace.Hop{TTL: 3, Received: 1, ReturnHops: 5, Asymm: 2}, "asymm 5 (+2)"},
		{trace.Hop{TTL: 3, Received: 1, ReturnHops: 2, Asymm: -1}, "asymm 2 (-1)"},
		{trace.Hop{TTL: 3, Received: 1, ReturnHops: 3}, ""},
		{trace.Hop{TTL: 3, Received: 0, ReturnHops: 5, Asymm: 2}, ""},
		{trace.Hop{TTL: 3, Received: 1}, ""},
	} {
		if got := asymmNote(&tc.h); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.h, got, tc.want)
		}
	}
}
