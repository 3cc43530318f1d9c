package probe

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// fx decodes a hex fixture (see packetfx.MustHex).
var fx = packetfx.MustHex

// ipv4Payload returns the payload of a fixture IPv4 packet.
func ipv4Payload(t testing.TB, b []byte) []byte {
	t.Helper()
	_, p, err := DecodeIPv4Packet(b)
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
	router6 = netip.MustParseAddr("2001:db8:1::1")
	server6 = netip.MustParseAddr("2001:db8:2::2")
	// fixtureIdent is the identity capture.sh stamped on its probes.
	fixtureIdent = Ident{Nonce: 0x5eed1e55}
)

// Real packets, full IP packets as the client captured them: run by
// testdata/capture/capture.sh (Linux 6.18 router and server in network
// namespaces; output kept in testdata/capture/linux-6.18.txt). Nonce 0x5eed1e55.
// TCP segments the kernel itself sent over the veth links (fxSYN*Kernel,
// fxSYNACK*, fxRST6) were left to checksum offload: their checksum field holds only
// the folded pseudo-header sum, and routers quote them that way.
// The packets localise's tests read too (SYN4Probe, TE4SYNProbe, ...) are in
// internal/packetfx.
var (
	// fxSYN4Kernel: SYN the kernel sent for connect() with IP_TTL 1 (60 bytes: 40-byte TCP header with Linux options).
	// 198.18.1.2 > 198.18.2.2 proto 6.
	fxSYN4Kernel = fx(`
		4500003ca6fd400001064396c6120102c6120202c9fe005070da8c7a00000000a002faf08f570000020405b40402080a
		a6526a1f000000000103030a`)
	// fxSYN6Kernel: SYN the kernel sent for connect() with IPV6_UNICAST_HOPS 1.
	// 2001:db8:1::2 > 2001:db8:2::2 next 6.
	fxSYN6Kernel = fx(`
		600a38a70028060120010db800010000000000000000000220010db8000200000000000000000002e76a005041479865
		00000000a002fd205ba70000020405a00402080a4ca610fd000000000103030a`)
	// fxTE6KernelSYN: ICMPv6 time exceeded from the router quoting all of fxSYN6Kernel.
	// 2001:db8:1::1 > 2001:db8:1::2 next 58.
	fxTE6KernelSYN = fx(`
		60097a4c00583a4020010db800010000000000000000000120010db80001000000000000000000020300770f00000000
		600a38a70028060120010db800010000000000000000000220010db8000200000000000000000002e76a005041479865
		00000000a002fd205ba70000020405a00402080a4ca610fd000000000103030a`)
	// fxSYN6Probe: BuildTCPSYN probe, index 7, hop limit 1.
	// 2001:db8:1::2 > 2001:db8:2::2 next 6.
	fxSYN6Probe = fx(`
		6001d54e0028060120010db800010000000000000000000220010db80002000000000000000000029c4700505eed0007
		00000000a002faf0f2040000020405b40402080a010203040000000001030307`)
	// fxUDP4Probe: BuildUDP probe, index 8, TTL 1.
	// 198.18.1.2 > 198.18.2.2 proto 17.
	fxUDP4Probe = fx(`4500002c0008000001112a91c6120102c61202029c40829a001840c1686f70635eed1e55000800000000badb`)
	// fxUDP6Probe: BuildUDP probe, index 9, hop limit 1.
	// 2001:db8:1::2 > 2001:db8:2::2 next 17.
	fxUDP6Probe = fx(`
		60020d2e0018110120010db800010000000000000000000220010db80002000000000000000000029c40829a001840c2
		686f70635eed1e55000900000000ee89`)
	// fxTE6UDPProbe: ICMPv6 time exceeded quoting fxUDP6Probe.
	// 2001:db8:1::1 > 2001:db8:1::2 next 58.
	fxTE6UDPProbe = fx(`
		60097a4c00483a4020010db800010000000000000000000120010db8000100000000000000000002030022e600000000
		60020d2e0018110120010db800010000000000000000000220010db80002000000000000000000029c40829a001840c2
		686f70635eed1e55000900000000ee89`)
	// fxEcho4Probe: BuildICMPEcho probe, index 10, TTL 1.
	// 198.18.1.2 > 198.18.2.2 proto 1.
	fxEcho4Probe = fx(`4500002c000a000001012a9fc6120102c6120202080040b91e55000a686f70635eed1e55000a0000000042c8`)
	// fxTE4EchoProbe: time exceeded quoting fxEcho4Probe.
	// 198.18.1.1 > 198.18.1.2 proto 1.
	fxTE4EchoProbe = fx(`
		45c000480f7400004001dc59c6120101c61201020b00f4ff000000004500002c000a000001012a9fc6120102c6120202
		080040b91e55000a686f70635eed1e55000a0000000042c8`)
	// fxEcho6Probe: BuildICMPEcho probe, index 11, hop limit 1.
	// 2001:db8:1::2 > 2001:db8:2::2 next 58.
	fxEcho6Probe = fx(`
		6001e20d00183a0120010db800010000000000000000000220010db8000200000000000000000002800040b91e55000b
		686f70635eed1e55000b000000006efa`)
	// fxTE6EchoProbe: ICMPv6 time exceeded quoting fxEcho6Probe.
	// 2001:db8:1::1 > 2001:db8:1::2 next 58.
	fxTE6EchoProbe = fx(`
		60097a4c00483a4020010db800010000000000000000000120010db80001000000000000000000020300253000000000
		6001e20d00183a0120010db800010000000000000000000220010db8000200000000000000000002800040b91e55000b
		686f70635eed1e55000b000000006efa`)
	// fxUDP4PortProbe: BuildUDP probe to a closed port, index 12.
	// 198.18.1.2 > 198.18.2.2 proto 17.
	fxUDP4PortProbe = fx(`4500002c000c00004011eb8cc6120102c61202029c40829a001840c5686f70635eed1e55000c00000000bad3`)
	// fxUDP6PortProbe: BuildUDP probe to a closed port, index 13.
	// 2001:db8:1::2 > 2001:db8:2::2 next 17.
	fxUDP6PortProbe = fx(`
		60020d2e0018114020010db800010000000000000000000220010db80002000000000000000000029c40829a001840c6
		686f70635eed1e55000d00000000ee81`)
	// fxPortUnreach6: ICMPv6 port unreachable from the server quoting fxUDP6PortProbe.
	// 2001:db8:2::2 > 2001:db8:1::2 next 58.
	fxPortUnreach6 = fx(`
		60037d2700483a3f20010db800020000000000000000000220010db8000100000000000000000002010424a200000000
		60020d2e0018113f20010db800010000000000000000000220010db80002000000000000000000029c40829a001840c6
		686f70635eed1e55000d00000000ee81`)
	// fxEcho4ReplyProbe: BuildICMPEcho probe to the server, index 14.
	// 198.18.1.2 > 198.18.2.2 proto 1.
	fxEcho4ReplyProbe = fx(`4500002c000e00004001eb9ac6120102c6120202080040b91e55000e686f70635eed1e55000e0000000042c0`)
	// fxEcho6ReplyProbe: BuildICMPEcho probe to the server, index 15.
	// 2001:db8:1::2 > 2001:db8:2::2 next 58.
	fxEcho6ReplyProbe = fx(`
		6001e20d00183a4020010db800010000000000000000000220010db8000200000000000000000002800040b91e55000f
		686f70635eed1e55000f000000006ef2`)
	// fxEchoReply6: ICMPv6 echo reply from the server to fxEcho6ReplyProbe.
	// 2001:db8:2::2 > 2001:db8:1::2 next 58.
	fxEchoReply6 = fx(`
		600638a600183a3f20010db800020000000000000000000220010db800010000000000000000000281003fb91e55000f
		686f70635eed1e55000f000000006ef2`)
	// fxUDP4BigProbe: 1400-byte BuildUDP probe with DF, index 16.
	// 198.18.1.2 > 198.18.2.2 proto 17.
	fxUDP4BigProbe = fx(`
		45000578001040004011a63cc6120102c61202029c40829a056440c9686f70635eed1e55001000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000b033`)
	// fxUDP6BigProbe: 1400-byte BuildUDP probe, index 17.
	// 2001:db8:1::2 > 2001:db8:2::2 next 17.
	fxUDP6BigProbe = fx(`
		60020d2e0550114020010db800010000000000000000000220010db80002000000000000000000029c40829a055040ca
		686f70635eed1e5500110000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000e409`)
	// fxPacketTooBig6: packet too big (MTU 1280) from the router, quoting 1232 bytes of fxUDP6BigProbe.
	// 2001:db8:1::1 > 2001:db8:1::2 next 58.
	fxPacketTooBig6 = fx(`
		60073f8b04d83a4020010db800010000000000000000000120010db80001000000000000000000020200fe2000000500
		60020d2e0550114020010db800010000000000000000000220010db80002000000000000000000029c40829a055040ca
		686f70635eed1e5500110000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000`)
	// fxSYN4ClosedProbe: BuildTCPSYN probe to closed port 81, index 18.
	// 198.18.1.2 > 198.18.2.2 proto 6.
	fxSYN4ClosedProbe = fx(`
		4500003c001200004006eb81c6120102c61202029c5200515eed001200000000a002faf0be3d0000020405b40402080a
		010203040000000001030307`)
	// fxSYN6ClosedProbe: BuildTCPSYN probe to closed port 81, index 18.
	// 2001:db8:1::2 > 2001:db8:2::2 next 6.
	fxSYN6ClosedProbe = fx(`
		6001d54e0028064020010db800010000000000000000000220010db80002000000000000000000029c5200515eed0012
		00000000a002faf0f1ed0000020405b40402080a010203040000000001030307`)
	// fxRST6: RST-ACK from the server answering fxSYN6ClosedProbe.
	// 2001:db8:2::2 > 2001:db8:1::2 next 6.
	fxRST6 = fx(`
		600ab0880014063f20010db800020000000000000000000220010db800010000000000000000000200519c5200000000
		5eed0013501400005b930000`)
	// fxSYN4OpenProbe: BuildTCPSYN probe to listening port 80, index 19.
	// 198.18.1.2 > 198.18.2.2 proto 6.
	fxSYN4OpenProbe = fx(`
		4500003c001300004006eb80c6120102c61202029c5300505eed001300000000a002faf0be3c0000020405b40402080a
		010203040000000001030307`)
	// fxSYNACK4: SYN-ACK from the server answering fxSYN4OpenProbe (MSS 1240: its MTU is 1280).
	// 198.18.2.2 > 198.18.1.2 proto 6.
	fxSYNACK4 = fx(`
		4500003c000040003f06ac93c6120202c612010200509c53e832669d5eed0014a012fe3c8f570000020404d80402080a
		1efa2800010203040103030a`)
	// fxSYN6OpenProbe: BuildTCPSYN probe to listening port 80, index 19.
	// 2001:db8:1::2 > 2001:db8:2::2 next 6.
	fxSYN6OpenProbe = fx(`
		6001d54e0028064020010db800010000000000000000000220010db80002000000000000000000029c5300505eed0013
		00000000a002faf0f1ec0000020405b40402080a010203040000000001030307`)
	// fxSYNACK6: SYN-ACK from the server answering fxSYN6OpenProbe (MSS 1220).
	// 2001:db8:2::2 > 2001:db8:1::2 next 6.
	fxSYNACK6 = fx(`
		600b029b0028063f20010db800020000000000000000000220010db800010000000000000000000200509c53bc63ae14
		5eed0014a012fed05ba70000020404c40402080adced7d92010203040103030a`)
	// fxProtoUnreach4: protocol unreachable from the server for IP protocol 253.
	// 198.18.2.2 > 198.18.1.2 proto 1.
	fxProtoUnreach4 = fx(`
		45c00038b67800003f013564c6120202c61201020302585a000000004500001c001400003ffdeba8c6120102c6120202
		686f70636865636b`)
	// fxParamProb6: ICMPv6 parameter problem (unrecognized next header 253) from the server.
	// 2001:db8:2::2 > 2001:db8:1::2 next 58.
	fxParamProb6 = fx(`
		6008364200383a3f20010db800020000000000000000000220010db80001000000000000000000020401e92200000006
		600a597b0008fd3f20010db800010000000000000000000220010db8000200000000000000000002686f70636865636b`)
	// fxBadOption4Probe: UDP probe with an IPv4 timestamp option of impossible length 2.
	// 198.18.1.2 > 198.18.2.2 proto 17.
	fxBadOption4Probe = fx(`46000030001500004011a57cc6120102c6120202440201019c40829a001840ce686f70635eed1e55001500000000bac1`)
	// fxParamProb4: parameter problem from the router, pointer at the bad option's length.
	// 198.18.1.1 > 198.18.1.2 proto 1.
	fxParamProb4 = fx(`
		45c0004c10e500004001dae4c6120101c61201020c006e521500000046000030001500004011a57cc6120102c6120202
		440201019c40829a001840ce686f70635eed1e55001500000000bac1`)
)

