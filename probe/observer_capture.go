package probe

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/net/bpf"
)

// Bounds of what the observer keeps of one flow for evidence: the first
// HistoryFirst and the last HistoryLast packets (both directions and the
// ICMP errors quoting the flow), each cut at HistorySnapLen bytes from its
// IP header on. A flow of any length therefore costs at most about
// (HistoryFirst+HistoryLast) × HistorySnapLen bytes, so an hours-long soak
// stays flat; HistoryMaxFlows bounds the flows kept at once per observer
// (the least recently active is dropped for a new one).
const (
	HistoryFirst    = 16
	HistoryLast     = 64
	HistorySnapLen  = 192
	HistoryMaxFlows = 512
)

// CapturedPacket is one packet of a flow as the observer captured it.
type CapturedPacket struct {
	At  time.Time
	Out bool // sent by this host toward the remote end
	// Data is the IP packet from its IP header on, cut at the snap length.
	Data []byte
	// Length is the packet's length on the wire (from its IP header on).
	Length int
}

// FlowCapture is a snapshot of a flow's bounded history: its packets in
// the order captured, with Omitted packets between the first and the last
// ones not kept.
type FlowCapture struct {
	Local, Remote netip.AddrPort
	Packets       []CapturedPacket
	// OmittedAfter is the number of packets kept before the omitted ones
	// (HistoryFirst when any were omitted).
	OmittedAfter int
	Omitted      int
}

// FlowHistory keeps the first and the last packets of one flow in bounded
// memory: a fixed head and a ring for the tail. Not safe for concurrent
// use (the observer holds its lock around it).
type FlowHistory struct {
	first, last int
	head        []CapturedPacket
	tail        []CapturedPacket // ring of capacity last
	next        int              // where the next tail packet goes once the ring is full
	omitted     int
	synSeq      uint32 // sequence number of our SYN (a new one means a new connection)
	synSeen     bool
	lastAt      time.Time
}

// NewFlowHistory keeps the first first and the last last packets (each at
// least 1).
func NewFlowHistory(first, last int) *FlowHistory {
	return &FlowHistory{first: max(first, 1), last: max(last, 1)}
}

// Add records p (Data is kept, not copied).
func (h *FlowHistory) Add(p CapturedPacket) {
	h.lastAt = p.At
	if len(h.head) < h.first {
		h.head = append(h.head, p)
		return
	}
	if len(h.tail) < h.last {
		h.tail = append(h.tail, p)
		return
	}
	h.tail[h.next] = p
	h.next = (h.next + 1) % h.last
	h.omitted++
}

// Len is the number of packets kept.
func (h *FlowHistory) Len() int { return len(h.head) + len(h.tail) }

// Omitted is the number of packets seen but no longer kept.
func (h *FlowHistory) Omitted() int { return h.omitted }

// Packets returns the packets kept, oldest first (a new slice; the packet
// bytes are shared and never modified).
func (h *FlowHistory) Packets() []CapturedPacket {
	out := make([]CapturedPacket, 0, h.Len())
	out = append(out, h.head...)
	out = append(out, h.tail[h.next:]...)
	return append(out, h.tail[:h.next]...)
}

// Snapshot is the history as a FlowCapture between local and remote.
func (h *FlowHistory) Snapshot(local, remote netip.AddrPort) FlowCapture {
	c := FlowCapture{Local: local, Remote: remote, Packets: h.Packets(), Omitted: h.omitted}
	if h.omitted > 0 {
		c.OmittedAfter = len(h.head)
	}
	return c
}

// Reset empties the history (a new connection on the same port).
func (h *FlowHistory) Reset() {
	*h = FlowHistory{first: h.first, last: h.last}
}

