package localise

import (
	"net/netip"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
	"github.com/hopcheck/hopcheck/probe"
)

// fx decodes a hex fixture (see packetfx.MustHex).
var fx = packetfx.MustHex

// ipv4Payload returns the payload of a fixture IPv4 packet.
func ipv4Payload(t testing.TB, b []byte) []byte {
	t.Helper()
	_, p, err := probe.DecodeIPv4Packet(b)
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return p
}

// ipv6Payload returns the payload of a fixture IPv6 packet (what a raw
// ICMPv6 socket reads).
func ipv6Payload(b []byte) []byte { return b[40:] }

var (
	client4 = netip.MustParseAddr("198.18.1.2")
	router4 = netip.MustParseAddr("198.18.1.1")
	server4 = netip.MustParseAddr("198.18.2.2")
	client6 = netip.MustParseAddr("2001:db8:1::2")
	server6 = netip.MustParseAddr("2001:db8:2::2")
	// fixtureIdent is the identity capture.sh stamped on its probes.
	fixtureIdent = probe.Ident{Nonce: 0x5eed1e55}
)