// Synthetic ICMP messages (without outer IP header), frozen from
// golang.org/x/net/icmp Message.Marshal as a router would build them.
var (
	// fxMPLS4: RFC 4950 time exceeded quoting fxUDP4Probe (padded to 128
	// bytes, RFC 4884 length 32 words) with labels 24005 and 16 (TC 5, S).
	fxMPLS4 = fx(`
		0b008432002000004500002c0008000001112a91c6120102c61202029c40829a001840c1686f70635eed1e5500080000
		0000badb0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000000000000000000020007e13000c0101
		05dc500100010b01`)
	// fxMPLS4Compat: fxMPLS4 from a pre-RFC 4884 router: length attribute
	// 0, extensions after a fixed 128-byte original datagram field.
	fxMPLS4Compat = fx(`
		0b008452000000004500002c0008000001112a91c6120102c61202029c40829a001840c1686f70635eed1e5500080000
		0000badb0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000000000000000000020007e13000c0101
		05dc500100010b01`)
	// fxMPLS4Long: time exceeded quoting the first 128 bytes of a 200-byte
	// BuildUDP probe (index 22), label 299776 (S, TTL 254).
	fxMPLS4Long = fx(`
		0b003e5600200000450000c800160000011129e7c6120102c61202029c40829a00b440cf686f70635eed1e5500160000
		000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		00000000000000000000000000000000000000000000000000000000000000000000000000000000200093c800080101
		493001fe`)
	// fxMPLS6: ICMPv6 time exceeded (router6 -> client6) quoting
	// fxUDP6Probe padded to 128 bytes (length 16 units of 8), label
	// 1048575 (TC 7, S, TTL 1).
	fxMPLS6 = fx(`
		0300129a1000000060020d2e0018110120010db800010000000000000000000220010db8000200000000000000000002
		9c40829a001840c2686f70635eed1e55000900000000ee89000000000000000000000000000000000000000000000000
		000000000000000000000000000000000000000000000000000000000000000000000000000000002000dff400080101
		ffffff01`)
	// fxIfInfo4: time exceeded quoting fxUDP4Probe with an RFC 5837
	// interface information extension (ifindex 2, 198.18.1.1, "eth0",
	// MTU 1500) instead of MPLS labels.
	fxIfInfo4 = fx(`
		0b008432002000004500002c0008000001112a91c6120102c61202029c40829a001840c1686f70635eed1e5500080000
		0000badb0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
		0000000000000000000000000000000000000000000000000000000000000000000000000000000020006414001c020f
		0000000200010000c61201010865746830000000000005dc`)
	// fxTrunc4: an RFC 792 minimal quote (IP header + 8 bytes) of
	// packetfx.SYN4Probe, as old routers send.
	fxTrunc4 = fx(`0b00f973000000004500003c0007000001062a8dc6120102c61202029c4700505eed0007`)
	// fxFrag6: ICMPv6 time exceeded quoting an IPv6 packet whose first
	// header is a fragment header (then UDP).
	fxFrag6 = fx(`
		0300e018000000006000000000182c0120010db800010000000000000000000220010db8000200000000000000000002
		11000001123456789c40829a001840c2`)
)

