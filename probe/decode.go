package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Decoding failures. Every decoder error wraps one of these, so callers can
// tell a short read from a foreign or broken packet with errors.Is.
var (
	// ErrTruncated: the input ends before a header or a length field says.
	ErrTruncated = errors.New("truncated")
	// ErrBadVersion: the IP version nibble is not the expected one.
	ErrBadVersion = errors.New("wrong IP version")
	// ErrMalformed: a length field is impossible (e.g. IHL below 5).
	ErrMalformed = errors.New("malformed")
	// ErrBadQuote: an ICMP error's quoted datagram could not be decoded.
	// It is wrapped together with the reason (ErrTruncated, ...).
	ErrBadQuote = errors.New("bad quoted datagram")
)

// IP protocol numbers used by the decoders and builders.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	ipv4MinHeaderLen = 20
	ipv6HeaderLen    = 40
	tcpMinHeaderLen  = 20
	icmpHeaderLen    = 8
)

// DecodeIPv4Header decodes the header of a raw IPv4 packet. Only the header
// must be present; TotalLen is reported as found, not checked against len(b).
func DecodeIPv4Header(b []byte) (IPv4Header, error) {
	if len(b) < ipv4MinHeaderLen {
		return IPv4Header{}, fmt.Errorf("ipv4: header needs %d bytes, have %d: %w", ipv4MinHeaderLen, len(b), ErrTruncated)
	}
	if v := b[0] >> 4; v != 4 {
		return IPv4Header{}, fmt.Errorf("ipv4: version %d: %w", v, ErrBadVersion)
	}
	hl := int(b[0]&0x0f) * 4
	if hl < ipv4MinHeaderLen {
		return IPv4Header{}, fmt.Errorf("ipv4: header length %d below %d: %w", hl, ipv4MinHeaderLen, ErrMalformed)
	}
	if len(b) < hl {
		return IPv4Header{}, fmt.Errorf("ipv4: header length %d, have %d bytes: %w", hl, len(b), ErrTruncated)
	}
	flagsFrag := binary.BigEndian.Uint16(b[6:8])
	return IPv4Header{
		HeaderLen:     hl,
		TotalLen:      int(binary.BigEndian.Uint16(b[2:4])),
		ID:            binary.BigEndian.Uint16(b[4:6]),
		DF:            flagsFrag&0x4000 != 0,
		MoreFragments: flagsFrag&0x2000 != 0,
		FragOffset:    int(flagsFrag&0x1fff) * 8,
		TTL:           int(b[8]),
		Protocol:      int(b[9]),
		Src:           netip.AddrFrom4([4]byte(b[12:16])),
		Dst:           netip.AddrFrom4([4]byte(b[16:20])),
		TOS:           b[1],
	}, nil
}

// DecodeIPv4Packet decodes an IPv4 header and returns the payload bounded
// by the total length (trailing link-layer padding is dropped). A total
// length of 0, as seen on segmentation-offloaded packets, means "the rest
// of b". When b is shorter than the total length, the available payload
// is returned with an error wrapping ErrTruncated. The payload aliases b.
func DecodeIPv4Packet(b []byte) (IPv4Header, []byte, error) {
	h, err := DecodeIPv4Header(b)
	if err != nil {
		return IPv4Header{}, nil, err
	}
	payload := b[h.HeaderLen:]
	switch {
	case h.TotalLen == 0:
	case h.TotalLen < h.HeaderLen:
		return h, nil, fmt.Errorf("ipv4: total length %d below header length %d: %w", h.TotalLen, h.HeaderLen, ErrMalformed)
	case h.TotalLen > len(b):
		return h, payload, fmt.Errorf("ipv4: total length %d, have %d bytes: %w", h.TotalLen, len(b), ErrTruncated)
	default:
		payload = b[h.HeaderLen:h.TotalLen]
	}
	return h, payload, nil
}

