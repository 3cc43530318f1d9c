package localise

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
)

// TestLabPMTU: router 3 of 4 has a 1280-byte link toward the server.
// Hiding its frag-needed makes a black hole at hop 3; reporting it is
// healthy PMTUD; a destination before it has no bottleneck.
func TestLabPMTU(t *testing.T) {
	t.Parallel()
	for _, sc := range []struct {
		name string
		hide bool
	}{{"black hole", true}, {"frag-needed", false}} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "pmtu", Routers: []lab.Router{{}, {}, {LinkMTU: 1280, HideFragNeeded: sc.hide}, {}}})
			for _, tc := range []struct {
				name   string
				dst    netip.Addr
				proto  probe.Protocol
				hop3   netip.Addr
				before bool // dst is router 2, before the small link
			}{
				{"v4 icmp", l.Server4, probe.ICMP, l.Router4[2], false},
				{"v4 udp", l.Server4, probe.UDP, l.Router4[2], false},
				{"v4 tcp", l.Server4, probe.TCP, l.Router4[2], false},
				{"v6 icmp", l.Server6, probe.ICMP, l.Router6[2], false},
				{"v6 udp", l.Server6, probe.UDP, l.Router6[2], false},
				{"v4 icmp to router 2", l.Router4[1], probe.ICMP, netip.Addr{}, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					var r PMTU
					start := time.Now()
					inClient(t, l, func() (err error) {
						r, err = RawPMTU(ctx, tc.dst, PMTUOptions{Protocol: tc.proto, MaxTTL: 8, Timeout: 700 * time.Millisecond, Log: t.Logf})
						return err
					})
					t.Logf("%v: verdict %s mtu %d (local %d) frag-needed %v %v hop %d %s; black hole %s hop %d-%d %s; %s",
						time.Since(start).Round(time.Millisecond), r.Verdict, r.MTU, r.LocalMTU, r.FragNeededSeen, r.FragNeeded,
						r.FragNeededHop, r.FragNeededHopAddress, r.Blackhole, r.BlackholeHop, r.BlackholeHopUpTo, r.BlackholeHopAddress, r.Reason)
					for _, h := range r.Hops {
						t.Logf("ttl %d: control %s %s, big %s %s %d", h.TTL, h.Control.Kind, h.Control.From, h.Big.Kind, h.Big.From, h.Big.MTU)
					}
					switch {
					case tc.before:
						if r.Verdict != PMTUNoBottleneck || r.MTU != 1500 || r.LocalMTU != 1500 || r.Blackhole != tri.No || r.Status != tri.No || len(r.Hops) != 0 {
							t.Errorf("want no bottleneck at 1500")
						}
					case sc.hide:
						if r.Verdict != PMTUBlackhole || r.MTU != 1280 || r.Blackhole != tri.Yes || r.BlackholeHop != 3 ||
							r.BlackholeHopUpTo != 3 || r.BlackholeHopAddress != tc.hop3.String() || r.FragNeededSeen || r.Status != tri.Yes {
							t.Errorf("want a black hole at hop 3 (%s) with MTU 1280 and no frag-needed", tc.hop3)
						}
						if len(r.Hops) != 5 || r.Hops[4].Control.Kind != PMTUReply || r.Hops[3].Big.Kind != PMTUNoAnswer {
							t.Errorf("want 5 hops, the server answering 1280 bytes at TTL 5 and 1281 bytes vanishing at TTL 4")
						}
					default:
						if r.Verdict != PMTUAnnounced || r.MTU != 1280 || r.Blackhole != tri.No || !r.FragNeededSeen || r.Status != tri.Yes ||
							r.FragNeededHop != 3 || r.FragNeededHopAddress != tc.hop3.String() || r.FragNeeded[0].MTU != 1280 {
							t.Errorf("want frag-needed from hop 3 (%s) with MTU 1280 and no black hole", tc.hop3)
						}
					}
				})
			}
		})
	}
}