// icmpCase is one DecodeICMPv4/v6 fixture. Slices are compared by length
// (transportLen, echoLen) and, where it matters, by content in other tests.
type icmpCase struct {
	name         string
	in           []byte
	want         ICMPMessage
	transportLen int
	echoLen      int
	wantErr      []error // all must match errors.Is
}

// normalized returns m without its byte slices, and their lengths.
func normalized(m ICMPMessage) (ICMPMessage, int, int) {
	echoLen := len(m.EchoData)
	m.EchoData = nil
	tl := -1
	if m.Quoted != nil {
		q := *m.Quoted
		tl = len(q.Transport)
		q.Transport = nil
		m.Quoted = &q
	}
	return m, tl, echoLen
}

func describe(m ICMPMessage) string {
	s := fmt.Sprintf("%+v", m)
	if m.Quoted != nil {
		s += fmt.Sprintf("\n  quoted %+v", *m.Quoted)
		if m.Quoted.TCP != nil {
			s += fmt.Sprintf("\n  quoted tcp %+v", *m.Quoted.TCP)
		}
	}
	return s
}

func runICMPCases(t *testing.T, decode func([]byte) (ICMPMessage, error), cases []icmpCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.in)
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %v, want it to wrap %v", err, want)
				}
			}
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			g, tl, el := normalized(got)
			if !reflect.DeepEqual(g, tc.want) {
				t.Errorf("decoded\n %s\nwant\n %s", describe(g), describe(tc.want))
			}
			if tc.want.Quoted != nil && tl != tc.transportLen {
				t.Errorf("transport length %d, want %d", tl, tc.transportLen)
			}
			if el != tc.echoLen {
				t.Errorf("echo data length %d, want %d", el, tc.echoLen)
			}
		})
	}
}

