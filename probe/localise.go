package probe

// Localisation: which hop of a path rewrites headers, translates
// addresses, or lost the state of a flow. This file holds the result types
// and the pure comparisons; localise_linux.go sends and receives.
//
// Where Linux forwarders act, relative to the TTL check, decides how a
// symptom maps to a hop: ip_forward answers an expiring packet with
// time-exceeded before the packet reaches the netfilter forward and
// postrouting hooks, where MSS clamping, NAT, "ct state invalid" resets and
// drops, and the MTU check happen. So the box at hop k still answers TTL k
// itself with an untouched quote, and its action shows first on probes with
// TTL k+1: the box is the last hop whose answer was still normal. Boxes that
// act before their TTL check (or do not decrement TTL at all) shift that by
// one hop; results say so with a range (Hop..UpTo) where it matters.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Tri is a tri-state result: a check that did not run ("not-tested")
// differs from one that found nothing ("no").
type Tri string

// Tri-state values.
const (
	TriYes       Tri = "yes"
	TriNo        Tri = "no"
	TriNotTested Tri = "not-tested"
)

// ---------------------------------------------------------------------------
// Quoted-header comparison (tracebox)

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

// Rewrite is a change attributed to the box that made it.
type Rewrite struct {
	Field  RewriteField `json:"field"`
	Before string       `json:"before"` // as the quote of hop Hop (or the probe) showed it
	After  string       `json:"after"`  // as the quote of hop SeenAt shows it
	// Hop is the box: the last hop whose quote still showed Before (hop 0:
	// this host, or hop 1 acting before its TTL check). When the hops after
	// it were silent or quoted too little, the box is one of Hop..UpTo.
	Hop  int `json:"hop"`
	UpTo int `json:"up_to"`
	// SeenAt is the first hop whose quote shows After.
	SeenAt int `json:"seen_at"`
}

// Change returns the rewrite as a FieldChange (Before→After).
func (r Rewrite) Change() FieldChange {
	return FieldChange{Field: r.Field, Sent: r.Before, Seen: r.After}
}

// String reads like "mss 1460→1200 at hop 2" or "… at hop 2-3".
func (r Rewrite) String() string {
	where := strconv.Itoa(r.Hop)
	if r.UpTo > r.Hop {
		where += "-" + strconv.Itoa(r.UpTo)
	}
	return r.Change().String() + " at hop " + where
}

// RewriteAnswer is what came back for one TTL of a rewrite probe.
type RewriteAnswer string

// Rewrite probe answers.
const (
	AnswerTimeExceeded RewriteAnswer = "time-exceeded"
	AnswerUnreachable  RewriteAnswer = "unreachable" // another ICMP error quoting the probe
	AnswerDestination  RewriteAnswer = "destination" // SYN-ACK or RST from the destination
	AnswerNone         RewriteAnswer = "none"
)

// QuoteDepth is how much of the probe an ICMP error quoted.
type QuoteDepth string

// Quote depths: "full" has the IP header and the whole TCP header with
// options; "partial" at least the ports (and usually the sequence number,
// RFC 792's 8 bytes); "none" no usable quote.
const (
	QuoteFull    QuoteDepth = "full"
	QuotePartial QuoteDepth = "partial"
	QuoteNone    QuoteDepth = "none"
)