// CapturedInfo is what DecodeCaptured reads from a captured packet.
type CapturedInfo struct {
	Family   int // 4 or 6
	Src, Dst netip.Addr
	TTL      int // TTL / hop limit
	IPID     int // IPv4 ID, -1 for IPv6
	DF       bool
	Protocol int // 6 TCP, 1 ICMP, 58 ICMPv6
	// TCP is set for TCP packets whose header was captured; PayloadLen is
	// from the IP length, so it holds for packets cut at the snap length.
	TCP *TCPSegment
	// ICMP is set for ICMP errors; its Quoted datagram names the flow.
	ICMP *ICMPMessage
}

// DecodeCaptured decodes the IP header and the TCP or ICMP header of a
// captured packet (cut at a snap length: a payload shorter than the IP
// length says is not an error). Pure.
func DecodeCaptured(b []byte) (CapturedInfo, error) {
	if len(b) == 0 {
		return CapturedInfo{}, fmt.Errorf("captured packet: empty: %w", ErrTruncated)
	}
	var info CapturedInfo
	var payload []byte
	payloadLen := 0
	switch b[0] >> 4 {
	case 4:
		h, err := DecodeIPv4Header(b)
		if err != nil {
			return CapturedInfo{}, fmt.Errorf("captured packet: %w", err)
		}
		if h.FragOffset != 0 {
			return CapturedInfo{}, fmt.Errorf("captured packet: non-first fragment: %w", ErrMalformed)
		}
		info = CapturedInfo{Family: 4, Src: h.Src, Dst: h.Dst, TTL: h.TTL, IPID: int(h.ID), DF: h.DF, Protocol: h.Protocol}
		payload = b[h.HeaderLen:]
		payloadLen = h.TotalLen - h.HeaderLen
		if h.TotalLen == 0 {
			payloadLen = len(payload)
		}
		if payloadLen < 0 {
			return CapturedInfo{}, fmt.Errorf("captured packet: total length %d below header length %d: %w", h.TotalLen, h.HeaderLen, ErrMalformed)
		}
		if len(payload) > payloadLen {
			payload = payload[:payloadLen]
		}
	case 6:
		if len(b) < ipv6HeaderLen {
			return CapturedInfo{}, fmt.Errorf("captured packet: ipv6 header needs %d bytes, have %d: %w", ipv6HeaderLen, len(b), ErrTruncated)
		}
		info = CapturedInfo{Family: 6, Src: netip.AddrFrom16([16]byte(b[8:24])), Dst: netip.AddrFrom16([16]byte(b[24:40])),
			TTL: int(b[7]), IPID: -1, Protocol: int(b[6])}
		payload = b[ipv6HeaderLen:]
		payloadLen = int(binary.BigEndian.Uint16(b[4:6]))
		if len(payload) > payloadLen {
			payload = payload[:payloadLen]
		}
	default:
		return CapturedInfo{}, fmt.Errorf("captured packet: version %d: %w", b[0]>>4, ErrBadVersion)
	}
	switch {
	case info.Protocol == protoTCP:
		t, err := DecodeTCPSegment(payload)
		if err != nil {
			return info, fmt.Errorf("captured packet: %w", err)
		}
		t.PayloadLen = max(payloadLen-t.DataOffset, 0)
		info.TCP = &t
	case info.Protocol == protoICMP && info.Family == 4:
		m, err := DecodeICMPv4(payload)
		if err != nil {
			return info, fmt.Errorf("captured packet: %w", err)
		}
		info.ICMP = &m
	case info.Protocol == protoICMPv6 && info.Family == 6:
		m, err := DecodeICMPv6(payload)
		if err != nil {
			return info, fmt.Errorf("captured packet: %w", err)
		}
		info.ICMP = &m
	}
	return info, nil
}

