package probe

import (
	"net/netip"
	"time"
)

// PathEvent is one ICMP message, or one TCP segment from the destination,
// read from the raw sockets toward one destination (RawPath, the raw
// prober): what a localisation probe matches against what it sent.
type PathEvent struct {
	At        time.Time
	From      netip.Addr
	ReplyTTL  int // TTL / hop limit of the received packet, -1 unknown
	ReplyIPID int // IPv4 ID of the received packet, -1 for IPv6
	ICMP      *ICMPMessage
	TCP       *TCPSegment
}

// pathEvent is PathEvent under the name the raw prober's files use.
type pathEvent = PathEvent
