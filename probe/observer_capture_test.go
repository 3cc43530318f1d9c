package probe

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/hopcheck/hopcheck/internal/packetfx"
)

var (
	capClient = netip.MustParseAddr("198.18.0.1")
	capServer = netip.MustParseAddr("198.18.5.2")
	capRouter = netip.MustParseAddr("198.18.2.1")
	capRemote = netip.AddrPortFrom(capServer, 443)
)

// capTCP4 is a whole IPv4 TCP packet; out: client -> server.
func capTCP4(t testing.TB, out bool, lport uint16, ttl int, flags TCPFlags, seq uint32, payload int) []byte {
	t.Helper()
	src, dst, sport, dport := capServer, capClient, uint16(443), lport
	if out {
		src, dst, sport, dport = capClient, capServer, lport, 443
	}
	seg, err := BuildTCPSegment(src, dst, sport, dport, seq, 1, flags, 502, make([]byte, payload))
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := BuildIPv4(src, dst, protoTCP, ttl, 7, true, seg)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// capTimeExceeded4 is router's ICMP time-exceeded quoting quoted.
func capTimeExceeded4(t testing.TB, quoted []byte) []byte {
	t.Helper()
	msg := append([]byte{11, 0, 0, 0, 0, 0, 0, 0}, quoted[:min(len(quoted), 28)]...)
	pkt, err := BuildIPv4(capRouter, capClient, protoICMP, 63, 9, false, msg)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// capTCP6 is an IPv6 TCP packet (no extension headers).
func capTCP6(src, dst netip.Addr, sport, dport uint16, hop int, payload int) []byte {
	b := make([]byte, 40+20+payload)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(20+payload))
	b[6], b[7] = protoTCP, byte(hop)
	a, d := src.As16(), dst.As16()
	copy(b[8:24], a[:])
	copy(b[24:40], d[:])
	binary.BigEndian.PutUint16(b[40:42], sport)
	binary.BigEndian.PutUint16(b[42:44], dport)
	b[52] = 5 << 4
	b[53] = byte(FlagACK)
	return b
}

func TestFlowHistoryKeepsFirstAndLast(t *testing.T) {
	base := time.Unix(1000, 0)
	for _, c := range []struct {
		name         string
		first, last  int
		added        int
		want         []int // indices kept, in order
		omitted      int
		omittedAfter int
	}{
		{"empty", 3, 4, 0, nil, 0, 0},
		{"head only", 3, 4, 2, []int{0, 1}, 0, 0},
		{"head and part of the tail", 3, 4, 5, []int{0, 1, 2, 3, 4}, 0, 0},
		{"exactly full", 3, 4, 7, []int{0, 1, 2, 3, 4, 5, 6}, 0, 0},
		{"one over", 3, 4, 8, []int{0, 1, 2, 4, 5, 6, 7}, 1, 3},
		{"hundred", 3, 4, 100, []int{0, 1, 2, 96, 97, 98, 99}, 93, 3},
	} {
		h := NewFlowHistory(c.first, c.last)
		for i := 0; i < c.added; i++ {
			h.Add(CapturedPacket{At: base.Add(time.Duration(i) * time.Second), Data: []byte{byte(i)}})
		}
		snap := h.Snapshot(netip.AddrPort{}, capRemote)
		var got []int
		for _, p := range snap.Packets {
			got = append(got, int(p.Data[0]))
		}
		if len(got) != len(c.want) || snap.Omitted != c.omitted || snap.OmittedAfter != c.omittedAfter {
			t.Errorf("%s: kept %v omitted %d after %d; want %v, %d after %d", c.name, got, snap.Omitted, snap.OmittedAfter, c.want, c.omitted, c.omittedAfter)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
}

func TestFlowHistoriesIngest(t *testing.T) {
	at := time.Unix(2000, 0)
	fh := newFlowHistories(capRemote)
	syn := capTCP4(t, true, 40001, 64, FlagSYN, 100, 0)
	fh.ingest(at, syn)
	fh.ingest(at, capTCP4(t, false, 40001, 61, FlagSYN|FlagACK, 900, 0))
	fh.ingest(at, capTCP4(t, true, 40001, 64, FlagACK|FlagPSH, 101, 300))
	probe := capTCP4(t, true, 40001, 2, FlagACK, 101, 1)
	fh.ingest(at, probe)
	fh.ingest(at, capTimeExceeded4(t, probe))
	fh.ingest(at, capTCP4(t, false, 40002, 61, FlagRST, 5, 0))                    // another flow
	fh.ingest(at, capTimeExceeded4(t, capTCP4(t, true, 40003, 2, FlagACK, 1, 0))) // another flow's ICMP
	other, _ := BuildIPv4(capServer, capClient, protoTCP, 61, 1, true, mustSeg(t, capServer, capClient, 80, 40001))
	fh.ingest(at, other)           // the server's port 80: not the flow
	fh.ingest(at, []byte{0x45, 0}) // garbage

	c := fh.snapshot(40001)
	if len(c.Packets) != 5 || c.Local != netip.AddrPortFrom(capClient, 40001) || c.Remote != capRemote {
		t.Fatalf("flow 40001: %d packets, local %s remote %s; want 5, %s:40001, %s", len(c.Packets), c.Local, c.Remote, capClient, capRemote)
	}
	for i, out := range []bool{true, false, true, true, false} {
		if c.Packets[i].Out != out {
			t.Errorf("packet %d out=%v, want %v", i+1, c.Packets[i].Out, out)
		}
	}
	if p := c.Packets[2]; p.Length != 20+20+300 || len(p.Data) != HistorySnapLen {
		t.Errorf("data packet kept %d of %d bytes; want %d of 340", len(p.Data), p.Length, HistorySnapLen)
	}
	if got := len(fh.snapshot(40002).Packets); got != 1 {
		t.Errorf("flow 40002: %d packets, want 1", got)
	}
	if got := len(fh.snapshot(40003).Packets); got != 1 {
		t.Errorf("flow 40003 (ICMP only): %d packets, want 1", got)
	}

	// A retransmitted SYN keeps the history, a new one starts it again.
	fh.ingest(at, syn)
	if got := len(fh.snapshot(40001).Packets); got != 6 {
		t.Errorf("after a retransmitted SYN: %d packets, want 6", got)
	}
	fh.ingest(at, capTCP4(t, true, 40001, 64, FlagSYN, 7777, 0))
	if got := len(fh.snapshot(40001).Packets); got != 1 {
		t.Errorf("after a new SYN: %d packets, want 1", got)
	}

	fh.forget(40001)
	if got := len(fh.snapshot(40001).Packets); got != 0 {
		t.Errorf("after forget: %d packets", got)
	}
}

func mustSeg(t testing.TB, src, dst netip.Addr, sport, dport uint16) []byte {
	t.Helper()
	b, err := BuildTCPSegment(src, dst, sport, dport, 1, 1, FlagRST, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFlowHistoriesEvictLeastRecentlyActive(t *testing.T) {
	fh := newFlowHistories(capRemote)
	fh.maxFlows = 2
	base := time.Unix(3000, 0)
	fh.ingest(base, capTCP4(t, true, 1, 64, FlagSYN, 1, 0))
	fh.ingest(base.Add(time.Second), capTCP4(t, true, 2, 64, FlagSYN, 1, 0))
	fh.ingest(base.Add(2*time.Second), capTCP4(t, true, 1, 64, FlagACK, 2, 0)) // port 1 active again
	fh.ingest(base.Add(3*time.Second), capTCP4(t, true, 3, 64, FlagSYN, 1, 0))
	if len(fh.flows) != 2 || fh.flows[2] != nil || fh.flows[1] == nil || fh.flows[3] == nil {
		t.Fatalf("flows kept %v; want ports 1 and 3 (2 was the least recently active)", keys(fh.flows))
	}
}

func keys(m map[uint16]*FlowHistory) []uint16 {
	var k []uint16
	for p := range m {
		k = append(k, p)
	}
	return k
}

func TestCaptureFilter(t *testing.T) {
	server6, client6 := netip.MustParseAddr("2001:db8:5::2"), netip.MustParseAddr("2001:db8::1")
	probe := capTCP4(t, true, 40001, 2, FlagACK, 1, 1)
	icmp6 := capTCP6(server6, client6, 443, 40001, 60, 0)
	icmp6[6] = protoICMPv6
	for _, c := range []struct {
		name   string
		remote netip.AddrPort
		pkt    []byte
		keep   bool
	}{
		{"v4 from the remote", capRemote, capTCP4(t, false, 40001, 61, FlagRST, 1, 0), true},
		{"v4 to the remote", capRemote, capTCP4(t, true, 40001, 64, FlagSYN, 1, 0), true},
		{"v4 ICMP", capRemote, capTimeExceeded4(t, probe), true},
		{"v4 other port", netip.AddrPortFrom(capServer, 80), capTCP4(t, false, 40001, 61, FlagRST, 1, 0), false},
		{"v4 other address", netip.AddrPortFrom(capRouter, 443), capTCP4(t, true, 40001, 64, FlagSYN, 1, 0), false},
		{"v4 filter, v6 packet", capRemote, capTCP6(server6, client6, 443, 40001, 60, 0), false},
		{"v6 from the remote", netip.AddrPortFrom(server6, 443), capTCP6(server6, client6, 443, 40001, 60, 0), true},
		{"v6 to the remote", netip.AddrPortFrom(server6, 443), capTCP6(client6, server6, 40001, 443, 64, 0), true},
		{"v6 ICMPv6", netip.AddrPortFrom(server6, 443), icmp6, true},
		{"v6 other port", netip.AddrPortFrom(server6, 80), capTCP6(server6, client6, 443, 40001, 60, 0), false},
		{"v6 other address", netip.AddrPortFrom(client6, 443), capTCP6(server6, netip.MustParseAddr("2001:db8::9"), 443, 40001, 60, 0), false},
		{"v6 filter, v4 packet", netip.AddrPortFrom(server6, 443), capTCP4(t, false, 40001, 61, FlagRST, 1, 0), false},
		{"ARP-like", capRemote, []byte{0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
	} {
		vm, err := bpf.NewVM(captureFilter(c.remote, c.remote.Addr().Is6(), HistorySnapLen))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if keep := n > 0; keep != c.keep {
			t.Errorf("%s: filter kept %d bytes, want keep=%v", c.name, n, c.keep)
		}
		if n > 0 && n != HistorySnapLen { // the kernel keeps min(packet, n)
			t.Errorf("%s: filter returned %d, want the snap length %d", c.name, n, HistorySnapLen)
		}
	}
}

func TestDecodeCaptured(t *testing.T) {
	data := capTCP4(t, true, 40001, 64, FlagACK|FlagPSH, 101, 300)
	probe := capTCP4(t, true, 40001, 3, FlagACK, 101, 1)
	te := capTimeExceeded4(t, probe)
	v6 := capTCP6(netip.MustParseAddr("2001:db8:5::2"), netip.MustParseAddr("2001:db8::1"), 443, 40001, 60, 10)
	for _, c := range []struct {
		name       string
		b          []byte
		err        error
		ttl        int
		payloadLen int // TCP payload, -1 no TCP
		quotedPort uint16
	}{
		{"v4 data cut at the snap length", data[:HistorySnapLen], nil, 64, 300, 0},
		{"v4 probe", probe, nil, 3, 1, 0},
		{"v4 time-exceeded", te, nil, 63, -1, 40001},
		{"v6 segment", v6, nil, 60, 10, 0},
		{"empty", nil, ErrTruncated, 0, -1, 0},
		{"version 5", []byte{0x50, 0, 0, 0}, ErrBadVersion, 0, -1, 0},
		{"short v6", v6[:30], ErrTruncated, 0, -1, 0},
		{"v4 header only", data[:20], ErrTruncated, 64, -1, 0},
	} {
		info, err := DecodeCaptured(c.b)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: error %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if info.TTL != c.ttl {
			t.Errorf("%s: TTL %d, want %d", c.name, info.TTL, c.ttl)
		}
		switch {
		case c.payloadLen >= 0 && (info.TCP == nil || info.TCP.PayloadLen != c.payloadLen):
			t.Errorf("%s: TCP %+v, want payload %d", c.name, info.TCP, c.payloadLen)
		case c.quotedPort != 0 && (info.ICMP == nil || info.ICMP.Quoted == nil || info.ICMP.Quoted.SrcPort != c.quotedPort || info.ICMP.Kind != KindTimeExceeded):
			t.Errorf("%s: ICMP %+v, want time-exceeded quoting port %d", c.name, info.ICMP, c.quotedPort)
		}
	}
}

func FuzzDecodeCaptured(f *testing.F) {
	f.Add(capTCP4(f, true, 40001, 64, FlagSYN, 1, 0))
	f.Add(capTimeExceeded4(f, capTCP4(f, true, 40001, 2, FlagACK, 1, 1)))
	f.Add(capTCP6(netip.MustParseAddr("2001:db8:5::2"), netip.MustParseAddr("2001:db8::1"), 443, 40001, 60, 10))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := DecodeCaptured(b)
		if err == nil && info.Family != 4 && info.Family != 6 {
			t.Fatalf("family %d without error", info.Family)
		}
		fh := newFlowHistories(capRemote)
		fh.ingest(time.Time{}, b)
	})
}

// BenchmarkFlowHistoryMemory feeds one flow hours' worth of packets and
// reports the bytes it holds: flat at the bounds, whatever the count.
func BenchmarkFlowHistoryMemory(b *testing.B) {
	fh := newFlowHistories(capRemote)
	pkt := capTCP4(b, true, 40001, 64, FlagACK|FlagPSH, 1, 1400)
	at := time.Unix(0, 0)
	for i := 0; i < b.N; i++ {
		fh.ingest(at.Add(time.Duration(i)*time.Millisecond), pkt)
	}
	held := 0
	for _, p := range fh.snapshot(40001).Packets {
		held += len(p.Data)
	}
	b.ReportMetric(float64(held), "bytes-held")
	if max := (HistoryFirst + HistoryLast) * HistorySnapLen; held > max {
		b.Fatalf("%d bytes held, bound %d", held, max)
	}
}

// Capture waits for the history to hold the FINs and RSTs the flow record
// holds; inboundFinRst is what it counts.
func TestInboundFinRst(t *testing.T) {
	in := func(b []byte) CapturedPacket { return CapturedPacket{Data: b} }
	out := func(b []byte) CapturedPacket { return CapturedPacket{Data: b, Out: true} }
	tests := []struct {
		name string
		pkts []CapturedPacket
		want int
	}{
		{"none", nil, 0},
		{"inbound RST", []CapturedPacket{in(packetfx.SYN4Probe), in(packetfx.RST4)}, 1},
		{"our own RST is not counted", []CapturedPacket{out(packetfx.RST4)}, 0},
		{"a SYN is not a FIN or RST", []CapturedPacket{in(packetfx.SYN4Probe)}, 0},
		{"ICMP is not counted", []CapturedPacket{in(packetfx.EchoReply4)}, 0},
		{"undecodable", []CapturedPacket{in([]byte{0x45})}, 0},
		{"two", []CapturedPacket{in(packetfx.RST4), in(packetfx.RST4)}, 2},
	}
	for _, tc := range tests {
		if got := inboundFinRst(FlowCapture{Packets: tc.pkts}); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
