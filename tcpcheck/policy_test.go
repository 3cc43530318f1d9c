package tcpcheck

import (
	"errors"
	"testing"
)

func mustTargets(t *testing.T, raw ...string) []Target {
	t.Helper()
	var ts []Target
	for _, r := range raw {
		tg, err := ParseTarget(r)
		if err != nil {
			t.Fatalf("ParseTarget(%q): %v", r, err)
		}
		ts = append(ts, tg)
	}
	return ts
}

func TestPolicyFor(t *testing.T) {
	sportradar := Policy{Sportradar: true, MaxConns: 40, MaxConnectRate: 20, MaxRequestRate: 10, FreshReserve: 4, RunConns: 36, OneRunAtATime: true}
	anywhere := Policy{MaxConns: 1000, MaxRequestRate: 1000, RunConns: 24}
	for _, tc := range []struct {
		name    string
		targets []string
		want    Policy
	}{
		{"none", nil, anywhere},
		{"lab host", []string{"https://server.lab.test", "tcp://198.18.5.2:7"}, anywhere},
		{"api", []string{"https://api.betradar.com"}, sportradar},
		{"upper case, trailing dot", []string{"amqps://MQ.Betradar.COM.:5671"}, sportradar},
		{"one of several", []string{"tcp://198.18.5.2:7", "https://global.api.betradar.com"}, sportradar},
		{"look-alike", []string{"https://notbetradar.com", "https://betradar.com.example.org"}, anywhere},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := mustTargets(t, tc.targets...)
			if got := PolicyFor(ts); got != tc.want {
				t.Fatalf("PolicyFor(%v) = %+v; want %+v", tc.targets, got, tc.want)
			}
			jobs := make([]Job, len(ts))
			for i := range ts {
				jobs[i].Target = ts[i]
			}
			if got := PolicyForJobs(jobs); got != tc.want {
				t.Fatalf("PolicyForJobs(%v) = %+v; want %+v", tc.targets, got, tc.want)
			}
		})
	}
}

func TestFitSoakPool(t *testing.T) {
	p := PolicyFor(mustTargets(t, "https://api.betradar.com"))
	for _, tc := range []struct {
		name        string
		pool, addrs int
		explicit    bool
		want        int
		wantErr     bool
	}{
		{name: "fits", pool: 8, addrs: 4, want: 8},
		{name: "fits exactly", pool: 9, addrs: 4, want: 9},
		{name: "default shared out", pool: 8, addrs: 6, want: 6},
		{name: "default shared out to the floor", pool: 8, addrs: 18, want: 2},
		{name: "default cannot fit", pool: 8, addrs: 19, wantErr: true},
		{name: "explicit is refused, not changed", pool: 8, addrs: 6, explicit: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.FitSoakPool(tc.pool, tc.addrs, tc.explicit)
			if tc.wantErr {
				var pe *PoolTooLargeError
				if !errors.As(err, &pe) || pe.Pool != tc.pool || pe.Addrs != tc.addrs || pe.MaxConns != 40 {
					t.Fatalf("FitSoakPool(%d, %d, %v) = %d, %v; want PoolTooLargeError", tc.pool, tc.addrs, tc.explicit, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FitSoakPool(%d, %d, %v) = %d, %v; want %d", tc.pool, tc.addrs, tc.explicit, got, err, tc.want)
			}
			if got*tc.addrs > p.MaxConns-p.FreshReserve {
				t.Fatalf("pool %d × %d addresses = %d connections, over the budget of %d", got, tc.addrs, got*tc.addrs, p.MaxConns-p.FreshReserve)
			}
		})
	}
}
