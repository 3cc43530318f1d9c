package lab_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

// TestLabAttributionKnobs: router 2 sends everything back through a
// detour of two extra routers, router 3's own packets start at TTL 255 and
// router 4 resets every SYN with the server's TTL. A TCP trace from the
// client sees each in the TTL its answers arrive with.
func TestLabAttributionKnobs(t *testing.T) {
	t.Parallel()
	l := buildLab(t, lab.Scenario{Name: "attrib-knobs", Routers: []lab.Router{
		{}, {ReturnDetour: 2}, {InitialTTL: 255}, {SYNResetPercent: 100, ForgeServerTTL: true}}})
	// Routers crossed on the way back: hop 1 none, hop 2 the detour and
	// router 1 (3), hop 3 one more, hop 4 two more; the server (never
	// reached: router 4 resets every SYN) would be 6 back, and router 4's
	// RST claims that.
	want := map[int]int{1: 64, 2: 61, 3: 251, 4: 59, 5: 58}
	for _, dst := range []netip.Addr{l.Server4, l.Server6} {
		t.Run(map[bool]string{true: "v4", false: "v6"}[dst.Is4()], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var obs []trace.Observation
			err := lab.InNamespace(l.ClientNS, func() error {
				pr, err := probe.NewProber(ctx, probe.Config{Protocol: probe.TCP, Dst: dst, DstPort: 443, Privilege: "raw"})
				if err != nil {
					return err
				}
				defer pr.Close()
				cfg := trace.DefaultConfig()
				cfg.MaxHops, cfg.Queries, cfg.Timeout = 5, 1, 2*time.Second
				obs, err = trace.Run(ctx, pr, cfg, trace.Destination{Addr: dst, Protocol: probe.TCP, Port: 443})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			got := map[int]int{}
			for _, o := range obs {
				if o.Response != nil {
					got[o.TTL] = o.Response.ReplyTTL
					t.Logf("ttl %d: %s from %s, reply TTL %d", o.TTL, o.Response.Kind, o.Response.From, o.Response.ReplyTTL)
				}
			}
			for ttl, w := range want {
				if got[ttl] != w {
					t.Errorf("TTL %d: reply TTL %d, want %d", ttl, got[ttl], w)
				}
			}
		})
	}
}
