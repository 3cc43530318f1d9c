package tcpcheck

import (
	"net"
	"testing"

	"github.com/hopcheck/hopcheck/probe"
)

func TestMinTTLVerdict(t *testing.T) {
	for _, c := range []struct {
		ttl    int
		o      Outcome
		origin probe.Origin
		hop    int
		none   bool
	}{
		{61, OutcomeReset, probe.OriginMiddlebox, 0, false},
		{61, OutcomeTimeout, probe.OriginServer, 4, false},
		{61, OutcomeOK, "", 0, true},
		{0, OutcomeReset, "", 0, true},
	} {
		a := MinTTLVerdict(c.ttl, c.o)
		if c.none {
			if a != nil {
				t.Errorf("%d %s: %+v", c.ttl, c.o, a)
			}
			continue
		}
		if a == nil || a.Origin != c.origin || a.Hop != c.hop || a.Reason == "" {
			t.Errorf("%d %s: %+v", c.ttl, c.o, a)
		}
	}
}

// On loopback the SYN-ACK arrives with TTL 64.
func TestServerTTLByMinTTLLoopback(t *testing.T) {
	ap := serveLoopback(t, func(c net.Conn) { c.Close() })
	if got := ServerTTLByMinTTL(t.Context(), ap, DefaultDialConfig()); got != 64 {
		t.Errorf("server TTL %d, want 64", got)
	}
}