// DecodeICMPv4 decodes an ICMP message (without the outer IP header).
//
// Messages of other types than time-exceeded, dest-unreachable,
// parameter-problem and echo-reply decode with Kind KindOther (echo
// requests still fill the echo fields). If an error message's quoted
// datagram cannot be decoded, the message is returned without Quoted along
// with an error wrapping ErrBadQuote and the reason.
//
// The ICMP checksum is not verified (raw IPv4 sockets deliver messages
// with bad checksums); callers that care can test Checksum(b, 0) == 0.
func DecodeICMPv4(b []byte) (ICMPMessage, error) {
	if len(b) < icmpHeaderLen {
		return ICMPMessage{}, fmt.Errorf("icmp: message needs %d bytes, have %d: %w", icmpHeaderLen, len(b), ErrTruncated)
	}
	m, err := parseICMP(protoICMP, b)
	if err != nil {
		return ICMPMessage{}, fmt.Errorf("icmp: parse type %d code %d: %w: %w", b[0], b[1], ErrMalformed, err)
	}
	msg := ICMPMessage{Family: 4, Kind: KindOther, Type: int(b[0]), Code: int(b[1])}
	var data []byte
	var exts []icmp.Extension
	switch body := m.Body.(type) {
	case *icmp.TimeExceeded:
		msg.Kind, data, exts = KindTimeExceeded, body.Data, body.Extensions
	case *icmp.DstUnreach:
		msg.Kind, data, exts = KindDestUnreachable, body.Data, body.Extensions
		if msg.Code == 4 { // fragmentation needed and DF set (RFC 1191)
			msg.MTU = int(binary.BigEndian.Uint16(b[6:8]))
		}
	case *icmp.ParamProb:
		msg.Kind, data, exts = KindParamProblem, body.Data, body.Extensions
		msg.Pointer = int(body.Pointer)
	case *icmp.Echo:
		if m.Type == ipv4.ICMPTypeEchoReply {
			msg.Kind = KindEchoReply
		}
		msg.EchoID, msg.EchoSeq, msg.EchoData = uint16(body.ID), uint16(body.Seq), body.Data
		return msg, nil
	default:
		return msg, nil
	}
	msg.MPLS = mplsLabels(exts)
	q, err := decodeQuotedIPv4(data)
	if err != nil {
		return msg, fmt.Errorf("icmp: %s code %d: %w: %w", msg.Kind, msg.Code, ErrBadQuote, err)
	}
	msg.Quoted = q
	return msg, nil
}

// DecodeICMPv6 decodes an ICMPv6 message (as read from a raw ICMPv6
// socket). It behaves like DecodeICMPv4; packet-too-big carries MTU.
// The ICMPv6 checksum is not verified: it needs the IPv6 pseudo-header,
// and Linux already verifies it for raw ICMPv6 sockets.
func DecodeICMPv6(b []byte) (ICMPMessage, error) {
	if len(b) < icmpHeaderLen {
		return ICMPMessage{}, fmt.Errorf("icmpv6: message needs %d bytes, have %d: %w", icmpHeaderLen, len(b), ErrTruncated)
	}
	m, err := parseICMP(protoICMPv6, b)
	if err != nil {
		return ICMPMessage{}, fmt.Errorf("icmpv6: parse type %d code %d: %w: %w", b[0], b[1], ErrMalformed, err)
	}
	msg := ICMPMessage{Family: 6, Kind: KindOther, Type: int(b[0]), Code: int(b[1])}
	var data []byte
	var exts []icmp.Extension
	switch body := m.Body.(type) {
	case *icmp.TimeExceeded:
		msg.Kind, data, exts = KindTimeExceeded, body.Data, body.Extensions
	case *icmp.DstUnreach:
		msg.Kind, data, exts = KindDestUnreachable, body.Data, body.Extensions
	case *icmp.PacketTooBig:
		msg.Kind, data = KindPacketTooBig, body.Data
		msg.MTU = body.MTU
	case *icmp.ParamProb:
		msg.Kind, data, exts = KindParamProblem, body.Data, body.Extensions
		msg.Pointer = int(body.Pointer)
	case *icmp.Echo:
		if m.Type == ipv6.ICMPTypeEchoReply {
			msg.Kind = KindEchoReply
		}
		msg.EchoID, msg.EchoSeq, msg.EchoData = uint16(body.ID), uint16(body.Seq), body.Data
		return msg, nil
	default:
		return msg, nil
	}
	msg.MPLS = mplsLabels(exts)
	q, err := decodeQuotedIPv6(data)
	if err != nil {
		return msg, fmt.Errorf("icmpv6: %s code %d: %w: %w", msg.Kind, msg.Code, ErrBadQuote, err)
	}
	msg.Quoted = q
	return msg, nil
}

