package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

func TestNewIdent(t *testing.T) {
	id, err := NewIdent(bytes.NewReader([]byte{0x5e, 0xed, 0x1e, 0x55, 0xff}))
	if err != nil || id.Nonce != 0x5eed1e55 {
		t.Errorf("got %+v, %v", id, err)
	}
	if _, err := NewIdent(bytes.NewReader([]byte{1, 2})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short reader: %v", err)
	}
}

// idents covers nonces with all-zero and all-one halves.
var idents = []Ident{{0}, {0xffffffff}, {0x5eed1e55}, {0x0000ffff}, {0xffff0000}, {0x12345678}}

func TestTCPSeqRoundTrip(t *testing.T) {
	for _, id := range idents {
		for i := range 1 << 16 {
			index := uint16(i)
			seq := id.TCPSeq(index)
			if got, ok := id.IndexFromTCPSeq(seq); !ok || got != index {
				t.Fatalf("nonce %#x index %d: seq %#x gives %d %v", id.Nonce, index, seq, got, ok)
			}
			if got, ok := id.IndexFromTCPAck(seq + 1); !ok || got != index {
				t.Fatalf("nonce %#x index %d: ack %#x gives %d %v", id.Nonce, index, seq+1, got, ok)
			}
		}
		other := Ident{Nonce: id.Nonce ^ 0x00010000}
		if _, ok := other.IndexFromTCPSeq(id.TCPSeq(5)); ok {
			t.Errorf("nonce %#x: another run's seq accepted", id.Nonce)
		}
		// The low half of the nonce is not in the seq; the ICMP id has it.
		if got, ok := (Ident{Nonce: id.Nonce ^ 0xffff}).IndexFromTCPSeq(id.TCPSeq(5)); !ok || got != 5 {
			t.Errorf("nonce %#x: low half changed the seq match", id.Nonce)
		}
	}
	if got := fixtureIdent.TCPSeq(7); got != 0x5eed0007 {
		t.Errorf("TCPSeq(7) = %#x", got)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	id := fixtureIdent
	for _, size := range []int{-1, 0, 11, PayloadMinLen, 16, 1372} {
		p := id.Payload(0xabcd, size)
		if want := max(size, PayloadMinLen); len(p) != want {
			t.Errorf("size %d: %d bytes, want %d", size, len(p), want)
		}
		if !bytes.Equal(p[:10], fx("686f7063 5eed1e55 abcd")) || !bytes.Equal(p[len(p)-2:], []byte{0, 0}) {
			t.Errorf("size %d: %x", size, p)
		}
		if got, ok := id.IndexFromPayload(p); !ok || got != 0xabcd {
			t.Errorf("size %d: index %d %v", size, got, ok)
		}
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"9 bytes", id.Payload(1, 16)[:9]},
		{"other nonce", Ident{Nonce: 0x5eed1e56}.Payload(1, 16)},
		{"no magic", append([]byte("hopC"), id.Payload(1, 16)[4:]...)},
		{"traceroute payload", fx("4040404040404040404040404040404040404040")},
	} {
		if got, ok := id.IndexFromPayload(tc.in); ok {
			t.Errorf("%s: matched index %d", tc.name, got)
		}
	}
	// Only the first 10 bytes are needed.
	if got, ok := id.IndexFromPayload(id.Payload(9, 16)[:10]); !ok || got != 9 {
		t.Errorf("10 bytes: %d %v", got, ok)
	}
}

func TestUDPChecksumMap(t *testing.T) {
	for _, id := range idents {
		seen := make(map[uint16]bool, 1<<16)
		for i := range MaxUDPIndex + 1 {
			index := uint16(i)
			c := id.UDPChecksum(index)
			if c == 0 {
				t.Fatalf("nonce %#x index %d: checksum 0", id.Nonce, index)
			}
			if seen[c] {
				t.Fatalf("nonce %#x index %d: checksum %#04x used twice", id.Nonce, index, c)
			}
			seen[c] = true
			if got, ok := id.IndexFromUDPChecksum(c); !ok || got != index {
				t.Fatalf("nonce %#x index %d: checksum %#04x gives %d %v", id.Nonce, index, c, got, ok)
			}
		}
		if id.UDPChecksum(0xffff) != id.UDPChecksum(0) {
			t.Errorf("nonce %#x: index 0xffff should alias index 0", id.Nonce)
		}
		if _, ok := id.IndexFromUDPChecksum(0); ok {
			t.Errorf("nonce %#x: checksum 0 accepted", id.Nonce)
		}
	}
}

