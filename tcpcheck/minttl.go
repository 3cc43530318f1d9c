package tcpcheck

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// ServerTTLByMinTTL finds, without raw sockets, the TTL with which the
// server's segments arrive: a handshake completes only if the SYN-ACK's
// TTL is at least the socket's IP_MINTTL, so a binary search over
// IP_MINTTL with short connection attempts (a few times the plain
// handshake time) converges in 8 attempts. 0 when it cannot tell.
func ServerTTLByMinTTL(ctx context.Context, dst netip.AddrPort, base DialConfig) int {
	cfg := base
	cfg.App = AppTCP
	cfg.MinTTL = 0
	dr := Dial(ctx, cfg, dst)
	if dr.Conn == nil {
		return 0
	}
	dr.Conn.Abort()
	cfg.ConnectTimeout = max(500*time.Millisecond, time.Duration(4*dr.Phases.TCP*float64(time.Millisecond)))
	lo, hi := 1, 256 // handshake works with lo, fails with hi
	for hi-lo > 1 && ctx.Err() == nil {
		mid := (lo + hi) / 2
		cfg.MinTTL = mid
		dr := Dial(ctx, cfg, dst)
		if dr.Conn != nil {
			dr.Conn.Abort()
			lo = mid
		} else if dr.Outcome == OutcomeTimeout {
			hi = mid
		} else {
			return 0 // refused or reset: the test says nothing
		}
	}
	if ctx.Err() != nil {
		return 0
	}
	return lo
}

// MinTTLVerdict interprets the A/B check: a connection idled past the
// timeout, then got IP_MINTTL one above the server's TTL and was reused.
// The server's segments are now ignored, a nearer box's (higher TTL) are
// not: a reset still seen came from nearer than the server; a reset
// turned into a timeout came with the server's TTL.
func MinTTLVerdict(serverTTL int, o Outcome) *probe.Attribution {
	switch {
	case serverTTL <= 0:
		return nil
	case o.IsReset():
		return &probe.Attribution{Origin: probe.OriginMiddlebox,
			Reason: fmt.Sprintf("IP_MINTTL A/B (no packet capture, weaker evidence): with IP_MINTTL %d (one above the server's TTL) the reset still arrived, so it came from nearer than the server (hop unknown)", serverTTL+1)}
	case o == OutcomeTimeout:
		return &probe.Attribution{Origin: probe.OriginServer, Hop: probe.SenderHop(serverTTL),
			Reason: fmt.Sprintf("IP_MINTTL A/B (no packet capture, weaker evidence): with IP_MINTTL %d (one above the server's TTL) the reset was ignored and the request timed out, so the reset came with the server's TTL", serverTTL+1)}
	}
	return nil
}
