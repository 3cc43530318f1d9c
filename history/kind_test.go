package history

import (
	"regexp"
	"testing"
)

// TestValidKindMatchesPattern checks the hand-written check against the
// pattern it replaced, on edge cases.
func TestValidKindMatchesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-z][a-z0-9]*$`)
	for _, kind := range []string{"", "run", "soak", "r", "run2", "2run", "Run", "ru-n", "run\n", "é", "a_b", "z9", "{", "`", "a/b", "a:", "a@"} {
		if got, want := validKind(kind), pattern.MatchString(kind); got != want {
			t.Errorf("validKind(%q) = %v, want %v", kind, got, want)
		}
	}
}