func TestFlowChecksum(t *testing.T) {
	for _, id := range idents {
		seen := make(map[uint16]int)
		for flow := range 0xfffe {
			c := id.FlowChecksum(flow)
			if c == 0 || c == 0xffff {
				t.Fatalf("nonce %#x flow %d: checksum %#04x", id.Nonce, flow, c)
			}
			if f, dup := seen[c]; dup {
				t.Fatalf("nonce %#x: flows %d and %d share checksum %#04x", id.Nonce, f, flow, c)
			}
			seen[c] = flow
		}
		for _, flow := range []int{-1, -0xfffe, -1 << 40, 1 << 40} {
			if c := id.FlowChecksum(flow); c == 0 || c == 0xffff {
				t.Errorf("nonce %#x flow %d: checksum %#04x", id.Nonce, flow, c)
			}
		}
		if id.FlowChecksum(3) != id.FlowChecksum(3) || id.FlowChecksum(0xfffe) != id.FlowChecksum(0) {
			t.Errorf("nonce %#x: flow checksums not periodic", id.Nonce)
		}
	}
	if got := fixtureIdent.ICMPID(); got != 0x1e55 {
		t.Errorf("ICMPID = %#x", got)
	}
}

// TestIndexFromRealQuotes matches the answers Linux gave to capture.sh's
// probes.
func TestIndexFromRealQuotes(t *testing.T) {
	v4 := func(b []byte) []byte { return ipv4Payload(t, b) }
	for _, tc := range []struct {
		name   string
		decode func([]byte) (ICMPMessage, error)
		in     []byte
		proto  Protocol
		want   uint16
		ok     bool
	}{
		{"v4 TCP time exceeded", DecodeICMPv4, v4(packetfx.TE4SYNProbe), TCP, 7, true},
		{"v6 TCP time exceeded", DecodeICMPv6, ipv6Payload(packetfx.TE6SYNProbe), TCP, 7, true},
		{"v4 TCP 8-byte quote", DecodeICMPv4, fxTrunc4, TCP, 7, true},
		{"v4 UDP time exceeded", DecodeICMPv4, v4(packetfx.TE4UDPProbe), UDP, 8, true},
		{"v6 UDP time exceeded", DecodeICMPv6, ipv6Payload(fxTE6UDPProbe), UDP, 9, true},
		{"v4 ICMP time exceeded", DecodeICMPv4, v4(fxTE4EchoProbe), ICMP, 10, true},
		{"v6 ICMP time exceeded", DecodeICMPv6, ipv6Payload(fxTE6EchoProbe), ICMP, 11, true},
		{"v4 port unreachable", DecodeICMPv4, v4(packetfx.PortUnreach4), UDP, 12, true},
		{"v6 port unreachable", DecodeICMPv6, ipv6Payload(fxPortUnreach6), UDP, 13, true},
		{"v4 frag needed", DecodeICMPv4, v4(packetfx.FragNeeded4), UDP, 16, true},
		{"v6 packet too big", DecodeICMPv6, ipv6Payload(fxPacketTooBig6), UDP, 17, true},
		{"v4 parameter problem behind IP options", DecodeICMPv4, v4(fxParamProb4), UDP, 21, true},
		{"v4 MPLS", DecodeICMPv4, fxMPLS4, UDP, 8, true},
		{"v4 MPLS compat", DecodeICMPv4, fxMPLS4Compat, UDP, 8, true},
		{"v4 MPLS 128 of 200 bytes", DecodeICMPv4, fxMPLS4Long, UDP, 22, true},
		{"v6 MPLS", DecodeICMPv6, fxMPLS6, UDP, 9, true},
		{"kernel's own SYN is not ours", DecodeICMPv4, v4(packetfx.TE4KernelSYN), TCP, 0, false},
		{"kernel's own v6 SYN is not ours", DecodeICMPv6, ipv6Payload(fxTE6KernelSYN), TCP, 0, false},
		{"TCP quote for a UDP probe", DecodeICMPv4, v4(packetfx.TE4SYNProbe), UDP, 0, false},
		{"UDP quote for an ICMP probe", DecodeICMPv4, v4(packetfx.TE4UDPProbe), ICMP, 0, false},
		{"ICMP quote for a TCP probe", DecodeICMPv6, ipv6Payload(fxTE6EchoProbe), TCP, 0, false},
		{"protocol 253", DecodeICMPv4, v4(fxProtoUnreach4), UDP, 0, false},
		{"extension header first", DecodeICMPv6, fxFrag6, UDP, 0, false},
	} {
		m, err := tc.decode(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got, ok := fixtureIdent.IndexFromQuoted(m.Quoted, tc.proto)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: index %d %v, want %d %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}

	// SYN-ACK and RST acknowledge seq+1; echo replies return the payload.
	for _, tc := range []struct {
		name string
		seg  []byte
		want uint16
	}{
		{"v4 RST", v4(packetfx.RST4), 18}, {"v6 RST", ipv6Payload(fxRST6), 18},
		{"v4 SYN-ACK", v4(fxSYNACK4), 19}, {"v6 SYN-ACK", ipv6Payload(fxSYNACK6), 19},
	} {
		s, err := DecodeTCPSegment(tc.seg)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := fixtureIdent.IndexFromTCPAck(s.Ack); !ok || got != tc.want {
			t.Errorf("%s: index %d %v, want %d", tc.name, got, ok, tc.want)
		}
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) (ICMPMessage, error)
		in     []byte
		want   uint16
	}{
		{"v4 echo reply", DecodeICMPv4, v4(packetfx.EchoReply4), 14},
		{"v6 echo reply", DecodeICMPv6, ipv6Payload(fxEchoReply6), 15},
	} {
		m, err := tc.decode(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fixtureIdent.IndexFromPayload(m.EchoData)
		if !ok || got != tc.want || m.EchoSeq != tc.want || m.EchoID != fixtureIdent.ICMPID() {
			t.Errorf("%s: index %d %v, echo %d/%#x", tc.name, got, ok, m.EchoSeq, m.EchoID)
		}
	}
}

// routerQuote is how much of the probe a simulated router quotes.
type routerQuote int

const (
	quoteAll    routerQuote = iota // Linux: as much as fits in 576 / 1280 bytes
	quoteRFC792                    // IP header + 8 bytes
	quoteMPLS                      // RFC 4884: padded to 128 bytes, MPLS extension after
)

// routerError wraps probe (a full IP packet) in an ICMP time exceeded the
// way a router does, with x/net/icmp.
func routerError(t *testing.T, family int, probe []byte, style routerQuote) []byte {
	t.Helper()
	data := probe
	hdr := 20
	if family == 6 {
		hdr = 40
	}
	var exts []icmp.Extension
	switch style {
	case quoteRFC792:
		data = probe[:hdr+8]
	case quoteMPLS:
		exts = []icmp.Extension{&icmp.MPLSLabelStack{Class: 1, Type: 1,
			Labels: []icmp.MPLSLabel{{Label: 16000, S: true, TTL: 1}}}}
		data = probe[:min(len(probe), 128)]
	}
	m := icmp.Message{Type: ipv4.ICMPTypeTimeExceeded, Body: &icmp.TimeExceeded{Data: data, Extensions: exts}}
	var psh []byte
	if family == 6 {
		m.Type = ipv6.ICMPTypeTimeExceeded
		psh = icmp.IPv6PseudoHeader(router6.AsSlice(), client6.AsSlice())
	}
	b, err := m.Marshal(psh)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ipv6Packet prepends an IPv6 header with hop limit 1 to payload.
func ipv6Packet(src, dst netip.Addr, next int, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(h[0:], 6<<28|0x12345)
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = byte(next), 1
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, payload...)
}

// TestRoundTrip builds probes, has a simulated router quote them, decodes
// the error and recovers each probe's index.
func TestRoundTrip(t *testing.T) {
	id := Ident{Nonce: 0x9a7b3c4d}
	other := Ident{Nonce: 0x1234abcd}
	indices := []uint16{0, 1, 7, 0x1234, 0x8000, MaxUDPIndex, 0xffff}
	for _, family := range []int{4, 6} {
		src, dst, decode := client4, server4, DecodeICMPv4
		if family == 6 {
			src, dst, decode = client6, server6, DecodeICMPv6
		}
		for _, proto := range []Protocol{TCP, UDP, ICMP} {
			for _, style := range []routerQuote{quoteAll, quoteRFC792, quoteMPLS} {
				for _, index := range indices {
					name := fmt.Sprintf("v%d/%s/style%d/index%d", family, proto, style, index)
					build := func(id Ident) []byte {
						var tr []byte
						var err error
						var ipProto int
						switch proto {
						case TCP:
							ipProto = protoTCP
							tr, err = BuildTCPSYN(src, dst, 40000, 443, id.TCPSeq(index), 64240, DefaultSYNOptions())
						case UDP:
							ipProto = protoUDP
							tr, err = BuildUDP(src, dst, 40000, 33434, id.UDPChecksum(index), id.Payload(index, 24))
						case ICMP:
							ipProto = protoICMP
							if family == 6 {
								ipProto = protoICMPv6
							}
							tr, err = BuildICMPEcho(family, src, dst, id.ICMPID(), index, id.FlowChecksum(2), id.Payload(index, 24))
						}
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						if family == 6 {
							return ipv6Packet(src, dst, ipProto, tr)
						}
						pkt, err := BuildIPv4(src, dst, ipProto, 1, index, true, tr)
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						return pkt
					}
					m, err := decode(routerError(t, family, build(id), style))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if m.Quoted == nil || m.Quoted.Src != src || m.Quoted.Dst != dst || m.Quoted.TTL != 1 {
						t.Fatalf("%s: quoted %+v", name, m.Quoted)
					}
					if style == quoteMPLS && (len(m.MPLS) != 1 || m.MPLS[0].Label != 16000) {
						t.Errorf("%s: MPLS %+v", name, m.MPLS)
					}
					want := index
					if proto == UDP && style == quoteRFC792 && index == 0xffff {
						want = 0 // only the checksum is quoted, and 0xffff aliases 0
					}
					if got, ok := id.IndexFromQuoted(m.Quoted, proto); !ok || got != want {
						t.Errorf("%s: index %d %v, want %d", name, got, ok, want)
					}
					// Another run's probe with the same ports must not match,
					// except where only a UDP checksum is quoted (no nonce
					// bits there: the caller's port match has to do).
					m2, err := decode(routerError(t, family, build(other), style))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					_, ok := id.IndexFromQuoted(m2.Quoted, proto)
					if canTell := !(proto == UDP && style == quoteRFC792); canTell && ok {
						t.Errorf("%s: another run's probe matched", name)
					}
				}
			}
		}
	}
}

func TestIndexFromQuotedEdges(t *testing.T) {
	id := fixtureIdent
	m, err := DecodeICMPv4(ipv4Payload(t, fxTE4EchoProbe))
	if err != nil {
		t.Fatal(err)
	}
	q := *m.Quoted
	if _, ok := id.IndexFromQuoted(nil, TCP); ok {
		t.Error("nil quote matched")
	}
	if _, ok := id.IndexFromQuoted(&q, "sctp"); ok {
		t.Error("unknown protocol matched")
	}
	frag := q
	frag.FragOffset = 8
	if _, ok := id.IndexFromQuoted(&frag, ICMP); ok {
		t.Error("non-first fragment matched")
	}
	short := q
	short.Transport = short.Transport[:7]
	if _, ok := id.IndexFromQuoted(&short, ICMP); ok {
		t.Error("7 transport bytes matched")
	}
	reply := q
	reply.ICMPType = 0
	if _, ok := id.IndexFromQuoted(&reply, ICMP); ok {
		t.Error("quoted echo reply matched")
	}
	// Payload and sequence number disagree: not our probe.
	mismatch := q
	mismatch.ICMPSeq++
	if _, ok := id.IndexFromQuoted(&mismatch, ICMP); ok {
		t.Error("payload/seq mismatch matched")
	}
	// Without the payload quoted, id and seq decide.
	bare := q
	bare.Transport = bare.Transport[:8]
	if got, ok := id.IndexFromQuoted(&bare, ICMP); !ok || got != 10 {
		t.Errorf("8-byte echo quote: %d %v", got, ok)
	}
}
