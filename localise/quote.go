package localise

// Quoted-header comparison (tracebox): the fields of a probe as its quote
// in an ICMP error shows them, compared with what was sent.

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/hopcheck/hopcheck/probe"
)

// RewriteField names a header field that a middlebox may rewrite.
type RewriteField string

// Fields compared between a probe and its quotes. Identity fields (seq,
// ip-id, tsval, tcp-checksum) differ from probe to probe by design; the
// others are the same in every probe.
const (
	FieldSrcAddr       RewriteField = "src-addr"
	FieldDstAddr       RewriteField = "dst-addr"
	FieldIPID          RewriteField = "ip-id"
	FieldTOS           RewriteField = "tos" // DSCP+ECN (IPv6 traffic class)
	FieldDF            RewriteField = "df"
	FieldTTL           RewriteField = "ttl" // quoted TTL other than 0/1: a box raised it
	FieldIPLength      RewriteField = "ip-length"
	FieldSrcPort       RewriteField = "src-port"
	FieldDstPort       RewriteField = "dst-port"
	FieldSeq           RewriteField = "seq"
	FieldAck           RewriteField = "ack"
	FieldTCPFlags      RewriteField = "tcp-flags"
	FieldWindow        RewriteField = "window"
	FieldMSS           RewriteField = "mss"
	FieldWindowScale   RewriteField = "wscale"
	FieldSACKPermitted RewriteField = "sack-permitted"
	FieldTimestamps    RewriteField = "timestamps"
	FieldTSVal         RewriteField = "tsval"
	FieldTCPOptions    RewriteField = "tcp-options" // the option layout, e.g. SACK replaced by NOPs
	// FieldTCPChecksum is reported only when nothing else explains it.
	FieldTCPChecksum RewriteField = "tcp-checksum"
)

// identityField reports whether f differs between probes by design, so
// that across hops only "changed or not" can be compared, not values.
func identityField(f RewriteField) bool {
	switch f {
	case FieldSeq, FieldIPID, FieldTSVal, FieldTCPChecksum:
		return true
	}
	return false
}

// FieldChange is one field whose value in a quote differs from what the
// probe carried.
type FieldChange struct {
	Field RewriteField `json:"field"`
	Sent  string       `json:"sent"`
	Seen  string       `json:"seen"`
}

// String reads like "mss 1460→1200" or "src address 10.0.0.2→192.0.2.7".
func (c FieldChange) String() string {
	return fmt.Sprintf("%s %s→%s", c.Field.Label(), c.Sent, c.Seen)
}

// Label is the field's name in evidence text: the field itself, except
// addresses and ports, which read "src address", "dst port", ....
func (f RewriteField) Label() string {
	switch f {
	case FieldSrcAddr:
		return "src address"
	case FieldDstAddr:
		return "dst address"
	case FieldSrcPort:
		return "src port"
	case FieldDstPort:
		return "dst port"
	}
	return string(f)
}

// Translation reports the fields a NAT rewrites: addresses and ports.
func (f RewriteField) Translation() bool {
	switch f {
	case FieldSrcAddr, FieldDstAddr, FieldSrcPort, FieldDstPort:
		return true
	}
	return false
}

// fieldPair is one field as the probe carried it and as a quote shows it.
type fieldPair struct {
	Field      RewriteField
	Sent, Seen string
}

// fieldOrder fixes the order in which changes are listed.
var fieldOrder = []RewriteField{
	FieldSrcAddr, FieldDstAddr, FieldSrcPort, FieldDstPort, FieldMSS, FieldWindowScale, FieldSACKPermitted,
	FieldTimestamps, FieldTSVal, FieldTCPOptions, FieldSeq, FieldAck, FieldTCPFlags, FieldWindow,
	FieldIPID, FieldTOS, FieldDF, FieldTTL, FieldIPLength, FieldTCPChecksum,
}

