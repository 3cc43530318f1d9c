package probe

import (
	"net/netip"
	"os"
	"testing"
)

// Every raw probe's send time is the kernel's transmit stamp, on both
// families, send after send (an IPv6 raw socket's unread copies once
// filled the buffer the stamps count against). Loopback only; needs root.
func TestTxSenderStampsEverySend(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw sockets need root")
	}
	for _, a := range []string{"127.0.0.1", "::1"} {
		src := netip.MustParseAddr(a)
		proto := ipProto(UDP, src)
		tx, err := openTxSender(src, proto)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		for i := range 20 {
			pkt, err := BuildUDP(src, src, 40000, 9, uint16(i+1), []byte("hopcheck tx stamp test"))
			if err != nil {
				t.Fatal(err)
			}
			if _, stamped, err := tx.send(src, src, proto, pkt, 5, uint16(i), true); err != nil || !stamped {
				t.Fatalf("%s send %d: stamped %v, err %v", a, i, stamped, err)
			}
		}
		tx.close()
	}
}