// quotedTE is a time-exceeded message with quote q.
func quotedTE(family int, q Quoted) ICMPMessage {
	typ := 11
	if family == 6 {
		typ = 3
	}
	return ICMPMessage{Family: family, Kind: KindTimeExceeded, Type: typ, Quoted: &q}
}

// probe4 and probe6 are the quoted headers of capture.sh's probes.
func probe4(proto, ttl int, id uint16, totalLen int) Quoted {
	return Quoted{Family: 4, Src: client4, Dst: server4, Protocol: proto, TTL: ttl, IPID: id,
		TotalLen: totalLen, HeaderLen: 20}
}

func probe6(proto, hops int, flow uint32, totalLen int) Quoted {
	return Quoted{Family: 6, Src: client6, Dst: server6, Protocol: proto, TTL: hops, FlowLabel: flow,
		TotalLen: totalLen, HeaderLen: 40}
}

// linuxSYNOptions are the options of the SYN probes in the fixtures.
var probeSYNOptions = TCPOptions{MSS: 1460, WindowScale: 7, SACKPermit: true, Timestamps: true, TSVal: 0x01020304}

func TestDecodeICMPv4(t *testing.T) {
	kernelSYN := probe4(protoTCP, 1, 0xa6fd, 60)
	kernelSYN.DF = true
	kernelSYN.SrcPort, kernelSYN.DstPort, kernelSYN.TCPSeq = 51710, 80, 0x70da8c7a
	kernelSYN.TCP = &TCPSegment{SrcPort: 51710, DstPort: 80, Seq: 0x70da8c7a, Flags: FlagSYN, Window: 64240,
		DataOffset: 40, Options: TCPOptions{MSS: 1460, WindowScale: 10, SACKPermit: true, Timestamps: true, TSVal: 0xa6526a1f}}

	synProbe := probe4(protoTCP, 1, 7, 60)
	synProbe.SrcPort, synProbe.DstPort, synProbe.TCPSeq = 40007, 80, 0x5eed0007
	synProbe.TCP = &TCPSegment{SrcPort: 40007, DstPort: 80, Seq: 0x5eed0007, Flags: FlagSYN, Window: 64240,
		DataOffset: 40, Options: probeSYNOptions}

	truncSYN := synProbe
	truncSYN.TCP = nil

	udpProbe := probe4(protoUDP, 1, 8, 44)
	udpProbe.SrcPort, udpProbe.DstPort, udpProbe.UDPChecksum = 40000, 33434, 0x40c1

	udpPorts := udpProbe
	udpPorts.UDPChecksum = 0

	echoProbe := probe4(protoICMP, 1, 10, 44)
	echoProbe.ICMPType, echoProbe.ICMPID, echoProbe.ICMPSeq, echoProbe.ICMPChecksum = 8, 0x1e55, 10, 0x40b9

	portProbe := probe4(protoUDP, 63, 12, 44)
	portProbe.SrcPort, portProbe.DstPort, portProbe.UDPChecksum = 40000, 33434, 0x40c5

	bigProbe := probe4(protoUDP, 64, 16, 1400)
	bigProbe.DF = true
	bigProbe.SrcPort, bigProbe.DstPort, bigProbe.UDPChecksum = 40000, 33434, 0x40c9

	badOption := probe4(protoUDP, 64, 21, 48)
	badOption.HeaderLen = 24
	badOption.SrcPort, badOption.DstPort, badOption.UDPChecksum = 40000, 33434, 0x40ce

	longProbe := probe4(protoUDP, 1, 22, 200)
	longProbe.SrcPort, longProbe.DstPort, longProbe.UDPChecksum = 40000, 33434, 0x40cf

	mpls := []MPLSLabel{{Label: 24005, TTL: 1}, {Label: 16, TC: 5, S: true, TTL: 1}}
	withMPLS := func(m ICMPMessage, labels []MPLSLabel) ICMPMessage { m.MPLS = labels; return m }

	// A time exceeded with a quote of only n bytes.
	teQuoting := func(quote string) []byte {
		b := fx("0b000000 00000000" + quote)
		b[2], b[3] = 0, 0
		c := Checksum(b, 0)
		b[2], b[3] = byte(c>>8), byte(c)
		return b
	}
	te := ICMPMessage{Family: 4, Kind: KindTimeExceeded, Type: 11}

	runICMPCases(t, DecodeICMPv4, []icmpCase{
		{name: "time exceeded quoting a whole Linux SYN", in: ipv4Payload(t, packetfx.TE4KernelSYN),
			want: quotedTE(4, kernelSYN), transportLen: 40},
		{name: "time exceeded quoting a SYN probe", in: ipv4Payload(t, packetfx.TE4SYNProbe),
			want: quotedTE(4, synProbe), transportLen: 40},
		{name: "time exceeded quoting a UDP probe", in: ipv4Payload(t, packetfx.TE4UDPProbe),
			want: quotedTE(4, udpProbe), transportLen: 24},
		{name: "time exceeded quoting an echo probe", in: ipv4Payload(t, fxTE4EchoProbe),
			want: quotedTE(4, echoProbe), transportLen: 24},
		{name: "RFC 792 quote of 8 transport bytes", in: fxTrunc4,
			want: quotedTE(4, truncSYN), transportLen: 8},
		{name: "port unreachable", in: ipv4Payload(t, packetfx.PortUnreach4),
			want: ICMPMessage{Family: 4, Kind: KindDestUnreachable, Type: 3, Code: 3, Quoted: &portProbe}, transportLen: 24},
		{name: "frag needed MTU 1280", in: ipv4Payload(t, packetfx.FragNeeded4),
			want: ICMPMessage{Family: 4, Kind: KindDestUnreachable, Type: 3, Code: 4, MTU: 1280, Quoted: &bigProbe}, transportLen: 528},
		{name: "protocol unreachable", in: ipv4Payload(t, fxProtoUnreach4),
			want: ICMPMessage{Family: 4, Kind: KindDestUnreachable, Type: 3, Code: 2, Quoted: &Quoted{Family: 4,
				Src: client4, Dst: server4, Protocol: 253, TTL: 63, IPID: 20, TotalLen: 28, HeaderLen: 20}}, transportLen: 8},
		{name: "parameter problem", in: ipv4Payload(t, fxParamProb4),
			want: ICMPMessage{Family: 4, Kind: KindParamProblem, Type: 12, Pointer: 21, Quoted: &badOption}, transportLen: 24},
		{name: "echo reply", in: ipv4Payload(t, packetfx.EchoReply4),
			want: ICMPMessage{Family: 4, Kind: KindEchoReply, EchoID: 0x1e55, EchoSeq: 14}, echoLen: 16},
		{name: "echo request is other", in: ipv4Payload(t, fxEcho4Probe),
			want: ICMPMessage{Family: 4, Kind: KindOther, Type: 8, EchoID: 0x1e55, EchoSeq: 10}, echoLen: 16},
		{name: "MPLS extension, padding cut at quoted total length", in: fxMPLS4,
			want: withMPLS(quotedTE(4, udpProbe), mpls), transportLen: 24},
		{name: "MPLS extension without RFC 4884 length", in: fxMPLS4Compat,
			want: withMPLS(quotedTE(4, udpProbe), mpls), transportLen: 24},
		{name: "MPLS extension after 128 bytes of a longer datagram", in: fxMPLS4Long,
			want: withMPLS(quotedTE(4, longProbe), []MPLSLabel{{Label: 299776, S: true, TTL: 254}}), transportLen: 108},
		{name: "RFC 5837 interface extension: no labels, padding cut", in: fxIfInfo4,
			want: quotedTE(4, udpProbe), transportLen: 24},
		{name: "quote of 4 transport bytes", in: teQuoting("4500002c0008000001112a91c6120102c61202029c40829a"),
			want: quotedTE(4, udpPorts), transportLen: 4},
		{name: "unknown type", in: fx("ff00000000000000deadbeef"),
			want: ICMPMessage{Family: 4, Kind: KindOther, Type: 255}},
		{name: "redirect is other", in: fx("0501000000000000" + "4500002c0008000001112a91c6120102c61202029c40829a001840c1"),
			want: ICMPMessage{Family: 4, Kind: KindOther, Type: 5, Code: 1}},
		{name: "empty", in: nil, wantErr: []error{ErrTruncated}},
		{name: "shorter than a header", in: fx("0b0000000000"), wantErr: []error{ErrTruncated}},
		{name: "time exceeded without quote", in: teQuoting(""),
			want: te, wantErr: []error{ErrBadQuote, ErrTruncated}},
		{name: "quote cut inside the IP header", in: teQuoting("4500003c00070000010600000000"),
			want: te, wantErr: []error{ErrBadQuote, ErrTruncated}},
		{name: "quote is IPv6", in: teQuoting("6001d54e0028060120010db8000100000000000000000002"),
			want: te, wantErr: []error{ErrBadQuote, ErrBadVersion}},
		{name: "quote IHL below 5", in: teQuoting("4400003c0007000001062a8dc6120102c61202029c4700505eed0007"),
			want: te, wantErr: []error{ErrBadQuote, ErrMalformed}},
		{name: "quote IHL beyond the quote", in: teQuoting("4f00003c0007000001062a8dc6120102c6120202"),
			want: te, wantErr: []error{ErrBadQuote, ErrTruncated}},
	})
}