// capturedFlowPort tells which flow toward remote a captured packet
// belongs to: its local port, whether it was sent by us, and, for our
// SYNs, the sequence number. ok is false for packets of other flows.
func capturedFlowPort(info CapturedInfo, remote netip.AddrPort) (port uint16, out bool, syn bool, seq uint32, ok bool) {
	switch {
	case info.TCP != nil:
		t := info.TCP
		if info.Dst == remote.Addr() && t.DstPort == remote.Port() {
			isSyn := t.Flags&FlagSYN != 0 && t.Flags&FlagACK == 0
			return t.SrcPort, true, isSyn, t.Seq, true
		}
		if info.Src == remote.Addr() && t.SrcPort == remote.Port() {
			return t.DstPort, false, false, 0, true
		}
	case info.ICMP != nil && info.ICMP.Quoted != nil:
		q := info.ICMP.Quoted
		if q.Protocol == protoTCP && q.Dst.Unmap() == remote.Addr() && q.DstPort == remote.Port() && info.Dst != remote.Addr() {
			return q.SrcPort, false, false, 0, true
		}
	}
	return 0, false, false, 0, false
}

// flowHistories is the per-local-port history of every flow toward one
// remote endpoint, at most maxFlows at once.
type flowHistories struct {
	remote      netip.AddrPort
	first, last int
	snapLen     int
	maxFlows    int
	flows       map[uint16]*FlowHistory
	local       map[uint16]netip.Addr // our address on each flow
}

func newFlowHistories(remote netip.AddrPort) *flowHistories {
	return &flowHistories{remote: remote, first: HistoryFirst, last: HistoryLast, snapLen: HistorySnapLen,
		maxFlows: HistoryMaxFlows, flows: map[uint16]*FlowHistory{}, local: map[uint16]netip.Addr{}}
}

// ingest files a captured packet (data aliases nothing the caller reuses
// after the call: it is copied, cut at the snap length) under its flow.
// Packets of other flows are ignored; a new SYN of ours on a port starts
// its history again; past maxFlows the least recently active flow goes.
func (fh *flowHistories) ingest(at time.Time, data []byte) {
	info, err := DecodeCaptured(data)
	if err != nil && info.TCP == nil && info.ICMP == nil {
		return
	}
	port, out, syn, seq, ok := capturedFlowPort(info, fh.remote)
	if !ok {
		return
	}
	h := fh.flows[port]
	if h == nil {
		if len(fh.flows) >= fh.maxFlows {
			fh.evictOldest()
		}
		h = NewFlowHistory(fh.first, fh.last)
		fh.flows[port] = h
	}
	if syn {
		if h.synSeen && h.synSeq != seq {
			h.Reset()
		}
		h.synSeen, h.synSeq = true, seq
	}
	if out {
		fh.local[port] = info.Src
	} else if info.TCP != nil {
		fh.local[port] = info.Dst
	}
	length := len(data)
	switch info.Family {
	case 4:
		if tl := int(binary.BigEndian.Uint16(data[2:4])); tl > 0 {
			length = tl
		}
	case 6:
		length = ipv6HeaderLen + int(binary.BigEndian.Uint16(data[4:6]))
	}
	kept := append([]byte(nil), data[:min(len(data), fh.snapLen)]...)
	h.Add(CapturedPacket{At: at, Out: out, Data: kept, Length: max(length, len(kept))})
}

func (fh *flowHistories) evictOldest() {
	var oldest uint16
	var at time.Time
	found := false
	for p, h := range fh.flows {
		if !found || h.lastAt.Before(at) {
			oldest, at, found = p, h.lastAt, true
		}
	}
	if found {
		fh.forget(oldest)
	}
}

func (fh *flowHistories) forget(port uint16) {
	delete(fh.flows, port)
	delete(fh.local, port)
}

// snapshot is the capture of the flow on port (no packets if none).
func (fh *flowHistories) snapshot(port uint16) FlowCapture {
	local := netip.AddrPortFrom(fh.local[port], port)
	h := fh.flows[port]
	if h == nil {
		return FlowCapture{Local: local, Remote: fh.remote}
	}
	return h.Snapshot(local, fh.remote)
}