// compareQuote compares the quote seen of a TCP probe with sent, the quote
// the probe would produce untouched (same decoder, so equal fields compare
// equal). It returns how much was quoted and every comparable field.
func compareQuote(sent, seen *probe.Quoted) (QuoteDepth, []fieldPair) {
	if sent == nil || seen == nil || seen.Family != sent.Family {
		return QuoteNone, nil
	}
	vals := map[RewriteField][2]string{}
	put := func(f RewriteField, a, b string) { vals[f] = [2]string{a, b} }
	put(FieldSrcAddr, sent.Src.String(), seen.Src.String())
	put(FieldDstAddr, sent.Dst.String(), seen.Dst.String())
	put(FieldTOS, fmt.Sprintf("0x%02x", sent.TOS), fmt.Sprintf("0x%02x", seen.TOS))
	put(FieldTTL, quotedTTL(sent.TTL), quotedTTL(seen.TTL))
	put(FieldIPLength, strconv.Itoa(sent.TotalLen), strconv.Itoa(seen.TotalLen))
	if sent.Family == 4 {
		put(FieldIPID, strconv.Itoa(int(sent.IPID)), strconv.Itoa(int(seen.IPID)))
		put(FieldDF, yesNo(sent.DF), yesNo(seen.DF))
	}
	depth := QuoteNone
	if seen.Protocol == ipProtoTCP && seen.FragOffset == 0 && len(seen.Transport) >= 4 {
		depth = QuotePartial
		put(FieldSrcPort, strconv.Itoa(int(sent.SrcPort)), strconv.Itoa(int(seen.SrcPort)))
		put(FieldDstPort, strconv.Itoa(int(sent.DstPort)), strconv.Itoa(int(seen.DstPort)))
		if len(seen.Transport) >= 8 {
			put(FieldSeq, strconv.FormatUint(uint64(sent.TCPSeq), 10), strconv.FormatUint(uint64(seen.TCPSeq), 10))
		}
		if a, b := sent.TCP, seen.TCP; a != nil && b != nil {
			depth = QuoteFull
			put(FieldAck, strconv.FormatUint(uint64(a.Ack), 10), strconv.FormatUint(uint64(b.Ack), 10))
			put(FieldTCPFlags, flagNames(a.Flags), flagNames(b.Flags))
			put(FieldWindow, strconv.Itoa(int(a.Window)), strconv.Itoa(int(b.Window)))
			put(FieldMSS, optInt(a.Options.MSS, a.Options.MSS > 0), optInt(b.Options.MSS, b.Options.MSS > 0))
			put(FieldWindowScale, optInt(a.Options.WindowScale, a.Options.WindowScale >= 0),
				optInt(b.Options.WindowScale, b.Options.WindowScale >= 0))
			put(FieldSACKPermitted, yesNo(a.Options.SACKPermit), yesNo(b.Options.SACKPermit))
			put(FieldTimestamps, yesNo(a.Options.Timestamps), yesNo(b.Options.Timestamps))
			if a.Options.Timestamps && b.Options.Timestamps {
				put(FieldTSVal, strconv.FormatUint(uint64(a.Options.TSVal), 10), strconv.FormatUint(uint64(b.Options.TSVal), 10))
			}
			put(FieldTCPOptions, optionLayout(sent.Transport, a.DataOffset), optionLayout(seen.Transport, b.DataOffset))
			// The checksum changes with any field above or the pseudo
			// header; only a change nothing else explains is news.
			explained := false
			for f, v := range vals {
				explained = explained || (f != FieldTOS && f != FieldTTL && f != FieldIPID && f != FieldDF && v[0] != v[1])
			}
			if !explained {
				put(FieldTCPChecksum, fmt.Sprintf("0x%04x", binary.BigEndian.Uint16(sent.Transport[16:18])),
					fmt.Sprintf("0x%04x", binary.BigEndian.Uint16(seen.Transport[16:18])))
			}
		}
	}
	pairs := make([]fieldPair, 0, len(vals))
	for _, f := range fieldOrder {
		if v, ok := vals[f]; ok {
			pairs = append(pairs, fieldPair{Field: f, Sent: v[0], Seen: v[1]})
		}
	}
	return depth, pairs
}

// changesOf returns the pairs whose values differ.
func changesOf(pairs []fieldPair) []FieldChange {
	var out []FieldChange
	for _, p := range pairs {
		if p.Sent != p.Seen {
			out = append(out, FieldChange{Field: p.Field, Sent: p.Sent, Seen: p.Seen})
		}
	}
	return out
}

// quotedTTL normalises the TTL a router quotes: Linux quotes 1 (it checks
// before decrementing), others 0; anything higher means a box raised it.
func quotedTTL(ttl int) string {
	if ttl <= 1 {
		return "1"
	}
	return strconv.Itoa(ttl)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func optInt(v int, present bool) string {
	if !present {
		return "absent"
	}
	return strconv.Itoa(v)
}

// optionLayout names the option kinds of a TCP header in order, e.g.
// "mss,sackok,ts,nop,ws".
func optionLayout(tcp []byte, dataOffset int) string {
	if dataOffset < tcpMinHeaderLen || dataOffset > len(tcp) {
		return "malformed"
	}
	kinds, err := probe.DecodeTCPOptionKinds(tcp[tcpMinHeaderLen:dataOffset])
	if err != nil {
		return "malformed"
	}
	if len(kinds) == 0 {
		return "none"
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = tcpOptionName(k)
	}
	return strings.Join(names, ",")
}

func tcpOptionName(kind uint8) string {
	switch kind {
	case 0:
		return "eol"
	case 1:
		return "nop"
	case 2:
		return "mss"
	case 3:
		return "ws"
	case 4:
		return "sackok"
	case 5:
		return "sack"
	case 8:
		return "ts"
	case 19:
		return "md5"
	case 29:
		return "ao"
	case 30:
		return "mptcp"
	case 34:
		return "tfo"
	}
	return "opt" + strconv.Itoa(int(kind))
}

// flagNames names the flags, e.g. "SYN|ACK"; "none" for no flag.
func flagNames(f probe.TCPFlags) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var set []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			set = append(set, n)
		}
	}
	if len(set) == 0 {
		return "none"
	}
	return strings.Join(set, "|")
}
