package probe

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/hopcheck/hopcheck/internal/packetfx"
	"golang.org/x/net/icmp"
)

// refChecksum is a deliberately plain RFC 1071 checksum over the
// concatenation of parts, kept apart from Checksum so that the builders'
// arithmetic is not checked with itself.
func refChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var sum uint32
	for i := 0; i < len(all); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(all[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// refPseudoHeader spells out the RFC 768 / RFC 8200 pseudo-header.
func refPseudoHeader(src, dst netip.Addr, proto byte, length int) []byte {
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		h := append(a[:], b[:]...)
		return append(h, 0, proto, byte(length>>8), byte(length))
	}
	a, b := src.As16(), dst.As16()
	h := append(a[:], b[:]...)
	return append(h, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
}

// recomputed returns the checksum a receiver would compute for seg with
// its checksum field (at off) zeroed.
func recomputed(pseudo, seg []byte, off int) uint16 {
	c := bytes.Clone(seg)
	c[off], c[off+1] = 0, 0
	return refChecksum(pseudo, c)
}

func TestBuildMatchesProbesLinuxAnswered(t *testing.T) {
	// The captured probes were accepted by Linux (it answered them with
	// RST, SYN-ACK, echo reply and port unreachable, which it only does for
	// valid checksums); the builders must keep producing exactly them.
	synOpts := DefaultSYNOptions()
	synOpts.TSVal = 0x01020304
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id := fixtureIdent
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"SYN v4 in IPv4", must(BuildIPv4(client4, server4, protoTCP, 1, 7, false,
			must(BuildTCPSYN(client4, server4, 40007, 80, id.TCPSeq(7), 64240, synOpts)))), packetfx.SYN4Probe},
		{"SYN v6", must(BuildTCPSYN(client6, server6, 40007, 80, id.TCPSeq(7), 64240, synOpts)), fxSYN6Probe[40:]},
		{"SYN to open port v4", must(BuildTCPSYN(client4, server4, 40019, 80, id.TCPSeq(19), 64240, synOpts)), fxSYN4OpenProbe[20:]},
		{"UDP v4 in IPv4", must(BuildIPv4(client4, server4, protoUDP, 1, 8, false,
			must(BuildUDP(client4, server4, 40000, 33434, id.UDPChecksum(8), id.Payload(8, 16))))), fxUDP4Probe},
		{"UDP v6", must(BuildUDP(client6, server6, 40000, 33434, id.UDPChecksum(9), id.Payload(9, 16))), fxUDP6Probe[40:]},
		{"UDP 1400 DF", must(BuildIPv4(client4, server4, protoUDP, 64, 16, true,
			must(BuildUDP(client4, server4, 40000, 33434, id.UDPChecksum(16), id.Payload(16, 1372))))), fxUDP4BigProbe},
		{"echo v4", must(BuildICMPEcho(4, client4, server4, id.ICMPID(), 14, id.FlowChecksum(0), id.Payload(14, 16))), fxEcho4ReplyProbe[20:]},
		{"echo v6", must(BuildICMPEcho(6, client6, server6, id.ICMPID(), 15, id.FlowChecksum(0), id.Payload(15, 16))), fxEcho6ReplyProbe[40:]},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got %x\nwant %x", tc.name, tc.got, tc.want)
		}
	}
}

func TestBuildTCPSYNOptionLayout(t *testing.T) {
	const ts = "01020304"
	for _, tc := range []struct {
		name string
		opt  SYNOptions
		want string // option bytes, hex
	}{
		{"Linux default", SYNOptions{MSS: 1460, WindowScale: 7, SACKPermitted: true, Timestamps: true, TSVal: 0x01020304},
			"020405b4 0402080a" + ts + "00000000 01030307"},
		{"no timestamps", SYNOptions{MSS: 1460, WindowScale: 7, SACKPermitted: true},
			"020405b4 01010402 01030307"},
		{"no SACK", SYNOptions{MSS: 1460, WindowScale: 7, Timestamps: true, TSVal: 0x01020304},
			"020405b4 0101080a" + ts + "00000000 01030307"},
		{"no window scale", SYNOptions{MSS: 536, WindowScale: -1, SACKPermitted: true, Timestamps: true, TSVal: 0x01020304},
			"02040218 0402080a" + ts + "00000000"},
		{"window scale 0 is sent", SYNOptions{WindowScale: 0}, "01030300"},
		{"nothing", SYNOptions{WindowScale: -1}, ""},
	} {
		b, err := BuildTCPSYN(client4, server4, 40000, 80, 1, 64240, tc.opt)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := fx(tc.want)
		if got := b[20:]; !bytes.Equal(got, want) {
			t.Errorf("%s: options %x, want %x", tc.name, got, want)
		}
		seg, err := DecodeTCPSegment(b)
		if err != nil || seg.DataOffset != 20+len(want) || seg.Flags != FlagSYN {
			t.Errorf("%s: decodes to %+v, %v", tc.name, seg, err)
		}
	}

	// Same bytes as the kernel's own SYN (fxSYN4Kernel: WS 10), but for
	// the checksum: the kernel's was left to offload (see fixture).
	o := SYNOptions{MSS: 1460, WindowScale: 10, SACKPermitted: true, Timestamps: true, TSVal: 0xa6526a1f}
	b, err := BuildTCPSYN(client4, server4, 51710, 80, 0x70da8c7a, 64240, o)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(fxSYN4Kernel[20:])
	binary.BigEndian.PutUint16(want[16:], binary.BigEndian.Uint16(b[16:]))
	if !bytes.Equal(b, want) {
		t.Errorf("SYN like the kernel's:\n got %x\nwant %x", b, want)
	}
}