// parseICMP is icmp.ParseMessage, with a panic in it (a bug on some
// input we have not met) turned into an error: decoders face arbitrary
// packets from the network and must never take the process down.
func parseICMP(proto int, b []byte) (m *icmp.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("x/net/icmp panicked: %v", r)
		}
	}()
	return icmp.ParseMessage(proto, b)
}

// mplsLabels collects the RFC 4950 incoming label stack entries.
func mplsLabels(exts []icmp.Extension) []MPLSLabel {
	var labels []MPLSLabel
	for _, ext := range exts {
		ls, ok := ext.(*icmp.MPLSLabelStack)
		if !ok || ls.Type != 1 { // C-Type 1: incoming MPLS label stack
			continue
		}
		for _, l := range ls.Labels {
			labels = append(labels, MPLSLabel{Label: uint32(l.Label), TC: uint8(l.TC), S: l.S, TTL: uint8(l.TTL)})
		}
	}
	return labels
}

// decodeQuotedIPv4 decodes the original datagram field of an ICMP error.
// With RFC 4884 extensions the field is zero-padded to at least 128 bytes,
// so the transport bytes are bounded by the quoted total length.
func decodeQuotedIPv4(data []byte) (*Quoted, error) {
	h, err := DecodeIPv4Header(data)
	if err != nil {
		return nil, err
	}
	q := &Quoted{
		Family: 4, Src: h.Src, Dst: h.Dst, Protocol: h.Protocol, TTL: h.TTL, IPID: h.ID,
		TotalLen: h.TotalLen, HeaderLen: h.HeaderLen, TOS: h.TOS, DF: h.DF, FragOffset: h.FragOffset,
	}
	t := data[h.HeaderLen:]
	// A total length of 0 (offloaded) or one below the header length
	// (mangled) cannot bound anything; keep what was quoted.
	if n := h.TotalLen - h.HeaderLen; n >= 0 && h.TotalLen != 0 && n < len(t) {
		t = t[:n]
	}
	q.Transport = t
	if h.FragOffset == 0 {
		decodeQuotedTransport(q, protoICMP)
	}
	return q, nil
}

// decodeQuotedIPv6 decodes a quoted IPv6 datagram. Extension headers are
// not walked: Protocol is then the extension header's number, the ports
// stay zero and Transport starts with the extension header.
func decodeQuotedIPv6(data []byte) (*Quoted, error) {
	if len(data) < ipv6HeaderLen {
		return nil, fmt.Errorf("ipv6: header needs %d bytes, have %d: %w", ipv6HeaderLen, len(data), ErrTruncated)
	}
	if v := data[0] >> 4; v != 6 {
		return nil, fmt.Errorf("ipv6: version %d: %w", v, ErrBadVersion)
	}
	payloadLen := int(binary.BigEndian.Uint16(data[4:6]))
	q := &Quoted{
		Family:    6,
		Src:       netip.AddrFrom16([16]byte(data[8:24])),
		Dst:       netip.AddrFrom16([16]byte(data[24:40])),
		Protocol:  int(data[6]),
		TTL:       int(data[7]),
		FlowLabel: binary.BigEndian.Uint32(data[0:4]) & 0xfffff,
		TOS:       uint8(binary.BigEndian.Uint16(data[0:2]) >> 4),
		TotalLen:  payloadLen + ipv6HeaderLen,
		HeaderLen: ipv6HeaderLen,
	}
	t := data[ipv6HeaderLen:]
	// Payload length 0 with a hop-by-hop header is a jumbogram: unbounded.
	jumbo := payloadLen == 0 && q.Protocol == 0
	if !jumbo && payloadLen < len(t) {
		t = t[:payloadLen]
	}
	q.Transport = t
	decodeQuotedTransport(q, protoICMPv6)
	return q, nil
}