func TestDecodeICMPv6(t *testing.T) {
	kernelSYN := probe6(protoTCP, 1, 0xa38a7, 80)
	kernelSYN.SrcPort, kernelSYN.DstPort, kernelSYN.TCPSeq = 59242, 80, 0x41479865
	kernelSYN.TCP = &TCPSegment{SrcPort: 59242, DstPort: 80, Seq: 0x41479865, Flags: FlagSYN, Window: 64800,
		DataOffset: 40, Options: TCPOptions{MSS: 1440, WindowScale: 10, SACKPermit: true, Timestamps: true, TSVal: 0x4ca610fd}}

	synProbe := probe6(protoTCP, 1, 0x1d54e, 80)
	synProbe.SrcPort, synProbe.DstPort, synProbe.TCPSeq = 40007, 80, 0x5eed0007
	synProbe.TCP = &TCPSegment{SrcPort: 40007, DstPort: 80, Seq: 0x5eed0007, Flags: FlagSYN, Window: 64240,
		DataOffset: 40, Options: probeSYNOptions}

	udpProbe := probe6(protoUDP, 1, 0x20d2e, 64)
	udpProbe.SrcPort, udpProbe.DstPort, udpProbe.UDPChecksum = 40000, 33434, 0x40c2

	echoProbe := probe6(protoICMPv6, 1, 0x1e20d, 64)
	echoProbe.ICMPType, echoProbe.ICMPID, echoProbe.ICMPSeq, echoProbe.ICMPChecksum = 128, 0x1e55, 11, 0x40b9

	portProbe := probe6(protoUDP, 63, 0x20d2e, 64)
	portProbe.SrcPort, portProbe.DstPort, portProbe.UDPChecksum = 40000, 33434, 0x40c6

	bigProbe := probe6(protoUDP, 64, 0x20d2e, 1400)
	bigProbe.SrcPort, bigProbe.DstPort, bigProbe.UDPChecksum = 40000, 33434, 0x40ca

	fragQuote := Quoted{Family: 6, Src: client6, Dst: server6, Protocol: 44, TTL: 1, TotalLen: 64, HeaderLen: 40}

	withMPLS := quotedTE(6, udpProbe)
	withMPLS.MPLS = []MPLSLabel{{Label: 1048575, TC: 7, S: true, TTL: 1}}

	te := ICMPMessage{Family: 6, Kind: KindTimeExceeded, Type: 3}

	runICMPCases(t, DecodeICMPv6, []icmpCase{
		{name: "time exceeded quoting a whole Linux SYN", in: ipv6Payload(fxTE6KernelSYN),
			want: quotedTE(6, kernelSYN), transportLen: 40},
		{name: "time exceeded quoting a SYN probe", in: ipv6Payload(packetfx.TE6SYNProbe),
			want: quotedTE(6, synProbe), transportLen: 40},
		{name: "time exceeded quoting a UDP probe", in: ipv6Payload(fxTE6UDPProbe),
			want: quotedTE(6, udpProbe), transportLen: 24},
		{name: "time exceeded quoting an echo probe", in: ipv6Payload(fxTE6EchoProbe),
			want: quotedTE(6, echoProbe), transportLen: 24},
		{name: "port unreachable", in: ipv6Payload(fxPortUnreach6),
			want: ICMPMessage{Family: 6, Kind: KindDestUnreachable, Type: 1, Code: 4, Quoted: &portProbe}, transportLen: 24},
		{name: "packet too big MTU 1280", in: ipv6Payload(fxPacketTooBig6),
			want: ICMPMessage{Family: 6, Kind: KindPacketTooBig, Type: 2, MTU: 1280, Quoted: &bigProbe}, transportLen: 1192},
		{name: "parameter problem, unknown next header", in: ipv6Payload(fxParamProb6),
			want: ICMPMessage{Family: 6, Kind: KindParamProblem, Type: 4, Code: 1, Pointer: 6, Quoted: &Quoted{Family: 6,
				Src: client6, Dst: server6, Protocol: 253, TTL: 63, FlowLabel: 0xa597b, TotalLen: 48, HeaderLen: 40}}, transportLen: 8},
		{name: "echo reply", in: ipv6Payload(fxEchoReply6),
			want: ICMPMessage{Family: 6, Kind: KindEchoReply, Type: 129, EchoID: 0x1e55, EchoSeq: 15}, echoLen: 16},
		{name: "echo request is other", in: ipv6Payload(fxEcho6Probe),
			want: ICMPMessage{Family: 6, Kind: KindOther, Type: 128, EchoID: 0x1e55, EchoSeq: 11}, echoLen: 16},
		{name: "MPLS extension, padding cut at quoted payload length", in: fxMPLS6,
			want: withMPLS, transportLen: 24},
		{name: "quote starts with an extension header", in: fxFrag6,
			want: quotedTE(6, fragQuote), transportLen: 16},
		{name: "neighbour solicitation is other", in: fx("870000000000000020010db8000100000000000000000001"),
			want: ICMPMessage{Family: 6, Kind: KindOther, Type: 135}},
		{name: "empty", in: nil, wantErr: []error{ErrTruncated}},
		{name: "time exceeded without quote", in: fx("0300000000000000"),
			want: te, wantErr: []error{ErrBadQuote, ErrTruncated}},
		{name: "quote cut inside the IPv6 header", in: fx("03000000000000006001d54e0028060120010db8"),
			want: te, wantErr: []error{ErrBadQuote, ErrTruncated}},
		{name: "quote is IPv4", in: fx("0300000000000000" + "4500002c0008000001112a91c6120102c61202029c40829a001840c1686f70635eed1e5500080000"),
			want: te, wantErr: []error{ErrBadQuote, ErrBadVersion}},
	})
}

