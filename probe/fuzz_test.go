package probe

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; TestWriteFuzzSeeds
// regenerates the seed-* files from the fixtures:
//
//	HOPCHECK_WRITE_SEEDS=1 go test ./probe -run TestWriteFuzzSeeds

// decodeErrorKnown reports whether err wraps one of the decoders' reasons.
func decodeErrorKnown(err error) bool {
	for _, e := range []error{ErrTruncated, ErrBadVersion, ErrMalformed, ErrBadQuote} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func checkICMPInvariants(t *testing.T, family int, in []byte, m ICMPMessage, err error) {
	t.Helper()
	if err != nil && !decodeErrorKnown(err) {
		t.Fatalf("error %v wraps no known reason", err)
	}
	if err != nil && m.Quoted != nil {
		t.Fatalf("error %v with a quote", err)
	}
	if m.Kind == "" && err == nil {
		t.Fatalf("no kind and no error")
	}
	if m.Kind != "" && m.Family != family {
		t.Fatalf("family %d", m.Family)
	}
	if len(m.EchoData) > len(in) {
		t.Fatalf("echo data %d bytes from %d", len(m.EchoData), len(in))
	}
	q := m.Quoted
	if q == nil {
		return
	}
	if len(q.Transport) > len(in) {
		t.Fatalf("transport %d bytes from %d", len(q.Transport), len(in))
	}
	if q.Family != family || q.HeaderLen < 20 || q.HeaderLen > 60 {
		t.Fatalf("quote family %d header %d", q.Family, q.HeaderLen)
	}
	if n := q.TotalLen - q.HeaderLen; q.TotalLen != 0 && n >= 0 && len(q.Transport) > n &&
		!(family == 6 && q.Protocol == 0) {
		t.Fatalf("transport %d bytes beyond total length %d", len(q.Transport), q.TotalLen)
	}
	if q.TCP != nil && q.TCP.DataOffset > len(q.Transport) {
		t.Fatalf("quoted TCP header %d bytes from %d", q.TCP.DataOffset, len(q.Transport))
	}
	id := Ident{Nonce: 0x5eed1e55}
	for _, p := range []Protocol{TCP, UDP, ICMP} {
		id.IndexFromQuoted(q, p)
	}
}

func FuzzDecodeICMPv4(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeICMPv4(in)
		checkICMPInvariants(t, 4, in, m, err)
		if err == nil && m.Kind == KindDestUnreachable && m.Code == 4 && m.MTU > 0xffff {
			t.Fatalf("MTU %d", m.MTU)
		}
	})
}

func FuzzDecodeICMPv6(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeICMPv6(in)
		checkICMPInvariants(t, 6, in, m, err)
	})
}

func FuzzDecodeTCPSegment(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := DecodeTCPSegment(in)
		if err != nil {
			if !decodeErrorKnown(err) || s != (TCPSegment{}) {
				t.Fatalf("error %v with %+v", err, s)
			}
			return
		}
		if s.DataOffset < 20 || s.DataOffset > 60 || s.DataOffset > len(in) || s.PayloadLen != len(in)-s.DataOffset {
			t.Fatalf("offset %d payload %d of %d bytes", s.DataOffset, s.PayloadLen, len(in))
		}
		if o := s.Options; o.WindowScale < -1 || o.WindowScale > 255 || o.MSS < 0 || o.MSS > 0xffff ||
			(!o.Timestamps && (o.TSVal != 0 || o.TSEcr != 0)) {
			t.Fatalf("options %+v", o)
		}
		// Re-encoding the fixed header gives the same fixed header back.
		b, err := BuildTCPSegment(client4, server4, s.SrcPort, s.DstPort, s.Seq, s.Ack, s.Flags, s.Window, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:12], in[:12]) || b[13] != in[13] || !bytes.Equal(b[14:16], in[14:16]) {
			t.Fatalf("re-encoded %x from %x", b[:20], in[:20])
		}
	})
}

func FuzzDecodeIPv4Packet(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		h, p, err := DecodeIPv4Packet(in)
		h2, err2 := DecodeIPv4Header(in)
		if err2 != nil {
			if err == nil || h != (IPv4Header{}) || p != nil {
				t.Fatalf("header error %v, but packet %+v %x %v", err2, h, p, err)
			}
		} else {
			if h != h2 {
				t.Fatalf("header %+v vs packet header %+v", h2, h)
			}
			if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("header decodes, packet error %v", err)
			}
		}
		if err != nil && !decodeErrorKnown(err) {
			t.Fatalf("error %v wraps no known reason", err)
		}
		if err == nil {
			if !h.Src.Is4() || !h.Dst.Is4() || h.HeaderLen < 20 || h.HeaderLen > 60 || len(in) < h.HeaderLen {
				t.Fatalf("header %+v from %d bytes", h, len(in))
			}
			if h.TotalLen != 0 && len(p) != h.TotalLen-h.HeaderLen {
				t.Fatalf("payload %d bytes, total length %d header %d", len(p), h.TotalLen, h.HeaderLen)
			}
		}
		if len(p) > len(in) {
			t.Fatalf("payload %d bytes from %d", len(p), len(in))
		}
	})
}

func FuzzIndexFromPayload(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, nonce uint32) {
		id := Ident{Nonce: nonce}
		index, ok := id.IndexFromPayload(in)
		if !ok {
			return
		}
		if !bytes.Equal(id.Payload(index, 10)[:10], in[:10]) {
			t.Fatalf("index %d from %x", index, in)
		}
	})
}