// decodeQuotedTransport fills the transport fields of q from the quoted
// bytes that are present (RFC 792 guarantees only 8).
func decodeQuotedTransport(q *Quoted, icmpProto int) {
	t := q.Transport
	switch q.Protocol {
	case protoTCP, protoUDP:
		if len(t) >= 4 {
			q.SrcPort = binary.BigEndian.Uint16(t[0:2])
			q.DstPort = binary.BigEndian.Uint16(t[2:4])
		}
		if len(t) < 8 {
			return
		}
		if q.Protocol == protoUDP {
			q.UDPChecksum = binary.BigEndian.Uint16(t[6:8])
			return
		}
		q.TCPSeq = binary.BigEndian.Uint32(t[4:8])
		if seg, err := DecodeTCPSegment(t); err == nil {
			q.TCP = &seg
		}
	case icmpProto:
		if len(t) >= 4 {
			q.ICMPType = int(t[0])
			q.ICMPChecksum = binary.BigEndian.Uint16(t[2:4])
		}
		if len(t) >= 8 {
			q.ICMPID = binary.BigEndian.Uint16(t[4:6])
			q.ICMPSeq = binary.BigEndian.Uint16(t[6:8])
		}
	}
}

// DecodeTCPSegment decodes a TCP header and reports the payload length.
// Options are parsed the way Linux does: an option with an impossible
// length ends parsing and keeps what was parsed before; options of the
// wrong size are skipped. WindowScale is -1 when absent and reported as
// sent, even above the RFC 7323 limit of 14.
func DecodeTCPSegment(b []byte) (TCPSegment, error) {
	if len(b) < tcpMinHeaderLen {
		return TCPSegment{}, fmt.Errorf("tcp: header needs %d bytes, have %d: %w", tcpMinHeaderLen, len(b), ErrTruncated)
	}
	off := int(b[12]>>4) * 4
	if off < tcpMinHeaderLen {
		return TCPSegment{}, fmt.Errorf("tcp: data offset %d below %d: %w", off, tcpMinHeaderLen, ErrMalformed)
	}
	if off > len(b) {
		return TCPSegment{}, fmt.Errorf("tcp: data offset %d, have %d bytes: %w", off, len(b), ErrTruncated)
	}
	return TCPSegment{
		SrcPort:    binary.BigEndian.Uint16(b[0:2]),
		DstPort:    binary.BigEndian.Uint16(b[2:4]),
		Seq:        binary.BigEndian.Uint32(b[4:8]),
		Ack:        binary.BigEndian.Uint32(b[8:12]),
		Flags:      TCPFlags(b[13]),
		Window:     binary.BigEndian.Uint16(b[14:16]),
		DataOffset: off,
		Options:    decodeTCPOptions(b[tcpMinHeaderLen:off]),
		PayloadLen: len(b) - off,
	}, nil
}

// TCP option kinds (RFC 9293, RFC 2018, RFC 7323).
const (
	tcpOptEOL       = 0
	tcpOptNOP       = 1
	tcpOptMSS       = 2
	tcpOptWS        = 3
	tcpOptSACKPerm  = 4
	tcpOptTimestamp = 8
)

func decodeTCPOptions(o []byte) TCPOptions {
	opts := TCPOptions{WindowScale: -1}
	for i := 0; i < len(o); {
		kind := o[i]
		switch kind {
		case tcpOptEOL:
			return opts
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(o) {
			return opts
		}
		n := int(o[i+1])
		if n < 2 || i+n > len(o) {
			return opts
		}
		v := o[i+2 : i+n]
		switch {
		case kind == tcpOptMSS && n == 4:
			opts.MSS = int(binary.BigEndian.Uint16(v))
		case kind == tcpOptWS && n == 3:
			opts.WindowScale = int(v[0])
		case kind == tcpOptSACKPerm && n == 2:
			opts.SACKPermit = true
		case kind == tcpOptTimestamp && n == 10:
			opts.Timestamps = true
			opts.TSVal = binary.BigEndian.Uint32(v[0:4])
			opts.TSEcr = binary.BigEndian.Uint32(v[4:8])
		}
		i += n
	}
	return opts
}
