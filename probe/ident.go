package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Ident is the identity a run stamps on its probes so that answers are
// matched to the exact probe even when another hopcheck or traceroute
// probes the same path at the same time: a random per-run nonce plus the
// 16-bit probe index, carried where each protocol lets it survive the
// trip (and the 8-byte quote of an ICMP error):
//
//   - TCP: the sequence number, high 16 bits from the nonce, low 16 the index;
//     a SYN-ACK or RST acknowledges seq+1.
//   - UDP: the checksum (a run-specific map of the index), Paris style, and
//     the payload (see Payload) when a router quotes it.
//   - ICMP echo: the identifier (from the nonce) and the sequence number (the
//     index), the checksum held constant per flow, and the payload.
//
// Ports are not part of Ident: callers match them (and the quoted
// destination) themselves.
type Ident struct {
	Nonce uint32
}

// NewIdent draws a nonce from r (crypto/rand.Reader in production).
func NewIdent(r io.Reader) (Ident, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Ident{}, fmt.Errorf("ident: read nonce: %w", err)
	}
	return Ident{Nonce: binary.BigEndian.Uint32(b[:])}, nil
}

const nonceHighMask = 0xffff0000

// TCPSeq returns the sequence number of TCP probe index.
func (id Ident) TCPSeq(index uint16) uint32 {
	return id.Nonce&nonceHighMask | uint32(index)
}

// IndexFromTCPSeq recovers the index from a (quoted) sequence number; false
// when its high 16 bits are not this run's.
func (id Ident) IndexFromTCPSeq(seq uint32) (uint16, bool) {
	if seq&nonceHighMask != id.Nonce&nonceHighMask {
		return 0, false
	}
	return uint16(seq), true
}

// IndexFromTCPAck recovers the index from the acknowledgment number of a
// SYN-ACK or RST answering a SYN probe (ack = seq+1).
func (id Ident) IndexFromTCPAck(ack uint32) (uint16, bool) {
	return id.IndexFromTCPSeq(ack - 1)
}

// Payload layout: magic, nonce, index, zero fill, then 2 bytes that
// BuildUDP and BuildICMPEcho overwrite with their checksum compensation.
var payloadMagic = []byte("hopc")

const (
	payloadIdentLen = 4 + 4 + 2
	// PayloadMinLen is the smallest payload Payload returns: the identity
	// plus the 2-byte checksum compensation word at the end.
	PayloadMinLen = payloadIdentLen + 2
)

// Payload returns a size-byte probe payload (at least PayloadMinLen) that
// starts with "hopc", the nonce and index (big-endian) and ends with 2
// zero bytes reserved for the builders' checksum compensation word. It is
// how unprivileged mode matches the payload the error queue returns, and
// how echo replies and generously quoted datagrams are verified.
func (id Ident) Payload(index uint16, size int) []byte {
	b := make([]byte, max(size, PayloadMinLen))
	copy(b, payloadMagic)
	binary.BigEndian.PutUint32(b[4:8], id.Nonce)
	binary.BigEndian.PutUint16(b[8:10], index)
	return b
}

// IndexFromPayload recovers the index from a payload made by Payload
// (only its first 10 bytes are needed); false when b is too short, lacks
// the magic, or carries another run's nonce.
func (id Ident) IndexFromPayload(b []byte) (uint16, bool) {
	if !hasPayloadIdent(b) || binary.BigEndian.Uint32(b[4:8]) != id.Nonce {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[8:10]), true
}

func hasPayloadIdent(b []byte) bool {
	return len(b) >= payloadIdentLen && bytes.Equal(b[:4], payloadMagic)
}

// MaxUDPIndex is the largest index UDPChecksum maps one to one: a UDP
// checksum has 65535 usable values (0 means "none"), one fewer than there
// are indices, so index 0xffff would share its checksum with index 0.
const MaxUDPIndex = 0xfffe

// udpOffset makes the index-to-checksum map run specific, so two runs that
// happen to share ports do not send the same checksum for the same index.
func (id Ident) udpOffset() uint32 {
	return ((id.Nonce>>16 ^ id.Nonce) & 0xffff) % 0xffff
}

// UDPChecksum returns the non-zero UDP checksum that carries index (at
// most MaxUDPIndex) in the 8 quoted bytes of an ICMP error.
func (id Ident) UDPChecksum(index uint16) uint16 {
	return uint16((uint32(index)+id.udpOffset())%0xffff) + 1
}

// IndexFromUDPChecksum inverts UDPChecksum; false for checksum 0. Every
// other value maps to some index, so this alone cannot reject a foreign
// probe: match ports too, and prefer the payload when it is quoted.
func (id Ident) IndexFromUDPChecksum(sum uint16) (uint16, bool) {
	if sum == 0 {
		return 0, false
	}
	return uint16((uint32(sum) - 1 + 0xffff - id.udpOffset()) % 0xffff), true
}

// ICMPID returns the ICMP echo identifier of this run (the low 16 bits of
// the nonce; TCP uses the high 16).
func (id Ident) ICMPID() uint16 {
	return uint16(id.Nonce)
}

// FlowChecksum returns the ICMP echo checksum of Paris flow: constant for a
// flow, different for each of up to 65534 flows, never 0 or 0xffff (so any
// checksum computation writes it unchanged).
func (id Ident) FlowChecksum(flow int) uint16 {
	const n = 0xfffe // values 1..0xfffe
	// Multiplying by a constant coprime with n spreads consecutive flows
	// over all bits the ECMP hash may look at, and stays one to one.
	const spread = 40503
	f := flow % n
	if f < 0 {
		f += n
	}
	base := uint64(id.Nonce>>16^id.Nonce) & 0xffff
	return uint16((uint64(f)*spread+base)%n) + 1
}

// ICMP echo request types quoted by ICMP errors.
const (
	icmpv4EchoRequest = 8
	icmpv6EchoRequest = 128
)

// IndexFromQuoted recovers the probe index from the datagram an ICMP error
// quotes, for a probe sent with protocol proto:
//
//   - TCP: from the quoted sequence number (nonce bits checked).
//   - UDP: from the quoted payload when the router quoted it (nonce
//     checked), otherwise from the quoted checksum.
//   - ICMP: the quoted message must be an echo request with this run's
//     identifier; the index is its sequence number, and a quoted payload
//     must agree with it.
//
// It needs the first 8 transport bytes and a first fragment. Ports and the
// quoted destination are not checked: the caller matches them.
func (id Ident) IndexFromQuoted(q *Quoted, proto Protocol) (uint16, bool) {
	if q == nil || q.FragOffset != 0 || len(q.Transport) < 8 {
		return 0, false
	}
	payload := q.Transport[8:]
	switch proto {
	case TCP:
		if q.Protocol != protoTCP {
			return 0, false
		}
		return id.IndexFromTCPSeq(q.TCPSeq)
	case UDP:
		if q.Protocol != protoUDP {
			return 0, false
		}
		if hasPayloadIdent(payload) {
			return id.IndexFromPayload(payload)
		}
		return id.IndexFromUDPChecksum(q.UDPChecksum)
	case ICMP:
		wantProto, wantType := protoICMP, icmpv4EchoRequest
		if q.Family == 6 {
			wantProto, wantType = protoICMPv6, icmpv6EchoRequest
		}
		if q.Protocol != wantProto || q.ICMPType != wantType || q.ICMPID != id.ICMPID() {
			return 0, false
		}
		if hasPayloadIdent(payload) {
			if index, ok := id.IndexFromPayload(payload); !ok || index != q.ICMPSeq {
				return 0, false
			}
		}
		return q.ICMPSeq, true
	}
	return 0, false
}
