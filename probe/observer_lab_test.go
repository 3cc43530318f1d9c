package probe

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
)

// TestLabObserverCapturesBothFamilies: behind 2 routers, the observer's
// capture holds a connection's SYN and the server's SYN-ACK with its TTL
// (hop limit) as received, over IPv4 and IPv6 (the IPv6 filter compares
// all four address words).
func TestLabObserverCapturesBothFamilies(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("lab test: skipped with -short")
	}
	l := labtest.Build(t, lab.Scenario{Name: "observer-capture", Routers: make([]lab.Router, 2)}, lab.Options{})
	for _, server := range []netip.Addr{l.Server4, l.Server6} {
		remote := netip.AddrPortFrom(server, 443)
		// Every packet of this test leaves from the lab's client namespace.
		err := lab.InNamespace(l.ClientNS, func() error {
			o, err := NewObserver(remote)
			if err != nil {
				return err
			}
			defer o.Close()
			if o.CaptureErr() != nil {
				return o.CaptureErr()
			}
			c, err := net.DialTimeout("tcp", remote.String(), 3*time.Second)
			if err != nil {
				return err
			}
			port := c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
			o.WaitSynAck(port, time.Second)
			time.Sleep(50 * time.Millisecond)
			c.Close()
			cap := o.Capture(port)
			var synOut, synAckTTL int
			for _, p := range cap.Packets {
				info, err := DecodeCaptured(p.Data)
				if err != nil || info.TCP == nil {
					return fmt.Errorf("%s: packet %x: %v", remote, p.Data, err)
				}
				if info.TCP.Flags == FlagSYN && p.Out {
					synOut++
				}
				if info.TCP.Flags.Has(FlagSYN|FlagACK) && !p.Out && info.Src == server {
					synAckTTL = info.TTL
				}
			}
			// 2 routers: the server is hop 3, its SYN-ACK arrives with 64-2.
			if synOut != 1 || synAckTTL != 62 || cap.Local.Port() != port || cap.Local.Addr().Is6() != server.Is6() {
				return fmt.Errorf("%s: %d SYNs, SYN-ACK TTL %d (want 1, 62), local %s, %d packets", remote, synOut, synAckTTL, cap.Local, len(cap.Packets))
			}
			t.Logf("%s: %d packets captured, SYN-ACK TTL %d", remote, len(cap.Packets), synAckTTL)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