func TestBuildTCPChecksums(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		src, dst := client4, server4
		if i%2 == 1 {
			src, dst = client6, server6
		}
		payload := make([]byte, r.IntN(40))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		flags := TCPFlags(r.Uint32())
		seq, ack, win := r.Uint32(), r.Uint32(), uint16(r.Uint32())
		b, err := BuildTCPSegment(src, dst, 40000, 443, seq, ack, flags, win, payload)
		if err != nil {
			t.Fatal(err)
		}
		if c := refChecksum(refPseudoHeader(src, dst, protoTCP, len(b)), b); c != 0 {
			t.Fatalf("segment %x does not verify (%#04x)", b, c)
		}
		seg, err := DecodeTCPSegment(b)
		want := TCPSegment{SrcPort: 40000, DstPort: 443, Seq: seq, Ack: ack, Flags: flags, Window: win,
			DataOffset: 20, Options: TCPOptions{WindowScale: -1}, PayloadLen: len(payload)}
		if err != nil || seg != want || !bytes.Equal(b[20:], payload) {
			t.Fatalf("decodes to %+v, %v; want %+v", seg, err, want)
		}
	}
	// And gopacket agrees, on a v4 SYN inside a full packet.
	syn, err := BuildTCPSYN(client4, server4, 40000, 80, 1, 64240, DefaultSYNOptions())
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := BuildIPv4(client4, server4, protoTCP, 64, 1, true, syn)
	if err != nil {
		t.Fatal(err)
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatalf("gopacket finds no TCP in %x", pkt)
	}
	if err := tcp.SetNetworkLayerForChecksum(p.NetworkLayer()); err != nil {
		t.Fatal(err)
	}
	if err, res := tcp.VerifyChecksum(); err != nil || !res.Valid {
		t.Errorf("gopacket: checksum %+v, %v", res, err)
	}
}

func TestBuildUDPChecksumIsWanted(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	wants := []uint16{1, 2, 0x7fff, 0xfffe, 0xffff}
	for i := range 3000 {
		src, dst := client4, server4
		if i%2 == 1 {
			src, dst = client6, server6
		}
		want := uint16(r.IntN(0xffff)) + 1
		if i < len(wants) {
			want = wants[i]
		}
		payload := make([]byte, 2+r.IntN(60)) // odd and even lengths
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		orig := bytes.Clone(payload)
		sport, dport := uint16(r.Uint32()), uint16(r.Uint32())
		b, err := BuildUDP(src, dst, sport, dport, want, payload)
		if err != nil {
			t.Fatalf("want %#04x, %d-byte payload: %v", want, len(payload), err)
		}
		if !bytes.Equal(payload, orig) {
			t.Fatal("BuildUDP modified the caller's payload")
		}
		n := len(b)
		if n != 8+len(payload) || binary.BigEndian.Uint16(b[0:]) != sport || binary.BigEndian.Uint16(b[2:]) != dport ||
			int(binary.BigEndian.Uint16(b[4:])) != n || !bytes.Equal(b[8:n-2], payload[:len(payload)-2]) {
			t.Fatalf("bad datagram %x for payload %x", b, payload)
		}
		if got := binary.BigEndian.Uint16(b[6:]); got != want {
			t.Fatalf("checksum field %#04x, want %#04x", got, want)
		}
		ph := refPseudoHeader(src, dst, protoUDP, n)
		if c := refChecksum(ph, b); c != 0 {
			t.Fatalf("datagram %x does not verify (%#04x)", b, c)
		}
		got := recomputed(ph, b, 6)
		if got == 0 {
			got = 0xffff // RFC 768: a computed 0 is sent as all ones
		}
		if got != want {
			t.Fatalf("recomputed checksum %#04x, want %#04x (payload %d bytes)", got, want, len(payload))
		}
	}
}