// FuzzBuildChecksum checks the checksum compensation of BuildUDP and
// BuildICMPEcho over arbitrary payloads and wanted values.
func FuzzBuildChecksum(f *testing.F) {
	f.Add(uint8(0), uint16(1), []byte("hopc\x00\x00\x00\x00\x00\x01\x00\x00"))
	f.Add(uint8(3), uint16(0), []byte("\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, kind uint8, want uint16, payload []byte) {
		src, dst := client4, server4
		v6 := kind&1 == 1
		if v6 {
			src, dst = client6, server6
		}
		var b []byte
		var err error
		var proto byte
		var off int
		if kind&2 == 0 {
			proto, off = protoUDP, 6
			b, err = BuildUDP(src, dst, 40000, 33434, want, payload)
		} else {
			proto, off = protoICMP, 2
			family := 4
			if v6 {
				proto, family = protoICMPv6, 6
			}
			b, err = BuildICMPEcho(family, src, dst, 1, 2, want, payload)
		}
		if err != nil {
			if len(payload) >= 2 && len(payload) < 0xffff-8 &&
				!(proto == protoUDP && want == 0) && !(proto != protoUDP && want == 0xffff) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		var ph []byte
		if proto != protoICMP {
			ph = refPseudoHeader(src, dst, proto, len(b))
		}
		got := recomputed(ph, b, off)
		if got == 0 && proto == protoUDP {
			got = 0xffff
		}
		if got != want || refChecksum(ph, b) != 0 {
			t.Fatalf("checksum %#04x, want %#04x: %x", got, want, b)
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora from the fixtures.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("HOPCHECK_WRITE_SEEDS") == "" {
		t.Skip("set HOPCHECK_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	v4 := func(b []byte) []byte { return ipv4Payload(t, b) }
	seeds := map[string]map[string][]byte{
		"FuzzDecodeICMPv4": {
			"te-kernel-syn": v4(packetfx.TE4KernelSYN), "te-udp": v4(packetfx.TE4UDPProbe), "te-echo": v4(fxTE4EchoProbe),
			"port-unreach": v4(packetfx.PortUnreach4), "frag-needed": v4(packetfx.FragNeeded4), "param-prob": v4(fxParamProb4),
			"proto-unreach": v4(fxProtoUnreach4), "echo-reply": v4(packetfx.EchoReply4), "mpls": fxMPLS4,
			"mpls-compat": fxMPLS4Compat, "ifinfo": fxIfInfo4, "mpls-long": fxMPLS4Long, "trunc": fxTrunc4, "short": fx("0b00"),
		},
		"FuzzDecodeICMPv6": {
			"te-kernel-syn": ipv6Payload(fxTE6KernelSYN), "te-udp": ipv6Payload(fxTE6UDPProbe),
			"te-echo": ipv6Payload(fxTE6EchoProbe), "port-unreach": ipv6Payload(fxPortUnreach6),
			"packet-too-big": ipv6Payload(fxPacketTooBig6)[:200], "param-prob": ipv6Payload(fxParamProb6),
			"echo-reply": ipv6Payload(fxEchoReply6), "mpls": fxMPLS6, "frag": fxFrag6,
		},
		"FuzzDecodeTCPSegment": {
			"syn-kernel": fxSYN4Kernel[20:], "syn-probe": packetfx.SYN4Probe[20:], "syn-ack": v4(fxSYNACK4),
			"rst": v4(packetfx.RST4), "syn-ack-v6": ipv6Payload(fxSYNACK6), "bad-options": fx("9c5300505eed00130000000070020000000000000205020303ff0402080a"),
		},
		"FuzzDecodeIPv4Packet": {
			"te-kernel-syn": packetfx.TE4KernelSYN, "syn-kernel": fxSYN4Kernel, "options": fxBadOption4Probe,
			"rst": packetfx.RST4, "padded": append(bytes.Clone(packetfx.RST4), 0, 0, 0, 0, 0, 0), "truncated": fxSYN4Kernel[:30],
		},
	}
	for name, files := range seeds {
		for file, b := range files {
			writeSeed(t, name, file, fmt.Sprintf("[]byte(%s)", strconv.Quote(string(b))))
		}
	}
	for file, b := range map[string][]byte{"probe": fixtureIdent.Payload(7, 16), "echo": v4(packetfx.EchoReply4)[8:], "short": []byte("hopc")} {
		writeSeed(t, "FuzzIndexFromPayload", file, fmt.Sprintf("[]byte(%s)\nuint32(%d)", strconv.Quote(string(b)), fixtureIdent.Nonce))
	}
}

func writeSeed(t *testing.T, fuzzName, file, values string) {
	t.Helper()
	if err := packetfx.WriteSeed(fuzzName, file, values); err != nil {
		t.Fatal(err)
	}
}

// The fuzz targets run their seeds as plain tests too; make sure the seed
// directories exist so that a missing corpus does not go unnoticed.
func TestFuzzSeedsPresent(t *testing.T) {
	for _, name := range []string{"FuzzDecodeICMPv4", "FuzzDecodeICMPv6", "FuzzDecodeTCPSegment", "FuzzDecodeIPv4Packet", "FuzzIndexFromPayload"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", name, "seed-*"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: no seed corpus (%v)", name, err)
		}
	}
}
