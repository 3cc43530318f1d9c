// Package probe sends TTL-limited probes (ICMP echo, UDP, TCP SYN) over IPv4
// and IPv6, receives the answers they provoke and matches each answer to the
// exact probe that caused it.
//
// Decoders in this package are pure functions over []byte so that they can be
// table-tested with byte fixtures and fuzzed. Sockets live behind the Prober
// interface, chosen once per run (raw or unprivileged).
package probe

import (
	"net/netip"
	"time"
)

// Protocol is the transport a probe uses.
type Protocol string

// Probe protocols.
const (
	ICMP Protocol = "icmp"
	UDP  Protocol = "udp"
	TCP  Protocol = "tcp"
)

// ParseProtocol validates a protocol name.
func ParseProtocol(s string) (Protocol, bool) {
	switch Protocol(s) {
	case ICMP, UDP, TCP:
		return Protocol(s), true
	}
	return "", false
}

// Privilege is the socket tier a prober runs with. It is chosen once and
// recorded in every result because it changes what can be observed.
type Privilege string

// Privilege tiers.
const (
	// PrivilegeRaw uses raw sockets (needs CAP_NET_RAW): full control of
	// probe headers, reply TTL and IP ID, SYN-ACK/RST capture.
	PrivilegeRaw Privilege = "raw"
	// PrivilegeUnprivileged uses connect()ed UDP/TCP sockets with IP_TTL and
	// IP_RECVERR (tracepath's method) and ICMP ping sockets where allowed.
	PrivilegeUnprivileged Privilege = "unprivileged"
)

// ReplyKind classifies what came back for a probe.
type ReplyKind string

// Reply kinds.
const (
	KindTimeExceeded    ReplyKind = "time-exceeded"
	KindDestUnreachable ReplyKind = "dest-unreachable"
	KindPacketTooBig    ReplyKind = "packet-too-big"
	KindParamProblem    ReplyKind = "parameter-problem"
	KindEchoReply       ReplyKind = "echo-reply"
	KindSynAck          ReplyKind = "syn-ack"
	KindRST             ReplyKind = "rst"
	KindOther           ReplyKind = "other"
)

// MPLSLabel is one label stack entry from an RFC 4950 ICMP extension.
type MPLSLabel struct {
	Label uint32 `json:"label"`
	TC    uint8  `json:"tc"`
	S     bool   `json:"s"`
	TTL   uint8  `json:"ttl"`
}

// Quoted is the part of the original datagram that an ICMP error carries.
type Quoted struct {
	Family    int // 4 or 6
	Src, Dst  netip.Addr
	Protocol  int    // IP protocol number (IPv4) or next header (IPv6)
	TTL       int    // TTL / hop limit as the reporting router saw it
	IPID      uint16 // IPv4 only
	FlowLabel uint32 // IPv6 only
	TotalLen  int    // IPv4 total length / IPv6 payload length + 40
	// Transport holds the quoted transport bytes (RFC 792 guarantees 8).
	Transport []byte

	// HeaderLen is the quoted IP header length (IPv4 with options; 40 for
	// IPv6, whose extension headers, if any, stay in Transport).
	HeaderLen int
	// TOS is the IPv4 TOS / IPv6 traffic class byte as the router saw it,
	// to spot DSCP/ECN rewriting on the way.
	TOS uint8
	// DF is the IPv4 don't-fragment bit.
	DF bool
	// FragOffset is the IPv4 fragment offset in bytes. When it is not zero
	// Transport is not a transport header and its fields stay zero.
	FragOffset int

	// Fields decoded from Transport when present.
	SrcPort, DstPort uint16 // TCP and UDP
	TCPSeq           uint32 // TCP (needs 8 bytes)
	UDPChecksum      uint16 // UDP
	ICMPType         int    // ICMP echo
	ICMPID, ICMPSeq  uint16 // ICMP echo
	ICMPChecksum     uint16 // ICMP echo
	// TCP is the whole quoted TCP header when the router quoted all of it
	// (Linux quotes up to 576 bytes), e.g. to see an MSS clamped on the way.
	TCP *TCPSegment
}