func TestBuildUDPGopacketVerifies(t *testing.T) {
	for _, want := range []uint16{1, 0x1234, 0xffff} {
		u, err := BuildUDP(client4, server4, 40000, 33434, want, fixtureIdent.Payload(3, 21))
		if err != nil {
			t.Fatal(err)
		}
		pkt, err := BuildIPv4(client4, server4, protoUDP, 1, 3, false, u)
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
		udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("gopacket finds no UDP in %x", pkt)
		}
		if err := udp.SetNetworkLayerForChecksum(p.NetworkLayer()); err != nil {
			t.Fatal(err)
		}
		if err, res := udp.VerifyChecksum(); err != nil || !res.Valid {
			t.Errorf("want %#04x: gopacket says %+v, %v", want, res, err)
		}
	}
}

func TestBuildICMPEchoChecksumIsWanted(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		family, src, dst, proto := 4, client4, server4, 1
		if i%2 == 1 {
			family, src, dst, proto = 6, client6, server6, 58
		}
		want := uint16(r.IntN(0xffff)) // 0..0xfffe
		if i < 2 {
			want = 0
		}
		id, seq := uint16(r.Uint32()), uint16(r.Uint32())
		payload := make([]byte, 2+r.IntN(60))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		b, err := BuildICMPEcho(family, src, dst, id, seq, want, payload)
		if err != nil {
			t.Fatalf("want %#04x: %v", want, err)
		}
		m, err := icmp.ParseMessage(proto, b)
		if err != nil {
			t.Fatalf("x/net cannot parse %x: %v", b, err)
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || m.Code != 0 || echo.ID != int(id) || echo.Seq != int(seq) ||
			!bytes.Equal(echo.Data[:len(payload)-2], payload[:len(payload)-2]) || m.Checksum != int(want) {
			t.Fatalf("x/net parses %x as %+v %+v", b, m, m.Body)
		}
		var ph []byte
		if family == 6 {
			ph = refPseudoHeader(src, dst, protoICMPv6, len(b))
			if m.Type.Protocol() != 58 || b[0] != 128 {
				t.Fatalf("not an ICMPv6 echo request: %x", b)
			}
		} else if b[0] != 8 {
			t.Fatalf("not an echo request: %x", b)
		}
		if c := refChecksum(ph, b); c != 0 {
			t.Fatalf("message %x does not verify (%#04x)", b, c)
		}
		if got := recomputed(ph, b, 2); got != want {
			t.Fatalf("recomputed checksum %#04x, want %#04x", got, want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	v4, v6 := client4, client6
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"IPv4 with IPv6 address", func() error { _, err := BuildIPv4(v4, v6, 6, 1, 0, false, nil); return err }, "not both IPv4"},
		{"IPv4 ttl 256", func() error { _, err := BuildIPv4(v4, v4, 6, 256, 0, false, nil); return err }, "ttl 256"},
		{"IPv4 protocol -1", func() error { _, err := BuildIPv4(v4, v4, -1, 1, 0, false, nil); return err }, "protocol -1"},
		{"IPv4 too long", func() error { _, err := BuildIPv4(v4, v4, 6, 1, 0, false, make([]byte, 65516)); return err }, "above 65535"},
		{"SYN mixed families", func() error { _, err := BuildTCPSYN(v4, v6, 1, 2, 0, 0, DefaultSYNOptions()); return err }, "not of one IP family"},
		{"SYN invalid address", func() error { _, err := BuildTCPSYN(netip.Addr{}, v4, 1, 2, 0, 0, DefaultSYNOptions()); return err }, "not of one IP family"},
		{"SYN MSS 65536", func() error {
			_, err := BuildTCPSYN(v4, v4, 1, 2, 0, 0, SYNOptions{MSS: 65536, WindowScale: -1})
			return err
		}, "mss 65536"},
		{"SYN window scale 256", func() error { _, err := BuildTCPSYN(v4, v4, 1, 2, 0, 0, SYNOptions{WindowScale: 256}); return err }, "window scale 256"},
		{"TCP segment too long", func() error {
			_, err := BuildTCPSegment(v4, v4, 1, 2, 0, 0, FlagACK, 0, make([]byte, 65516))
			return err
		}, "above 65535"},
		{"UDP checksum 0", func() error { _, err := BuildUDP(v4, v4, 1, 2, 0, make([]byte, 12)); return err }, "checksum 0"},
		{"UDP payload 1 byte", func() error { _, err := BuildUDP(v4, v4, 1, 2, 1, []byte{1}); return err }, "compensation word"},
		{"UDP mixed families", func() error { _, err := BuildUDP(v6, v4, 1, 2, 1, make([]byte, 12)); return err }, "not of one IP family"},
		{"echo checksum 0xffff", func() error { _, err := BuildICMPEcho(4, v4, v4, 1, 2, 0xffff, make([]byte, 12)); return err }, "0xffff"},
		{"echo family 5", func() error { _, err := BuildICMPEcho(5, v4, v4, 1, 2, 1, make([]byte, 12)); return err }, "family 5"},
		{"echo v6 with v4 addresses", func() error { _, err := BuildICMPEcho(6, v4, v4, 1, 2, 1, make([]byte, 12)); return err }, "not both IPv6"},
		{"echo empty payload", func() error { _, err := BuildICMPEcho(4, v4, v4, 1, 2, 1, nil); return err }, "compensation word"},
	} {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestBuildIPv4(t *testing.T) {
	payload := []byte("hopcheck")
	for _, df := range []bool{false, true} {
		b, err := BuildIPv4(client4, server4, 253, 3, 0xbeef, df, payload)
		if err != nil {
			t.Fatal(err)
		}
		if c := refChecksum(b[:20]); c != 0 {
			t.Errorf("header %x does not verify", b[:20])
		}
		h, p, err := DecodeIPv4Packet(b)
		want := IPv4Header{HeaderLen: 20, TotalLen: 28, ID: 0xbeef, DF: df, TTL: 3, Protocol: 253, Src: client4, Dst: server4}
		if err != nil || h != want || !bytes.Equal(p, payload) {
			t.Errorf("df %v: decodes to %+v %x %v", df, h, p, err)
		}
	}
	// IPv4-mapped IPv6 addresses are IPv4.
	b, err := BuildIPv4(netip.AddrFrom16(client4.As16()), netip.AddrFrom16(server4.As16()), 17, 1, 1, false, nil)
	if err != nil || len(b) != 20 {
		t.Errorf("mapped addresses: %x, %v", b, err)
	}
}

func TestChecksum(t *testing.T) {
	// RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
	if got := Checksum(fx("0001f203f4f5f6f7"), 0); got != ^uint16(0xddf2) {
		t.Errorf("RFC 1071 example: %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	// An odd byte is padded with zero on the right.
	if got, want := Checksum([]byte{0x01}, 0), ^uint16(0x0100); got != want {
		t.Errorf("odd byte: %#04x, want %#04x", got, want)
	}
	// A received packet with its checksum verifies to 0.
	for _, pkt := range [][]byte{packetfx.TE4KernelSYN[:20], packetfx.TE4KernelSYN[20:], ipv4Payload(t, packetfx.EchoReply4)} {
		if c := Checksum(pkt, 0); c != 0 {
			t.Errorf("%x verifies to %#04x", pkt, c)
		}
	}
	// Pseudo-header sums, checked against Linux: segments it left to
	// checksum offload carry just the folded pseudo-header sum, and the
	// ones it completed verify with it.
	for _, tc := range []struct {
		name     string
		seg      []byte
		src, dst netip.Addr
	}{
		{"kernel v4 SYN", fxSYN4Kernel[20:], client4, server4},
		{"kernel v6 SYN", fxSYN6Kernel[40:], client6, server6},
		{"kernel v4 SYN-ACK", ipv4Payload(t, fxSYNACK4), server4, client4},
		{"kernel v6 SYN-ACK", ipv6Payload(fxSYNACK6), server6, client6},
		{"kernel v6 RST", ipv6Payload(fxRST6), server6, client6},
	} {
		partial := binary.BigEndian.Uint16(tc.seg[16:])
		if got := fold(uint64(PseudoHeaderSum(tc.src, tc.dst, protoTCP, len(tc.seg)))); got != partial {
			t.Errorf("%s: pseudo-header sum %#04x, kernel's %#04x", tc.name, got, partial)
		}
	}
	if c := Checksum(ipv4Payload(t, packetfx.RST4), PseudoHeaderSum(server4, client4, protoTCP, 20)); c != 0 {
		t.Errorf("v4 RST verifies to %#04x", c)
	}
	if c := Checksum(ipv6Payload(fxEchoReply6), PseudoHeaderSum(server6, client6, protoICMPv6, 24)); c != 0 {
		t.Errorf("v6 echo reply verifies to %#04x", c)
	}
	if c := Checksum(ipv6Payload(fxTE6UDPProbe), PseudoHeaderSum(router6, client6, protoICMPv6, 72)); c != 0 {
		t.Errorf("v6 time exceeded verifies to %#04x", c)
	}
	// Long input must not overflow.
	big := bytes.Repeat([]byte{0xff}, 1<<20)
	if c := Checksum(big, 0xffffffff); c != 0 {
		t.Errorf("all ones: %#04x", c)
	}
}

func BenchmarkBuildTCPSYN(b *testing.B) {
	b.ReportAllocs()
	opt := DefaultSYNOptions()
	for b.Loop() {
		if _, err := BuildTCPSYN(client4, server4, 40000, 443, 0x5eed0001, 64240, opt); err != nil {
			b.Fatal(err)
		}
	}
}
