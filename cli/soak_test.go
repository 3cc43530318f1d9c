package cli

import (
	"errors"
	"strings"
	"testing"
)

func TestBetradarPool(t *testing.T) {
	for _, tc := range []struct {
		name            string
		pool, addrs     int
		explicit        bool
		want            int
		wantErrContains string
	}{
		{name: "fits", pool: 8, addrs: 4, want: 8},
		{name: "fits exactly", pool: 9, addrs: 4, want: 9},
		{name: "default shared out", pool: 8, addrs: 6, want: 6},
		{name: "default shared out to the floor", pool: 8, addrs: 18, want: 2},
		{name: "default cannot fit", pool: 8, addrs: 19, wantErrContains: "19 addresses"},
		{name: "explicit is refused, not changed", pool: 8, addrs: 6, explicit: true, wantErrContains: "--pool 8 × 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := betradarPool(tc.pool, tc.addrs, tc.explicit)
			if tc.wantErrContains != "" {
				var ee *exitError
				if err == nil || !errors.As(err, &ee) || ee.code != ExitUsage || !strings.Contains(err.Error(), tc.wantErrContains) {
					t.Fatalf("betradarPool(%d, %d, %v) = %d, %v; want usage error containing %q", tc.pool, tc.addrs, tc.explicit, got, err, tc.wantErrContains)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("betradarPool(%d, %d, %v) = %d, %v; want %d", tc.pool, tc.addrs, tc.explicit, got, err, tc.want)
			}
			if got*tc.addrs > 36 {
				t.Fatalf("pool %d × %d addresses = %d connections, over the budget of 36", got, tc.addrs, got*tc.addrs)
			}
		})
	}
}
