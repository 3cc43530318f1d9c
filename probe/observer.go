package probe

import (
	"fmt"
	"net/netip"
	"time"
)

// Segment is one TCP segment a flow observer saw arriving from the remote
// end of a connection, with the IP fields that tell senders apart.
type Segment struct {
	At         time.Time
	Src, Dst   netip.AddrPort
	TTL        int // IPv4 TTL / IPv6 hop limit as received; -1 unknown
	IPID       int // IPv4 ID; -1 for IPv6
	DF         bool
	Flags      TCPFlags
	Seq, Ack   uint32
	Window     uint16
	Options    TCPOptions
	PayloadLen int
}

// DecodeObservedIPv4 decodes a whole IPv4 packet carrying TCP, as a raw
// IPv4 socket delivers it, into a Segment received at at.
func DecodeObservedIPv4(b []byte, at time.Time) (Segment, error) {
	h, payload, err := DecodeIPv4Packet(b)
	if err != nil {
		return Segment{}, fmt.Errorf("observed packet: %w", err)
	}
	if h.Protocol != 6 {
		return Segment{}, fmt.Errorf("observed packet: protocol %d is not TCP: %w", h.Protocol, ErrMalformed)
	}
	if h.FragOffset != 0 {
		return Segment{}, fmt.Errorf("observed packet: non-first fragment: %w", ErrMalformed)
	}
	s, err := decodeObservedTCP(payload, h.Src, h.Dst, at)
	if err != nil {
		return Segment{}, err
	}
	s.TTL, s.IPID, s.DF = h.TTL, int(h.ID), h.DF
	return s, nil
}

// DecodeObservedTCP decodes a TCP segment without its IP header (as a raw
// IPv6 socket delivers it); hopLimit is from the IPV6_HOPLIMIT control
// message (-1 when absent).
func DecodeObservedTCP(b []byte, src, dst netip.Addr, hopLimit int, at time.Time) (Segment, error) {
	s, err := decodeObservedTCP(b, src, dst, at)
	if err != nil {
		return Segment{}, err
	}
	s.TTL, s.IPID = hopLimit, -1
	return s, nil
}

func decodeObservedTCP(b []byte, src, dst netip.Addr, at time.Time) (Segment, error) {
	t, err := DecodeTCPSegment(b)
	if err != nil {
		return Segment{}, fmt.Errorf("observed segment: %w", err)
	}
	return Segment{
		At:  at,
		Src: netip.AddrPortFrom(src, t.SrcPort), Dst: netip.AddrPortFrom(dst, t.DstPort),
		Flags: t.Flags, Seq: t.Seq, Ack: t.Ack, Window: t.Window, Options: t.Options,
		PayloadLen: t.PayloadLen,
	}, nil
}

// InitialTTL is the smallest common initial TTL (64, 128, 255) not below
// an observed TTL; 0 when the TTL is unknown or impossible.
func InitialTTL(observed int) int {
	switch {
	case observed <= 0 || observed > 255:
		return 0
	case observed <= 64:
		return 64
	case observed <= 128:
		return 128
	}
	return 255
}

// SenderHop is the hop index of the device that sent a packet received
// with TTL observed, numbered like trace's TTLs: router k is hop k, a
// server behind N routers is hop N+1. 0 when unknown.
func SenderHop(observed int) int {
	init := InitialTTL(observed)
	if init == 0 {
		return 0
	}
	return init - observed + 1
}

// Origin says who sent a RST or FIN.
type Origin string

// Origins.
const (
	OriginServer    Origin = "server"
	OriginMiddlebox Origin = "middlebox"
	OriginUnknown   Origin = "unknown"
)

// Fingerprint is what identifies the server of a connection: the TTL of
// its SYN-ACK (or data) and the DF bit it sets.
type Fingerprint struct {
	TTL int // as received; 0 unknown
	DF  bool
}

// Known reports whether the fingerprint has a usable TTL.
func (f Fingerprint) Known() bool { return InitialTTL(f.TTL) != 0 }

// Attribution is the verdict on who sent a segment, with the reason in
// words for the evidence list.
type Attribution struct {
	Origin Origin
	Hop    int // hop index of the sender (SenderHop), 0 unknown
	Reason string
}