// HopRewrite is what one TTL of a rewrite probe showed.
type HopRewrite struct {
	TTL    int           `json:"ttl"`
	From   netip.Addr    `json:"from"` // zero: nobody answered
	Answer RewriteAnswer `json:"answer"`
	Quote  QuoteDepth    `json:"quote"`
	// Changes are the differences of this hop's quote from the probe:
	// everything rewritten by the boxes before this hop.
	Changes []FieldChange `json:"changes,omitempty"`
	// Rewrites are the changes attributed to the box at this hop (see
	// Rewrite.Hop; a rewrite by "hop 0" is listed where it was seen).
	Rewrites []Rewrite `json:"rewrites,omitempty"`

	fields []fieldPair // every compared field, for the attribution
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
func compareQuote(sent, seen *Quoted) (QuoteDepth, []fieldPair) {
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
	if seen.Protocol == protoTCP && seen.FragOffset == 0 && len(seen.Transport) >= 4 {
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
	kinds, err := DecodeTCPOptionKinds(tcp[tcpMinHeaderLen:dataOffset])
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
	case tcpOptEOL:
		return "eol"
	case tcpOptNOP:
		return "nop"
	case tcpOptMSS:
		return "mss"
	case tcpOptWS:
		return "ws"
	case tcpOptSACKPerm:
		return "sackok"
	case 5:
		return "sack"
	case tcpOptTimestamp:
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

// DecodeTCPOptionKinds lists the kinds of the TCP options in b (the bytes
// between the fixed header and the data offset), in order, NOPs included;
// an EOL is listed and ends the list. Unlike the lenient parse of
// DecodeTCPSegment it fails on an option whose length is impossible
// (ErrMalformed) or runs past b (ErrTruncated): the layout is evidence, so
// a broken one must not look like a shorter valid one.
func DecodeTCPOptionKinds(b []byte) ([]uint8, error) {
	var kinds []uint8
	for i := 0; i < len(b); {
		kind := b[i]
		kinds = append(kinds, kind)
		switch kind {
		case tcpOptEOL:
			return kinds, nil
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(b) {
			return nil, fmt.Errorf("tcp option %d at %d: no length byte: %w", kind, i, ErrTruncated)
		}
		n := int(b[i+1])
		if n < 2 {
			return nil, fmt.Errorf("tcp option %d at %d: length %d below 2: %w", kind, i, n, ErrMalformed)
		}
		if i+n > len(b) {
			return nil, fmt.Errorf("tcp option %d at %d: length %d, %d bytes left: %w", kind, i, n, len(b)-i, ErrTruncated)
		}
		i += n
	}
	return kinds, nil
}

// flagNames names the flags, e.g. "SYN|ACK"; "none" for no flag.
func flagNames(f TCPFlags) string {
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

// hopFields is one hop's comparable fields for the attribution; nil
// Fields: no usable quote at that TTL.
type hopFields struct {
	TTL    int
	Fields []fieldPair
}

// attributeRewrites walks the hops in TTL order and, per field, finds
// where its value changes from one quote to the next: the box that made
// the change is after the last hop that still showed the old value
// (Linux forwarders rewrite after their TTL check). Identity fields are
// compared as changed or not, their values differing per probe.
func attributeRewrites(hops []hopFields) []Rewrite {
	type state struct {
		changed bool
		value   string
		ttl     int
	}
	last := map[RewriteField]state{}
	var out []Rewrite
	for _, h := range hops {
		for _, f := range h.Fields {
			changed := f.Sent != f.Seen
			prev, ok := last[f.Field]
			if !ok {
				prev = state{value: f.Sent}
			}
			same := prev.changed == changed && (identityField(f.Field) || prev.value == f.Seen)
			if !same {
				before := prev.value
				if identityField(f.Field) && !prev.changed {
					before = f.Sent // this probe's own value
				}
				out = append(out, Rewrite{Field: f.Field, Before: before, After: f.Seen,
					Hop: prev.ttl, UpTo: max(prev.ttl, h.TTL-1), SeenAt: h.TTL})
			}
			last[f.Field] = state{changed: changed, value: f.Seen, ttl: h.TTL}
		}
	}
	return out
}

// finishRewrites fills Changes and Rewrites of hops (in TTL order) from
// their compared fields.
func finishRewrites(hops []HopRewrite) {
	in := make([]hopFields, 0, len(hops))
	index := map[int]int{}
	for i := range hops {
		hops[i].Changes = changesOf(hops[i].fields)
		index[hops[i].TTL] = i
		if hops[i].fields != nil {
			in = append(in, hopFields{TTL: hops[i].TTL, Fields: hops[i].fields})
		}
	}
	for _, r := range attributeRewrites(in) {
		i, ok := index[r.Hop]
		if !ok {
			i = index[r.SeenAt]
		}
		hops[i].Rewrites = append(hops[i].Rewrites, r)
	}
}

// ---------------------------------------------------------------------------
// NAT

// NATResult is the evidence of address translation on the path and where
// the translating box is.
type NATResult struct {
	// Translated: yes when the server saw another source than we sent
	// from (or our address is private and the destination public), no
	// when it saw ours, not-tested without a server view.
	Translated Tri `json:"translated"`
	// Sent is our end of the connection, Seen the same end as the server
	// reported it (zero: no server view).
	Sent netip.AddrPort `json:"sent"`
	Seen netip.AddrPort `json:"seen"`
	// Changes are src-addr / src-port differences between Sent and Seen.
	Changes []FieldChange `json:"changes,omitempty"`
	// Hop is the box that owns the translated address: the smallest TTL at
	// which that address itself answered (0: not located). HopAddress is
	// the address hop Hop answers time-exceeded from toward the destination,
	// as a trace lists it.
	Hop        int        `json:"hop"`
	HopAddress netip.Addr `json:"hop_address"`
	Evidence   string     `json:"evidence"`
}

// natVerdict compares our endpoint with the server's view of it (seen may
// be zero) for a connection to dst. Pure; locating is ProbeNAT's job.
func natVerdict(sent, seen netip.AddrPort, dst netip.Addr) NATResult {
	sent = netip.AddrPortFrom(sent.Addr().Unmap(), sent.Port())
	r := NATResult{Translated: TriNotTested, Sent: sent}
	if seen.IsValid() {
		seen = netip.AddrPortFrom(seen.Addr().Unmap(), seen.Port())
		r.Seen = seen
		if seen.Addr() != sent.Addr() {
			r.Changes = append(r.Changes, FieldChange{Field: FieldSrcAddr, Sent: sent.Addr().String(), Seen: seen.Addr().String()})
		}
		if seen.Port() != sent.Port() {
			r.Changes = append(r.Changes, FieldChange{Field: FieldSrcPort, Sent: strconv.Itoa(int(sent.Port())), Seen: strconv.Itoa(int(seen.Port()))})
		}
		if len(r.Changes) == 0 {
			r.Translated = TriNo
			r.Evidence = fmt.Sprintf("the server saw us as %s, the address and port we sent from", seen)
			return r
		}
		r.Translated = TriYes
		r.Evidence = fmt.Sprintf("we sent from %s, the server saw %s", sent, seen)
		return r
	}
	if isPrivate(sent.Addr()) && dst.IsValid() && dst.Unmap().IsGlobalUnicast() && !isPrivate(dst.Unmap()) {
		r.Translated = TriYes
		r.Evidence = fmt.Sprintf("our address %s is private and %s is public: a NAT must translate it (where cannot be told without the server's view of our address)", sent.Addr(), dst.Unmap())
	}
	return r
}

// isPrivate reports addresses that need translation to reach the
// Internet: RFC 1918, shared address space (RFC 6598, carrier-grade NAT)
// and IPv6 unique local addresses.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}

// ---------------------------------------------------------------------------
// In-flow TTL-limited probes (intrace / 0trace)

// FlowState is an established TCP flow as its probes must look: the
// 5-tuple and the sequence numbers that make a segment valid for the
// server and for every stateful box on the path.
type FlowState struct {
	Local, Remote netip.AddrPort
	Seq           uint32 // next sequence number we send (snd.nxt)
	Ack           uint32 // next sequence number we expect (rcv.nxt)
	// Window is the raw window field to send (already scaled down); 0:
	// 1024. The probes rarely update the server's view of it (see
	// ProbeInFlow).
	Window uint16
}

// InFlowKind is what answered an in-flow probe.
type InFlowKind string

// In-flow answers.
const (
	InFlowTimeExceeded InFlowKind = "time-exceeded"
	InFlowRST          InFlowKind = "rst"
	InFlowACK          InFlowKind = "ack"         // the server's acknowledgment: it has the flow
	InFlowUnreachable  InFlowKind = "unreachable" // an ICMP error other than time-exceeded
	InFlowNone         InFlowKind = "none"
)

// InFlowAnswer is what came back for the probes sent with one TTL.
type InFlowAnswer struct {
	TTL  int        `json:"ttl"`
	Kind InFlowKind `json:"kind"`
	From netip.Addr `json:"from"` // zero: nothing; for rst/ack the (claimed) sender
	// ReplyTTL is the IP TTL of the answer as received (-1 unknown);
	// SenderHop the hop it implies for a RST or ACK (0 unknown).
	ReplyTTL  int `json:"reply_ttl"`
	SenderHop int `json:"sender_hop,omitempty"`
}

// LossBehaviour is how a flow that lost its state on the path is treated.
type LossBehaviour string

// Behaviours of LocateStateLoss.
const (
	LossReset        LossBehaviour = "reset"        // a box on the path answers with a TCP RST
	LossReject       LossBehaviour = "reject"       // a box answers with an ICMP unreachable
	LossDrop         LossBehaviour = "drop"         // a box drops the flow's packets silently
	LossServerReset  LossBehaviour = "server-reset" // every router forwards; the server (or a NAT that remapped the port) resets
	LossNone         LossBehaviour = ""             // the expired flow is answered like the healthy one
	LossUndetermined LossBehaviour = "undetermined" // no usable healthy reference
)

// StateLoss places the loss of a flow's state on a hop.
type StateLoss struct {
	Behaviour LossBehaviour `json:"behaviour"`
	// Hop is the box; when the evidence allows several, it is one of
	// Hop..UpTo (UpTo == Hop when exact).
	Hop    int    `json:"hop"`
	UpTo   int    `json:"up_to"`
	Reason string `json:"reason"`
}

// LocateStateLoss compares in-flow probes of a healthy flow with those of
// the same flow after it went idle past a timeout, and returns the hop
// that lost the flow's state and how it treats the flow: the first hop
// answering with a RST (reset box), or the hop after which time-exceeded
// replies stop although they came in the healthy run (dropping box).
// Hop 0 and LossNone: nothing found. See ExplainStateLoss for the reason
// and the uncertainty.
func LocateStateLoss(healthy, expired []InFlowAnswer) (int, LossBehaviour) {
	l := ExplainStateLoss(healthy, expired)
	return l.Hop, l.Behaviour
}

// ExplainStateLoss is LocateStateLoss with the range and the reason.
//
// Reset: a Linux box at hop k answers TTL k with time-exceeded (the TTL
// check comes first) and resets from TTL k+1 on; a box acting before its
// TTL check resets from TTL k. The RST's own TTL tells which (its sender's
// distance); without it, Linux behaviour is assumed and the range says so.
// Drop: the box at hop k answers TTL k, and nothing comes back beyond it;
// silent routers between k and the next hop that answered in the healthy
// run widen the range, and when the silence starts at the server itself,
// the server (or its host firewall) may be the one dropping.
func ExplainStateLoss(healthy, expired []InFlowAnswer) StateLoss {
	if len(healthy) == 0 || len(expired) == 0 {
		return StateLoss{Behaviour: LossUndetermined, Reason: "no healthy or no expired run to compare"}
	}
	h, e := byTTL(healthy), byTTL(expired)
	for _, a := range healthy {
		if a.Kind == InFlowRST {
			return StateLoss{Behaviour: LossUndetermined,
				Reason: fmt.Sprintf("the healthy run was reset already (TTL %d): no reference", a.TTL)}
		}
	}
	// Where the healthy flow's server acknowledged, and from how far.
	serverTTL, serverHop, serverReplyTTL := 0, 0, 0
	for _, a := range healthy {
		if a.Kind == InFlowACK && (serverTTL == 0 || a.TTL < serverTTL) {
			serverTTL, serverHop, serverReplyTTL = a.TTL, a.SenderHop, a.ReplyTTL
		}
	}

	// Resets and rejects: the first TTL whose answer turned into one.
	for _, a := range expired {
		if a.Kind != InFlowRST && a.Kind != InFlowUnreachable {
			continue
		}
		if ha, ok := h[a.TTL]; ok && ha.Kind == a.Kind {
			continue
		}
		t := a.TTL
		lastTE := 0
		for ttl := t - 1; ttl >= 1; ttl-- {
			if x, ok := e[ttl]; ok && x.Kind == InFlowTimeExceeded {
				lastTE = ttl
				break
			}
		}
		if a.Kind == InFlowRST && serverTTL > 0 && t == serverTTL && lastTE == t-1 &&
			(a.SenderHop == 0 || a.SenderHop == serverHop && InitialTTL(a.ReplyTTL) == InitialTTL(serverReplyTTL)) {
			return StateLoss{Behaviour: LossServerReset, Hop: t, UpTo: t,
				Reason: fmt.Sprintf("every router still forwarded the expired flow (time-exceeded up to TTL %d); at TTL %d the server, which acknowledged the healthy flow, answered with a RST (reply TTL %d): the server lost the flow, or a NAT on the path remapped its port", t-1, t, a.ReplyTTL)}
		}
		behaviour, what := LossReset, "a RST"
		if a.Kind == InFlowUnreachable {
			behaviour, what = LossReject, "an ICMP unreachable from "+a.From.String()
		}
		lo := max(t-1, 1)
		if a.Kind == InFlowRST && a.SenderHop >= max(lastTE, 1) && a.SenderHop <= t {
			return StateLoss{Behaviour: behaviour, Hop: a.SenderHop, UpTo: a.SenderHop,
				Reason: fmt.Sprintf("time-exceeded up to TTL %d, then %s from TTL %d on; the RST's TTL %d places its sender at hop %d", lastTE, what, t, a.ReplyTTL, a.SenderHop)}
		}
		if a.Kind == InFlowUnreachable {
			if hop := hopOf(a.From, healthy, expired); hop >= lo && hop <= t {
				return StateLoss{Behaviour: behaviour, Hop: hop, UpTo: hop,
					Reason: fmt.Sprintf("time-exceeded up to TTL %d, then %s (which answers at hop %d) from TTL %d on", lastTE, what, hop, t)}
			}
		}
		return StateLoss{Behaviour: behaviour, Hop: lo, UpTo: t,
			Reason: fmt.Sprintf("time-exceeded up to TTL %d, then %s from TTL %d on: the box is hop %d if it checks the TTL first (as Linux does), else hop %d", lastTE, what, t, lo, t)}
	}

	// The server still acknowledges: the flow is alive end to end.
	for _, a := range expired {
		if a.Kind == InFlowACK {
			return StateLoss{Behaviour: LossNone, Reason: fmt.Sprintf("the server still acknowledged the flow at TTL %d", a.TTL)}
		}
	}
	// Drops: the last TTL that still answered, and the first TTL beyond
	// it that answered in the healthy run.
	last := 0
	for _, a := range expired {
		if a.Kind != InFlowNone && a.TTL > last {
			last = a.TTL
		}
	}
	next := 0
	for _, a := range healthy {
		if a.Kind != InFlowNone && a.TTL > last && (next == 0 || a.TTL < next) {
			next = a.TTL
		}
	}
	if next == 0 {
		return StateLoss{Behaviour: LossNone, Reason: fmt.Sprintf("the expired flow was answered as far as the healthy one (TTL %d)", last)}
	}
	hop, upTo := max(last, 1), next-1
	if h[next].Kind == InFlowACK {
		upTo = next // the server itself may be dropping
	}
	upTo = max(upTo, hop)
	where := fmt.Sprintf("hop %d", hop)
	if upTo > hop {
		where = fmt.Sprintf("one of hops %d-%d", hop, upTo)
	}
	lastText := fmt.Sprintf("time-exceeded came back up to TTL %d", last)
	if last == 0 {
		lastText = "nothing came back at all (this host, or hop 1 dropping before its TTL check)"
	}
	return StateLoss{Behaviour: LossDrop, Hop: hop, UpTo: upTo,
		Reason: fmt.Sprintf("%s, nothing beyond, while the healthy flow was answered at TTL %d (%s from %s): the box dropping the expired flow is %s", lastText, next, h[next].Kind, h[next].From, where)}
}

func byTTL(as []InFlowAnswer) map[int]InFlowAnswer {
	m := make(map[int]InFlowAnswer, len(as))
	for _, a := range as {
		m[a.TTL] = a
	}
	return m
}

// hopOf returns the smallest TTL at which addr answered time-exceeded in
// either run, 0 if never.
func hopOf(addr netip.Addr, runs ...[]InFlowAnswer) int {
	hop := 0
	for _, run := range runs {
		for _, a := range run {
			if a.Kind == InFlowTimeExceeded && a.From == addr && (hop == 0 || a.TTL < hop) {
				hop = a.TTL
			}
		}
	}
	return hop
}

// tcpInfo is the part of Linux's struct tcp_info that FlowStateFromConn
// needs.
type tcpInfo struct {
	State                     uint8
	SndWScale, RcvWScale      uint8
	Unacked                   uint32
	BytesAcked, BytesReceived uint64
	BytesSent, BytesRetrans   uint64
	NotSent                   uint32
	RcvWnd                    uint32 // 0: the kernel does not report it (before 6.2)
}

// tcp_info offsets (include/uapi/linux/tcp.h); bytes_sent and
// bytes_retrans arrived in Linux 4.19, rcv_wnd in 6.2.
const (
	tcpInfoMinLen        = 216
	tcpInfoRcvWndEnd     = 236
	tcpStateEstablished  = 1
	offTCPInfoWScale     = 6
	offTCPInfoUnacked    = 24
	offTCPInfoBytesAcked = 120
	offTCPInfoBytesRecv  = 128
	offTCPInfoNotSent    = 144
	offTCPInfoBytesSent  = 200
	offTCPInfoBytesRetr  = 208
	offTCPInfoRcvWnd     = 232
)

// decodeTCPInfo decodes a struct tcp_info as getsockopt(TCP_INFO) fills
// it, in host byte order.
func decodeTCPInfo(b []byte) (tcpInfo, error) {
	if len(b) < tcpInfoMinLen {
		return tcpInfo{}, fmt.Errorf("tcp_info: %d bytes, need %d (Linux 4.19 or later): %w", len(b), tcpInfoMinLen, ErrTruncated)
	}
	ne := binary.NativeEndian
	info := tcpInfo{
		State:         b[0],
		SndWScale:     b[offTCPInfoWScale] & 0x0f,
		RcvWScale:     b[offTCPInfoWScale] >> 4,
		Unacked:       ne.Uint32(b[offTCPInfoUnacked:]),
		BytesAcked:    ne.Uint64(b[offTCPInfoBytesAcked:]),
		BytesReceived: ne.Uint64(b[offTCPInfoBytesRecv:]),
		NotSent:       ne.Uint32(b[offTCPInfoNotSent:]),
		BytesSent:     ne.Uint64(b[offTCPInfoBytesSent:]),
		BytesRetrans:  ne.Uint64(b[offTCPInfoBytesRetr:]),
	}
	if len(b) >= tcpInfoRcvWndEnd {
		info.RcvWnd = ne.Uint32(b[offTCPInfoRcvWnd:])
	}
	return info, nil
}

// flowStateFromInfo derives the sequence numbers of an idle flow from
// its SYN-ACK (both initial sequence numbers) and the kernel's byte
// counters. Linux counts our SYN in bytes_acked (tcp_ack runs on the
// SYN-ACK) but not the server's in bytes_received; the SYN's share is
// measured rather than assumed: with nothing unacknowledged, bytes_acked
// is the data sent once (bytes_sent - bytes_retrans) plus 0 or 1.
func flowStateFromInfo(local, remote netip.AddrPort, synAck Segment, info tcpInfo) (FlowState, error) {
	if !synAck.Flags.Has(FlagSYN | FlagACK) {
		return FlowState{}, fmt.Errorf("flow state of %s: the segment given is not a SYN-ACK (flags %s)", local, flagNames(synAck.Flags))
	}
	if synAck.Src.Port() != remote.Port() || synAck.Dst.Port() != local.Port() {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: the SYN-ACK is of %s > %s", local, remote, synAck.Src, synAck.Dst)
	}
	if info.State != tcpStateEstablished {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: TCP state %d, not established", local, remote, info.State)
	}
	if info.Unacked != 0 || info.NotSent != 0 {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: not idle (%d segments unacknowledged, %d bytes not sent): the next sequence number is unknown", local, remote, info.Unacked, info.NotSent)
	}
	once := info.BytesSent - info.BytesRetrans
	syn := info.BytesAcked - once
	if info.BytesRetrans > info.BytesSent || info.BytesAcked < once || syn > 1 {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: TCP_INFO counters disagree (acked %d, sent %d, retransmitted %d)", local, remote, info.BytesAcked, info.BytesSent, info.BytesRetrans)
	}
	w := uint16(0xffff)
	if info.RcvWnd > 0 {
		if v := info.RcvWnd >> info.RcvWScale; v < 0xffff {
			w = uint16(max(v, 1))
		}
	} else {
		w = 0
	}
	return FlowState{
		Local: local, Remote: remote,
		Seq:    synAck.Ack + uint32(info.BytesAcked-syn),
		Ack:    synAck.Seq + 1 + uint32(info.BytesReceived),
		Window: w,
	}, nil
}
