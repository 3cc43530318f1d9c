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

func TestConfidenceTextNamesMethod(t *testing.T) {
	for _, c := range []struct {
		confidence, method, want string
	}{
		{"high", "fingerprint", "high (by fingerprint)"},
		{"medium", "bracket", "medium (by bracket)"},
		{"low", "ttl-count", "low (by ttl-count)"},
		{"medium", "server", "medium (by server)"},
		{"low", "none", "low"}, // nothing placed the sender
		{"medium", "", "medium"},
		{"", "", "unknown"},
	} {
		f := diagnose.Finding{Finding: tcpcheck.Finding{Confidence: c.confidence, Method: c.method}}
		if got := confidenceText(f); got != c.want {
			t.Errorf("confidence %q method %q: %q, want %q", c.confidence, c.method, got, c.want)
		}
	}
}