// captureFilter is the classic BPF program of the flow capture: IPv4 or
// IPv6 packets (version nibble; cooked packets start at the IP header)
// that are TCP from or to remote's address and port, or ICMP (ICMPv6),
// cut at snapLen. IPv6 extension headers are not walked: a TCP segment
// behind one is not kept.
func captureFilter(remote netip.AddrPort, v6 bool, snapLen int) []bpf.Instruction {
	port := uint32(remote.Port())
	accept, reject := bpf.RetConstant{Val: uint32(snapLen)}, bpf.RetConstant{Val: 0}
	if !v6 {
		a := remote.Addr().As4()
		addr := binary.BigEndian.Uint32(a[:])
		return []bpf.Instruction{
			/* 0 */ bpf.LoadAbsolute{Off: 0, Size: 1},
			/* 1 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
			/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x40, SkipFalse: 13}, // -> 16 reject
			/* 3 */ bpf.LoadAbsolute{Off: 9, Size: 1},
			/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoICMP, SkipTrue: 10}, // -> 15 accept
			/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoTCP, SkipFalse: 10}, // -> 16 reject
			/* 6 */ bpf.LoadMemShift{Off: 0},
			// from remote?
			/* 7 */ bpf.LoadAbsolute{Off: 12, Size: 4},
			/* 8 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: addr, SkipFalse: 2}, // -> 11
			/* 9 */ bpf.LoadIndirect{Off: 0, Size: 2},
			/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipTrue: 4}, // -> 15 accept
			// to remote?
			/* 11 */ bpf.LoadAbsolute{Off: 16, Size: 4},
			/* 12 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: addr, SkipFalse: 3}, // -> 16 reject
			/* 13 */ bpf.LoadIndirect{Off: 2, Size: 2},
			/* 14 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipFalse: 1}, // -> 16 reject
			/* 15 */ accept,
			/* 16 */ reject,
		}
	}
	a := remote.Addr().As16()
	w := func(i int) uint32 { return binary.BigEndian.Uint32(a[4*i:]) }
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 0, Size: 1},
		/* 1 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x60, SkipFalse: 24}, // -> 27 reject
		/* 3 */ bpf.LoadAbsolute{Off: 6, Size: 1},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoICMPv6, SkipTrue: 21}, // -> 26 accept
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoTCP, SkipFalse: 21}, // -> 27 reject
		// from remote?
		/* 6 */ bpf.LoadAbsolute{Off: 8, Size: 4},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(0), SkipFalse: 8}, // -> 16
		/* 8 */ bpf.LoadAbsolute{Off: 12, Size: 4},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(1), SkipFalse: 6}, // -> 16
		/* 10 */ bpf.LoadAbsolute{Off: 16, Size: 4},
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(2), SkipFalse: 4}, // -> 16
		/* 12 */ bpf.LoadAbsolute{Off: 20, Size: 4},
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(3), SkipFalse: 2}, // -> 16
		/* 14 */ bpf.LoadAbsolute{Off: 40, Size: 2},
		/* 15 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipTrue: 10}, // -> 26 accept
		// to remote?
		/* 16 */ bpf.LoadAbsolute{Off: 24, Size: 4},
		/* 17 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(0), SkipFalse: 9}, // -> 27 reject
		/* 18 */ bpf.LoadAbsolute{Off: 28, Size: 4},
		/* 19 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(1), SkipFalse: 7}, // -> 27
		/* 20 */ bpf.LoadAbsolute{Off: 32, Size: 4},
		/* 21 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(2), SkipFalse: 5}, // -> 27
		/* 22 */ bpf.LoadAbsolute{Off: 36, Size: 4},
		/* 23 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: w(3), SkipFalse: 3}, // -> 27
		/* 24 */ bpf.LoadAbsolute{Off: 42, Size: 2},
		/* 25 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipFalse: 1}, // -> 27
		/* 26 */ accept,
		/* 27 */ reject,
	}
}

// inboundFinRst counts the packets of c from the remote end that carry a
// FIN or a RST.
func inboundFinRst(c FlowCapture) int {
	n := 0
	for _, p := range c.Packets {
		if p.Out {
			continue
		}
		if info, err := DecodeCaptured(p.Data); err == nil && info.TCP != nil && info.TCP.Flags&(FlagFIN|FlagRST) != 0 {
			n++
		}
	}
	return n
}
