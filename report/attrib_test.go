package report

import (
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestWhereNamesCandidatesAndObservations(t *testing.T) {
	f := diagnose.Finding{Finding: tcpcheck.Finding{Hop: 3, HopAddress: "198.18.2.2", Origin: probe.OriginMiddlebox,
		HopCandidates: []int{3, 4}, Observations: []string{"forged-ttl"}}}
	want := "middlebox at hop 3 (198.18.2.2), undecided between hops 3 and 4; forged-ttl"
	if got := where(f); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