// TestQuotedTransportBytes checks the transport bytes themselves, not only
// their length: they are the real quoted bytes, without RFC 4884 padding.
func TestQuotedTransportBytes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		decode func([]byte) (ICMPMessage, error)
		in     []byte
		want   []byte
	}{
		{"v4 full quote", DecodeICMPv4, ipv4Payload(t, packetfx.TE4SYNProbe), packetfx.SYN4Probe[20:]},
		{"v4 MPLS padded", DecodeICMPv4, fxMPLS4, fxUDP4Probe[20:]},
		{"v4 MPLS compat", DecodeICMPv4, fxMPLS4Compat, fxUDP4Probe[20:]},
		{"v4 interface extension", DecodeICMPv4, fxIfInfo4, fxUDP4Probe[20:]},
		{"v4 truncated", DecodeICMPv4, fxTrunc4, packetfx.SYN4Probe[20:28]},
		{"v4 frag needed", DecodeICMPv4, ipv4Payload(t, packetfx.FragNeeded4), fxUDP4BigProbe[20:548]},
		{"v6 full quote", DecodeICMPv6, ipv6Payload(fxTE6UDPProbe), fxUDP6Probe[40:]},
		{"v6 MPLS padded", DecodeICMPv6, fxMPLS6, fxUDP6Probe[40:]},
		{"v6 packet too big", DecodeICMPv6, ipv6Payload(fxPacketTooBig6), fxUDP6BigProbe[40:1232]},
	} {
		m, err := tc.decode(tc.in)
		if err != nil || m.Quoted == nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := m.Quoted.Transport; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: transport\n %x\nwant\n %x", tc.name, got, tc.want)
		}
	}
}

// TestDecodeICMPDoesNotAlias makes sure decoded slices do not share the
// input buffer, which raw-socket readers reuse.
func TestDecodeICMPDoesNotAlias(t *testing.T) {
	in := append([]byte(nil), ipv4Payload(t, packetfx.TE4UDPProbe)...)
	m, err := DecodeICMPv4(in)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), m.Quoted.Transport...)
	for i := range in {
		in[i] = 0xee
	}
	if !reflect.DeepEqual(m.Quoted.Transport, want) {
		t.Errorf("transport changed with the input buffer")
	}
}

