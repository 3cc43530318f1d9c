package tcpcheck

import (
	"context"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

// HopAddress sends a few TTL-limited TCP SYNs toward dst with TTL hop and
// returns the address of the device that answered from that hop ("" when
// none did, e.g. a router that sends no ICMP).
func HopAddress(ctx context.Context, dst netip.AddrPort, hop int) string {
	if hop < 1 || hop > 255 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pr, err := probe.NewProber(ctx, probe.Config{Protocol: probe.TCP, Dst: dst.Addr(), DstPort: dst.Port(), Privilege: "auto"})
	if err != nil {
		return ""
	}
	defer pr.Close()
	cfg := trace.DefaultConfig()
	cfg.Port, cfg.FirstHop, cfg.MaxHops, cfg.Queries, cfg.Timeout = dst.Port(), hop, hop, 3, 2*time.Second
	obs, _ := trace.Run(ctx, pr, cfg, trace.Destination{Addr: dst.Addr(), Protocol: probe.TCP, Port: dst.Port()})
	for _, o := range obs {
		if o.TTL == hop && o.Response != nil {
			return o.Response.From.String()
		}
	}
	return ""
}