// ICMPMessage is a decoded ICMP or ICMPv6 message.
type ICMPMessage struct {
	Family int // 4 or 6
	Kind   ReplyKind
	Type   int
	Code   int
	// MTU is the next-hop MTU of a v4 frag-needed or v6 packet-too-big.
	MTU int
	// Echo fields, for echo replies.
	EchoID, EchoSeq uint16
	EchoData        []byte
	// Quoted is set for error messages that carry the original datagram.
	Quoted *Quoted
	// MPLS labels from RFC 4884/4950 extensions, outermost first.
	MPLS []MPLSLabel
	// Pointer is the offset a parameter problem points at.
	Pointer int
}

// IPv4Header is the subset of an IPv4 header hopcheck needs.
type IPv4Header struct {
	HeaderLen int
	TotalLen  int
	ID        uint16
	DF        bool
	TTL       int
	Protocol  int
	Src, Dst  netip.Addr
	// TOS is the TOS (DSCP+ECN) byte.
	TOS uint8
	// MoreFragments and FragOffset (in bytes) describe a fragment.
	MoreFragments bool
	FragOffset    int
}

// TCPOptions are the options of a TCP segment that matter for diagnosis.
type TCPOptions struct {
	MSS         int  // 0 when absent
	WindowScale int  // -1 when absent
	SACKPermit  bool //
	Timestamps  bool
	TSVal       uint32
	TSEcr       uint32
}

// TCPSegment is a decoded TCP header.
type TCPSegment struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            TCPFlags
	Window           uint16
	DataOffset       int // header length in bytes
	Options          TCPOptions
	PayloadLen       int
}

// TCPFlags is the TCP flag byte.
type TCPFlags uint8

// TCP flag bits.
const (
	FlagFIN TCPFlags = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

// Has reports whether all bits of f2 are set.
func (f TCPFlags) Has(f2 TCPFlags) bool { return f&f2 == f2 }

// Probe is one TTL-limited probe. The Prober fills ID and SentAt.
type Probe struct {
	Protocol Protocol
	Dst      netip.Addr
	DstPort  uint16 // TCP/UDP destination port
	TTL      int
	// Flow selects the Paris flow: all probes of one flow share the
	// 5-tuple (and checksum for ICMP) so that ECMP keeps them on one path.
	Flow int

	ID     uint16    // identity within the run, set by Send
	SentAt time.Time // set by Send
}

// Response is an answer matched to a probe.
type Response struct {
	ProbeID  uint16
	Protocol Protocol
	From     netip.Addr
	Kind     ReplyKind
	Type     int
	Code     int
	RTT      time.Duration
	Received time.Time
	// ReplyTTL is the TTL/hop limit of the answering packet as received,
	// -1 when the socket could not tell.
	ReplyTTL int
	// ReplyIPID is the IPv4 ID of the answering packet, -1 when unknown.
	ReplyIPID int
	// QuotedTTL is the TTL the router saw in the probe (1 normally), -1 if
	// not quoted.
	QuotedTTL int
	MTU       int
	MPLS      []MPLSLabel
	Quoted    *Quoted     // the quoted original, for header-rewrite checks
	TCP       *TCPSegment // for SYN-ACK / RST answers
}

// Reached reports whether the response came from the destination itself
// (rather than a router on the way).
func (r Response) Reached() bool {
	switch r.Kind {
	case KindEchoReply, KindSynAck, KindRST:
		return true
	case KindDestUnreachable:
		// Port unreachable (v4 code 3, v6 code 4) comes from the target.
		if r.From.Is6() && !r.From.Is4In6() {
			return r.Code == 4
		}
		return r.Code == 3
	}
	return false
}