func TestDecodeIPv4Header(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    IPv4Header
		wantErr error
	}{
		{name: "router's time exceeded", in: packetfx.TE4KernelSYN, want: IPv4Header{HeaderLen: 20, TotalLen: 88, ID: 0x0dc7,
			TTL: 64, Protocol: 1, Src: router4, Dst: client4, TOS: 0xc0}},
		{name: "kernel SYN with DF", in: fxSYN4Kernel, want: IPv4Header{HeaderLen: 20, TotalLen: 60, ID: 0xa6fd,
			DF: true, TTL: 1, Protocol: 6, Src: client4, Dst: server4}},
		{name: "options", in: fxBadOption4Probe, want: IPv4Header{HeaderLen: 24, TotalLen: 48, ID: 21,
			TTL: 64, Protocol: 17, Src: client4, Dst: server4}},
		{name: "header only", in: fxSYN4Kernel[:20], want: IPv4Header{HeaderLen: 20, TotalLen: 60, ID: 0xa6fd,
			DF: true, TTL: 1, Protocol: 6, Src: client4, Dst: server4}},
		{name: "fragment", in: fx("4500001c1234 2171 4011 0000 c6120102c6120202 0000000000000000"),
			want: IPv4Header{HeaderLen: 20, TotalLen: 28, ID: 0x1234, MoreFragments: true, FragOffset: 0x171 * 8,
				TTL: 64, Protocol: 17, Src: client4, Dst: server4}},
		{name: "empty", in: nil, wantErr: ErrTruncated},
		{name: "19 bytes", in: fxSYN4Kernel[:19], wantErr: ErrTruncated},
		{name: "IPv6", in: fxSYN6Kernel, wantErr: ErrBadVersion},
		{name: "IHL 4", in: fx("4400003c0007000001062a8dc6120102c6120202"), wantErr: ErrMalformed},
		{name: "options cut", in: fxBadOption4Probe[:22], wantErr: ErrTruncated},
	} {
		got, err := DecodeIPv4Header(tc.in)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.wantErr)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestDecodeIPv4Packet(t *testing.T) {
	padded := append(append([]byte(nil), packetfx.RST4...), 0, 0, 0, 0, 0, 0) // Ethernet minimum-frame padding
	tso := append([]byte(nil), fxSYN4Kernel...)
	tso[2], tso[3] = 0, 0
	short := append([]byte(nil), fxSYN4Kernel...)
	short[3] = 19
	for _, tc := range []struct {
		name        string
		in          []byte
		wantPayload []byte
		wantErr     error
	}{
		{"exact", fxSYN4Kernel, fxSYN4Kernel[20:], nil},
		{"link padding dropped", padded, packetfx.RST4[20:], nil},
		{"options skipped", fxBadOption4Probe, fxBadOption4Probe[24:], nil},
		{"total length 0 means the rest", tso, fxSYN4Kernel[20:], nil},
		{"truncated keeps what is there", fxSYN4Kernel[:30], fxSYN4Kernel[20:30], ErrTruncated},
		{"total length below header", short, nil, ErrMalformed},
		{"not IPv4", fxSYN6Kernel, nil, ErrBadVersion},
	} {
		h, p, err := DecodeIPv4Packet(tc.in)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.wantErr)
		}
		if !reflect.DeepEqual(p, tc.wantPayload) {
			t.Errorf("%s: payload %x, want %x", tc.name, p, tc.wantPayload)
		}
		if tc.wantErr == nil && (h.Src != client4 && h.Src != server4) {
			t.Errorf("%s: header %+v", tc.name, h)
		}
	}
}

