package probe

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Linux socket error queue constants (linux/errqueue.h, in6.h). They are
// spelled out here because the decoder below is pure and portable.
const (
	soEEOriginLocal = 1
	soEEOriginICMP  = 2
	soEEOriginICMP6 = 3

	solIP      = 0
	solIPv6    = 41
	ipTTL      = 2  // IP_TTL cmsg (with IP_RECVTTL)
	ipRecvErr  = 11 // IP_RECVERR cmsg
	ipv6RecvEr = 25 // IPV6_RECVERR cmsg
	ipv6HopLim = 52 // IPV6_HOPLIMIT cmsg (with IPV6_RECVHOPLIMIT)
)

// ErrQueueEntry is one message read from a socket's MSG_ERRQUEUE:
// the ICMP error the kernel matched to the socket, with the router
// that sent it (the offender) and the TTL of the ICMP packet.
type ErrQueueEntry struct {
	Errno    uint32
	Origin   uint8 // 1 local, 2 ICMP, 3 ICMPv6
	Type     uint8 // ICMP type
	Code     uint8 // ICMP code
	Info     uint32
	Offender netip.Addr
	// ReplyTTL is the TTL/hop limit of the ICMP packet, -1 if not given.
	ReplyTTL int
}

var errNoExtendedErr = errors.New("errqueue: no IP_RECVERR/IPV6_RECVERR control message")

// DecodeErrQueue parses the control messages of a recvmsg(MSG_ERRQUEUE)
// call: a sock_extended_err followed by the offender's sockaddr, and an
// optional IP_TTL / IPV6_HOPLIMIT message. Host byte order is little
// endian on every platform hopcheck supports for this path (Linux amd64,
// arm64).
func DecodeErrQueue(oob []byte) (ErrQueueEntry, error) {
	e := ErrQueueEntry{ReplyTTL: -1}
	found := false
	for len(oob) >= 16 {
		// struct cmsghdr { size_t len; int level; int type; } = 16 bytes on 64-bit.
		l := binary.LittleEndian.Uint64(oob[0:8])
		level := int32(binary.LittleEndian.Uint32(oob[8:12]))
		typ := int32(binary.LittleEndian.Uint32(oob[12:16]))
		if l < 16 || l > uint64(len(oob)) {
			break
		}
		data := oob[16:l]
		switch {
		case (level == solIP && typ == ipRecvErr) || (level == solIPv6 && typ == ipv6RecvEr):
			if len(data) < 16 {
				return e, errors.New("errqueue: short sock_extended_err")
			}
			e.Errno = binary.LittleEndian.Uint32(data[0:4])
			e.Origin = data[4]
			e.Type = data[5]
			e.Code = data[6]
			e.Info = binary.LittleEndian.Uint32(data[8:12])
			e.Offender = decodeSockaddr(data[16:])
			found = true
		case (level == solIP && typ == ipTTL) || (level == solIPv6 && typ == ipv6HopLim):
			if len(data) >= 4 {
				e.ReplyTTL = int(int32(binary.LittleEndian.Uint32(data[0:4])))
			}
		}
		// Advance by the aligned length (8-byte alignment on 64-bit).
		step := (l + 7) &^ 7
		if step > uint64(len(oob)) {
			break
		}
		oob = oob[step:]
	}
	if !found {
		return e, errNoExtendedErr
	}
	return e, nil
}

// decodeSockaddr reads a sockaddr_in or sockaddr_in6 (family in host
// order, then port and address in network order).
func decodeSockaddr(b []byte) netip.Addr {
	if len(b) < 2 {
		return netip.Addr{}
	}
	switch binary.LittleEndian.Uint16(b[0:2]) {
	case 2: // AF_INET
		if len(b) >= 8 {
			return netip.AddrFrom4([4]byte(b[4:8]))
		}
	case 10: // AF_INET6
		if len(b) >= 24 {
			return netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		}
	}
	return netip.Addr{}
}

// kindFromErrQueue maps an ICMP type/code seen through the error queue to
// a reply kind.
func kindFromErrQueue(e ErrQueueEntry) ReplyKind {
	switch e.Origin {
	case soEEOriginICMP:
		switch e.Type {
		case 11:
			return KindTimeExceeded
		case 3:
			return KindDestUnreachable
		case 12:
			return KindParamProblem
		}
	case soEEOriginICMP6:
		switch e.Type {
		case 3:
			return KindTimeExceeded
		case 1:
			return KindDestUnreachable
		case 2:
			return KindPacketTooBig
		case 4:
			return KindParamProblem
		}
	}
	return KindOther
}

// responseFromErrQueue fills a response from an error queue entry.
func responseFromErrQueue(e ErrQueueEntry) Response {
	r := Response{From: e.Offender, Kind: kindFromErrQueue(e), Type: int(e.Type), Code: int(e.Code),
		ReplyTTL: e.ReplyTTL, ReplyIPID: -1, QuotedTTL: -1}
	if (r.Kind == KindDestUnreachable && e.Origin == soEEOriginICMP && e.Code == 4) || r.Kind == KindPacketTooBig {
		r.MTU = int(e.Info)
	}
	return r
}