// Attribute classifies the sender of seg (a RST or FIN) against the
// server's fingerprint: the same hop distance and initial TTL is the
// server; a nearer sender, or the same distance from a different initial
// TTL, is a middlebox; anything else is unknown.
func Attribute(seg Segment, server Fingerprint) Attribution {
	hop := SenderHop(seg.TTL)
	if hop == 0 {
		return Attribution{Origin: OriginUnknown, Reason: "TTL of the segment unknown"}
	}
	if !server.Known() {
		return Attribution{Origin: OriginUnknown, Hop: hop,
			Reason: fmt.Sprintf("TTL %d (hop %d) but no SYN-ACK or data from the server to compare with", seg.TTL, hop)}
	}
	serverHop := SenderHop(server.TTL)
	switch {
	case hop < serverHop:
		return Attribution{Origin: OriginMiddlebox, Hop: hop,
			Reason: fmt.Sprintf("TTL %d means hop %d, nearer than the server at hop %d (SYN-ACK TTL %d)", seg.TTL, hop, serverHop, server.TTL)}
	case hop == serverHop && InitialTTL(seg.TTL) == InitialTTL(server.TTL):
		return Attribution{Origin: OriginServer, Hop: hop,
			Reason: fmt.Sprintf("TTL %d equals the server's (SYN-ACK TTL %d, hop %d)", seg.TTL, server.TTL, serverHop)}
	case InitialTTL(seg.TTL) != InitialTTL(server.TTL):
		return Attribution{Origin: OriginMiddlebox, Hop: hop,
			Reason: fmt.Sprintf("TTL %d starts from initial TTL %d, the server's from %d (SYN-ACK TTL %d)", seg.TTL, InitialTTL(seg.TTL), InitialTTL(server.TTL), server.TTL)}
	}
	return Attribution{Origin: OriginUnknown, Hop: hop,
		Reason: fmt.Sprintf("TTL %d means hop %d, farther than the server at hop %d", seg.TTL, hop, serverHop)}
}

// FlowRecord is what an observer saw of one connection, from the remote
// end toward us.
type FlowRecord struct {
	SynAck   *Segment  // the last SYN-ACK (nil: not seen)
	DataTTLs []int     // distinct TTLs of segments with payload, in order seen
	Data     int       // segments with payload
	FinRst   []Segment // every FIN and RST, in order of arrival
	// LastAck is the acknowledgement number of the latest segment (our
	// oldest unacknowledged byte) and NextSeq the sequence number after it
	// (what we acknowledge next): the numbers an in-flow probe carries.
	LastAck, NextSeq uint32
	Seen             bool // some segment after the SYN-ACK (or the SYN-ACK) was seen
}

// Fingerprint returns the server fingerprint of the flow: its SYN-ACK, or
// failing that its first data TTL.
func (r FlowRecord) Fingerprint() Fingerprint {
	if r.SynAck != nil && r.SynAck.TTL > 0 {
		return Fingerprint{TTL: r.SynAck.TTL, DF: r.SynAck.DF}
	}
	if len(r.DataTTLs) > 0 {
		return Fingerprint{TTL: r.DataTTLs[0]}
	}
	return Fingerprint{}
}

// add records seg; a new SYN-ACK starts a new connection on the same
// local port.
func (r *FlowRecord) add(seg Segment) {
	next := seg.Seq + uint32(seg.PayloadLen)
	if seg.Flags&(FlagSYN|FlagFIN) != 0 {
		next++
	}
	if seg.Flags.Has(FlagSYN | FlagACK) {
		*r = FlowRecord{}
		s := seg
		r.SynAck = &s
		r.LastAck, r.NextSeq, r.Seen = seg.Ack, next, true
		return
	}
	if seg.Flags.Has(FlagACK) && !seg.Flags.Has(FlagRST) {
		r.LastAck, r.NextSeq, r.Seen = seg.Ack, next, true
	}
	if seg.PayloadLen > 0 {
		r.Data++
		known := false
		for _, t := range r.DataTTLs {
			known = known || t == seg.TTL
		}
		if !known {
			r.DataTTLs = append(r.DataTTLs, seg.TTL)
		}
	}
	if seg.Flags&(FlagFIN|FlagRST) != 0 {
		r.FinRst = append(r.FinRst, seg)
	}
}

func (r FlowRecord) clone() FlowRecord {
	c := r
	if r.SynAck != nil {
		s := *r.SynAck
		c.SynAck = &s
	}
	c.DataTTLs = append([]int(nil), r.DataTTLs...)
	c.FinRst = append([]Segment(nil), r.FinRst...)
	return c
}