func TestDecodeTCPSegment(t *testing.T) {
	noOpts := TCPOptions{WindowScale: -1}
	// hdr is a 20-byte header with data offset words*4 followed by opts.
	hdr := func(words int, opts string) []byte {
		b := fx("9c530050 5eed0013 00000000 0002 faf0 0000 0000" + opts)
		b[12] = byte(words << 4)
		return b
	}
	base := TCPSegment{SrcPort: 40019, DstPort: 80, Seq: 0x5eed0013, Flags: FlagSYN, Window: 64240}
	with := func(off int, o TCPOptions, payload int) TCPSegment {
		s := base
		s.DataOffset, s.Options, s.PayloadLen = off, o, payload
		return s
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    TCPSegment
		wantErr error
	}{
		{name: "Linux SYN-ACK", in: ipv4Payload(t, fxSYNACK4), want: TCPSegment{SrcPort: 80, DstPort: 40019,
			Seq: 0xe832669d, Ack: 0x5eed0014, Flags: FlagSYN | FlagACK, Window: 65084, DataOffset: 40,
			Options: TCPOptions{MSS: 1240, WindowScale: 10, SACKPermit: true, Timestamps: true, TSVal: 0x1efa2800, TSEcr: 0x01020304}}},
		{name: "Linux SYN-ACK v6", in: ipv6Payload(fxSYNACK6), want: TCPSegment{SrcPort: 80, DstPort: 40019,
			Seq: 0xbc63ae14, Ack: 0x5eed0014, Flags: FlagSYN | FlagACK, Window: 65232, DataOffset: 40,
			Options: TCPOptions{MSS: 1220, WindowScale: 10, SACKPermit: true, Timestamps: true, TSVal: 0xdced7d92, TSEcr: 0x01020304}}},
		{name: "Linux RST-ACK", in: ipv4Payload(t, packetfx.RST4), want: TCPSegment{SrcPort: 81, DstPort: 40018,
			Ack: 0x5eed0013, Flags: FlagRST | FlagACK, DataOffset: 20, Options: noOpts}},
		{name: "SYN probe", in: packetfx.SYN4Probe[20:], want: TCPSegment{SrcPort: 40007, DstPort: 80, Seq: 0x5eed0007,
			Flags: FlagSYN, Window: 64240, DataOffset: 40, Options: probeSYNOptions}},
		{name: "payload", in: append(hdr(5, ""), "hello"...), want: with(20, noOpts, 5)},
		{name: "EOL ends options", in: hdr(7, "00 020405b4 000000"), want: with(28, noOpts, 0)},
		{name: "NOPs", in: hdr(6, "01 03030e"), want: with(24, TCPOptions{WindowScale: 14}, 0)},
		{name: "window scale above 14 reported as sent", in: hdr(6, "01 030320"), want: with(24, TCPOptions{WindowScale: 32}, 0)},
		{name: "zero length stops parsing", in: hdr(7, "020405b4 0800 0101"), want: with(28, TCPOptions{MSS: 1460, WindowScale: -1}, 0)},
		{name: "length 1 stops parsing", in: hdr(6, "0201 0402"), want: with(24, noOpts, 0)},
		{name: "option past the header stops parsing", in: hdr(6, "0402 080a"), want: with(24, TCPOptions{SACKPermit: true, WindowScale: -1}, 0)},
		{name: "kind without length byte", in: hdr(6, "010101 02"), want: with(24, noOpts, 0)},
		{name: "wrong-size MSS skipped", in: hdr(7, "020305 0402 010101"), want: with(28, TCPOptions{SACKPermit: true, WindowScale: -1}, 0)},
		{name: "unknown option skipped", in: hdr(8, "1e0600000000 020405b4 0000"), want: with(32, TCPOptions{MSS: 1460, WindowScale: -1}, 0)},
		{name: "empty", in: nil, wantErr: ErrTruncated},
		{name: "8 quoted bytes", in: packetfx.SYN4Probe[20:28], wantErr: ErrTruncated},
		{name: "data offset 4", in: hdr(4, ""), wantErr: ErrMalformed},
		{name: "data offset past the end", in: hdr(15, "0101"), wantErr: ErrTruncated},
	} {
		got, err := DecodeTCPSegment(tc.in)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.wantErr)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

// TestSyntheticFixturesProvenance re-marshals the synthetic fixtures with
// x/net/icmp, so they stay what their comments say.
func TestSyntheticFixturesProvenance(t *testing.T) {
	marshal := func(body *icmp.TimeExceeded) []byte {
		m := icmp.Message{Type: ipv4.ICMPTypeTimeExceeded, Body: body}
		b, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	te4 := func(data []byte, labels ...icmp.MPLSLabel) []byte {
		return marshal(&icmp.TimeExceeded{Data: data,
			Extensions: []icmp.Extension{&icmp.MPLSLabelStack{Class: 1, Type: 1, Labels: labels}}})
	}
	te6 := func(data []byte, exts ...icmp.Extension) []byte {
		m := icmp.Message{Type: ipv6.ICMPTypeTimeExceeded, Body: &icmp.TimeExceeded{Data: data, Extensions: exts}}
		b, err := m.Marshal(icmp.IPv6PseudoHeader(router6.AsSlice(), client6.AsSlice()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withChecksum := func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[2], b[3] = 0, 0
		c := Checksum(b, 0)
		b[2], b[3] = byte(c>>8), byte(c)
		return b
	}
	compat := append([]byte(nil), fxMPLS4...)
	compat[5] = 0

	udp, err := BuildUDP(client4, server4, 40000, 33434, fixtureIdent.UDPChecksum(22), fixtureIdent.Payload(22, 172))
	if err != nil {
		t.Fatal(err)
	}
	long, err := BuildIPv4(client4, server4, protoUDP, 1, 22, false, udp)
	if err != nil {
		t.Fatal(err)
	}
	frag := fx("6000000000182c01" + hex.EncodeToString(client6.AsSlice()) + hex.EncodeToString(server6.AsSlice()) +
		"1100000112345678" + "9c40829a001840c2")

	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"fxMPLS4", te4(fxUDP4Probe, icmp.MPLSLabel{Label: 24005, TTL: 1}, icmp.MPLSLabel{Label: 16, TC: 5, S: true, TTL: 1}), fxMPLS4},
		{"fxMPLS4Compat", withChecksum(compat), fxMPLS4Compat},
		{"fxMPLS4Long", te4(long[:128], icmp.MPLSLabel{Label: 299776, S: true, TTL: 254}), fxMPLS4Long},
		{"fxMPLS6", te6(fxUDP6Probe, &icmp.MPLSLabelStack{Class: 1, Type: 1,
			Labels: []icmp.MPLSLabel{{Label: 1048575, TC: 7, S: true, TTL: 1}}}), fxMPLS6},
		{"fxIfInfo4", marshal(&icmp.TimeExceeded{Data: fxUDP4Probe, Extensions: []icmp.Extension{&icmp.InterfaceInfo{
			Class: 2, Type: 0x0f, Interface: &net.Interface{Index: 2, Name: "eth0", MTU: 1500},
			Addr: &net.IPAddr{IP: net.IP(router4.AsSlice())}}}}), fxIfInfo4},
		{"fxTrunc4", withChecksum(append(fx("0b00000000000000"), packetfx.SYN4Probe[:28]...)), fxTrunc4},
		{"fxFrag6", te6(frag), fxFrag6},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: marshals to\n%x\nfixture is\n%x", tc.name, tc.got, tc.want)
		}
	}
}

func BenchmarkDecodeICMPv4(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"time-exceeded", ipv4Payload(b, packetfx.TE4SYNProbe)},
		{"mpls", fxMPLS4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeICMPv4(bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMPLSOtherCType ignores label stack objects of a C-Type other than 1
// (incoming stack, the only one RFC 4950 defines).
func TestMPLSOtherCType(t *testing.T) {
	m := icmp.Message{Type: ipv4.ICMPTypeTimeExceeded, Body: &icmp.TimeExceeded{Data: fxUDP4Probe,
		Extensions: []icmp.Extension{
			&icmp.MPLSLabelStack{Class: 1, Type: 2, Labels: []icmp.MPLSLabel{{Label: 99, S: true, TTL: 1}}},
			&icmp.MPLSLabelStack{Class: 1, Type: 1, Labels: []icmp.MPLSLabel{{Label: 100, S: true, TTL: 1}}},
		}}}
	b, err := m.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	// x/net always writes C-Type 1: patch the first object's and redo the
	// extension checksum. Extension header at 8+128, first object after it.
	const ext = 8 + 128
	if b[ext+4+2] != 1 || b[ext+4+3] != 1 {
		t.Fatalf("unexpected layout %x", b[ext:])
	}
	b[ext+4+3] = 2
	b[ext+2], b[ext+3] = 0, 0
	c := Checksum(b[ext:], 0)
	b[ext+2], b[ext+3] = byte(c>>8), byte(c)
	got, err := DecodeICMPv4(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []MPLSLabel{{Label: 100, S: true, TTL: 1}}; !reflect.DeepEqual(got.MPLS, want) {
		t.Errorf("labels %+v, want %+v", got.MPLS, want)
	}
}
