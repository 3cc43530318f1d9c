package report

import (
	"slices"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/localise"
)

// A probe that failed says so, rather than reading as "found nothing"
// (path MTU 0).
func TestLocalisationLinesFailedProbes(t *testing.T) {
	loc := &diagnose.Localisation{RewritesStatus: tri.NotTested, RewritesError: "probe rewrites: raw path: operation not permitted",
		PMTU: &diagnose.PMTU{Outcome: localise.Failed(errString("probe pmtu: no interface holds 198.18.0.1"))}}
	want := []string{"header rewrite probe failed: probe rewrites: raw path: operation not permitted",
		"path MTU search failed: probe pmtu: no interface holds 198.18.0.1"}
	if got := localisationLines(loc); !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
