package tcpcheck

import (
	"strings"
	"testing"
)

func TestNewIdleVerdict(t *testing.T) {
	for _, c := range []struct {
		name           string
		t, lo, hi      float64
		rfc            string
		nearest        float64
		matches        bool
		evidenceHasAll []string
	}{
		{"AWS NAT gateway", 351, 342, 360, RFC5382Below, 350, true, []string{"below RFC 5382", "AWS NAT Gateway", "matches"}},
		{"Azure 4 min", 238, 232, 244, RFC5382Below, 240, true, []string{"Azure"}},
		{"firewall hour", 3590, 3500, 3680, RFC5382Below, 3600, true, []string{"Palo Alto"}},
		{"RFC minimum", 7450, 7300, 7600, RFC5382Meets, 7440, true, []string{"meets RFC 5382"}},
		{"lab box far from any default", 6.1, 6, 6.3, RFC5382Below, 240, false, []string{"no common default matches (nearest: 240s"}},
		{"between 300 and 350", 325, 318, 332, RFC5382Below, 350, false, []string{"nearest: 350s"}},
		{"long past the minimum", 90000, 88000, 92000, RFC5382Meets, 7440, false, []string{"meets"}},
	} {
		v := NewIdleVerdict(c.t, c.lo, c.hi)
		if v.RFC5382 != c.rfc || v.NearestDefaultS != c.nearest || v.MatchesDefault != c.matches || v.RFC5382MinimumS != 7440 {
			t.Errorf("%s: %+v", c.name, v)
		}
		ev := v.Evidence(c.t)
		for _, w := range c.evidenceHasAll {
			if !strings.Contains(ev, w) {
				t.Errorf("%s: evidence %q lacks %q", c.name, ev, w)
			}
		}
	}
}

func TestIdleVerdictOwnerAdvice(t *testing.T) {
	v := NewIdleVerdict(351, 342, 360)
	a := v.WithOwnerAdvice("Keep idle time below it.", 351)
	if !strings.Contains(a, "AWS NAT Gateway") || !strings.Contains(a, "7440s") || !strings.HasPrefix(a, "Keep idle time below it. For the owner") {
		t.Errorf("advice %q", a)
	}
	if again := v.WithOwnerAdvice(a, 351); again != a {
		t.Errorf("owner advice added twice: %q", again)
	}
	if m := NewIdleVerdict(8000, 7900, 8100).OwnerAdvice(8000); !strings.Contains(m, "meets") {
		t.Errorf("advice %q", m)
	}
}
