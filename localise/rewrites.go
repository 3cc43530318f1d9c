package localise

// Rewrites: TCP SYNs with known options, TTL 1..n, and the quotes of their
// time-exceeded answers compared with what was sent.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// HopRewrite is what one hop's time-exceeded quote showed of the rewrite
// probe, as the run report holds it (docs/schema-run.md, HopRewrite).
type HopRewrite struct {
	Hop     int    `json:"hop"`
	Address string `json:"address"`
	// Changes are the rewrites attributed to the box at this hop (e.g.
	// "mss 1460→1200", "src port 40000→1024"; Rewrite): Linux forwarders
	// rewrite after their TTL check, so they show first in the next hop's
	// quote.
	Changes []string `json:"changes"`
	// HopUpTo: with silent hops after it, the rewriting box is one of
	// Hop..HopUpTo (0 or Hop: exact).
	HopUpTo int `json:"hop_up_to,omitempty"`
	// Answer is what came back at this TTL; Quote how much of the probe
	// it quoted.
	Answer RewriteAnswer `json:"answer,omitempty"`
	Quote  QuoteDepth    `json:"quote,omitempty"`
	// Seen are the differences from the probe visible in this hop's quote:
	// everything rewritten before it.
	Seen []string `json:"seen,omitempty"`
}

// RewritesFound is the status of a rewrite probe's hops: yes when some box
// rewrote the SYN, no when none did.
func RewritesFound(hops []HopRewrite) tri.State {
	for _, h := range hops {
		if len(h.Changes) > 0 {
			return tri.Yes
		}
	}
	return tri.No
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

// ttlRewrite is what one TTL of a rewrite probe showed.
type ttlRewrite struct {
	TTL    int
	From   netip.Addr // zero: nobody answered
	Answer RewriteAnswer
	Quote  QuoteDepth
	// Changes are the differences of this hop's quote from the probe:
	// everything rewritten by the boxes before this hop.
	Changes []FieldChange
	// Rewrites are the changes attributed to the box at this hop (see
	// Rewrite.Hop; a rewrite by "hop 0" is listed where it was seen).
	Rewrites []Rewrite

	fields []fieldPair // every compared field, for the attribution
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
func finishRewrites(hops []ttlRewrite) {
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

// rewriteProbe is one SYN of ProbeRewrites.
type rewriteProbe struct {
	ttl   int
	seq   uint32
	ipid  uint16
	tsval uint32
	seg   []byte
	ref   *probe.Quoted
}

// ProbeRewrites sends TCP SYNs with known options (MSS 1460, SACK
// permitted, timestamps, window scale 7) from from (our address and a
// source port held for the probes) toward dst with TTL 1..maxTTL, all at
// once, and compares the quote of every time-exceeded answer with what was
// sent (tracebox's method). It returns, per hop, the differences from the
// probe (Seen) and the rewrites attributed to the box at that hop
// (Changes). Rows run up to the TTL at which the destination answered
// (SYN-ACK or RST), else to maxTTL; TTLs left unanswered are sent again
// (Options.Attempts, Options.Backoff) before they count as silent.
//
// Each probe has its own sequence number, IPv4 ID and TSval (nonce plus
// TTL), so a quote is matched when at least one of them survived. Limits:
// a router quoting only 8 bytes shows ports and seq, not options (Quote
// "partial"); a box rewriting only what the destination sees (after the
// last router that answers) is invisible here; Linux NAT translates the
// quotes of the ICMP errors it forwards back, so a masquerading Linux box
// leaves no trace in them — use ProbeNAT for translation.
func ProbeRewrites(ctx context.Context, path Path, from, dst netip.AddrPort, maxTTL int, opt Options) ([]HopRewrite, error) {
	rows, err := probeRewriteTTLs(ctx, path, from, dst, maxTTL, opt)
	if err != nil {
		return nil, err
	}
	return summariseRewrites(rows), nil
}

func probeRewriteTTLs(ctx context.Context, path Path, from, dst netip.AddrPort, maxTTL int, opt Options) ([]ttlRewrite, error) {
	opt = opt.withDefaults()
	daddr, src, sport := dst.Addr().Unmap(), from.Addr().Unmap(), from.Port()
	if !daddr.IsValid() || dst.Port() == 0 {
		return nil, fmt.Errorf("probe rewrites: destination %s needs an address and a port", dst)
	}
	if !src.IsValid() || sport == 0 || src.Is4() != daddr.Is4() {
		return nil, fmt.Errorf("probe rewrites: source %s needs an address of the family of %s and a port", from, daddr)
	}
	if maxTTL < 1 || maxTTL > 255 {
		return nil, fmt.Errorf("probe rewrites: max TTL %d outside 1-255", maxTTL)
	}
	ident, err := probe.NewIdent(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	probes := make([]rewriteProbe, 0, maxTTL)
	for ttl := 1; ttl <= maxTTL; ttl++ {
		pr := rewriteProbe{ttl: ttl, seq: ident.TCPSeq(uint16(ttl)), ipid: uint16(ident.Nonce) + uint16(ttl),
			tsval: ident.Nonce<<16 | uint32(ttl)}
		o := probe.DefaultSYNOptions()
		o.TSVal = pr.tsval
		if pr.seg, err = probe.BuildTCPSYN(src, daddr, sport, dst.Port(), pr.seq, 64240, o); err != nil {
			return nil, fmt.Errorf("probe rewrites: %w", err)
		}
		if pr.ref, err = probe.ReferenceQuote(src, daddr, ipProtoTCP, pr.ipid, true, pr.seg); err != nil {
			return nil, fmt.Errorf("probe rewrites: reference quote: %w", err)
		}
		probes = append(probes, pr)
	}

	rows := make([]ttlRewrite, maxTTL)
	for i := range rows {
		rows[i] = ttlRewrite{TTL: i + 1, Answer: AnswerNone, Quote: QuoteNone}
	}
	quotes := make([]*probe.Quoted, maxTTL)
	destTTL := 0
	pending := probes
	retry := retryRounds{attempts: opt.Attempts}
	for attempt := 1; ; attempt++ {
		sentAt := time.Now()
		answeredBefore := answeredRows(rows)
		for _, pr := range pending {
			if err := path.Send(daddr, pr.seg, pr.ttl, pr.ipid, true); err != nil {
				return nil, fmt.Errorf("probe rewrites: %w", err)
			}
		}
		opt.Log("rewrites: %d SYNs sent toward %s from port %d (attempt %d)", len(pending), dst, sport, attempt)
		deadline := sentAt.Add(opt.Timeout)
		for !rewritesComplete(rows, destTTL) {
			ev, ok := path.Next(ctx, deadline)
			if !ok {
				break
			}
			matchRewriteEvent(ev, probes, rows, quotes, &destTTL, daddr, dst.Port(), sport)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("probe rewrites toward %s: %w", dst, err)
		}
		// Unanswered TTLs below the destination's (all of them while it
		// has not answered) may be rate-limited routers: ask them again,
		// no sooner than Backoff after the last probe.
		pending = pending[:0:0]
		for _, pr := range probes {
			if rows[pr.ttl-1].Answer == AnswerNone && (destTTL == 0 || pr.ttl < destTTL) {
				pending = append(pending, pr)
			}
		}
		if len(pending) == 0 || !retry.again(answeredRows(rows) > answeredBefore) {
			break
		}
		if !opt.Sleep(ctx, opt.Backoff-time.Since(sentAt)) {
			return nil, fmt.Errorf("probe rewrites toward %s: %w", dst, ctx.Err())
		}
	}
	last := maxTTL
	if destTTL > 0 {
		last = destTTL
	}
	rows = rows[:last]
	for i := range rows {
		if q := quotes[i]; q != nil && rows[i].Answer != AnswerDestination {
			rows[i].Quote, rows[i].fields = compareQuote(probes[i].ref, q)
		}
	}
	finishRewrites(rows)
	return rows, nil
}

// matchRewriteEvent records what ev answers: the destination's SYN-ACK or
// RST (the smallest TTL that reached it), or an ICMP error quoting one of
// the probes.
func matchRewriteEvent(ev probe.PathEvent, probes []rewriteProbe, rows []ttlRewrite, quotes []*probe.Quoted, destTTL *int, daddr netip.Addr, dport, sport uint16) {
	switch {
	case ev.TCP != nil:
		s := ev.TCP
		if s.SrcPort != dport || s.DstPort != sport || !(s.Flags.Has(probe.FlagSYN|probe.FlagACK) || s.Flags.Has(probe.FlagRST)) {
			return
		}
		for _, pr := range probes {
			if s.Ack == pr.seq+1 && (*destTTL == 0 || pr.ttl < *destTTL) {
				*destTTL = pr.ttl
				rows[pr.ttl-1].From, rows[pr.ttl-1].Answer = ev.From, AnswerDestination
			}
		}
	case ev.ICMP != nil && ev.ICMP.Quoted != nil:
		q := ev.ICMP.Quoted
		if q.Protocol != ipProtoTCP || (q.Dst.Unmap() != daddr && q.DstPort != dport) {
			return
		}
		pr, ok := matchRewriteProbe(probes, q)
		if !ok || rows[pr.ttl-1].Answer != AnswerNone {
			return
		}
		row := &rows[pr.ttl-1]
		row.From = ev.From
		row.Answer = AnswerUnreachable
		if ev.ICMP.Kind == probe.KindTimeExceeded {
			row.Answer = AnswerTimeExceeded
		}
		quotes[pr.ttl-1] = q
	}
}

// answeredRows counts the TTLs that have their answer.
func answeredRows(rows []ttlRewrite) int {
	n := 0
	for _, r := range rows {
		if r.Answer != AnswerNone {
			n++
		}
	}
	return n
}

// rewritesComplete: every TTL below the destination's has its answer.
func rewritesComplete(rows []ttlRewrite, destTTL int) bool {
	if destTTL == 0 {
		return false
	}
	for _, r := range rows[:destTTL-1] {
		if r.Answer == AnswerNone {
			return false
		}
	}
	return true
}

// matchRewriteProbe finds the probe a quote belongs to by whichever of
// its identities survived: sequence number, IPv4 ID, TSval.
func matchRewriteProbe(probes []rewriteProbe, q *probe.Quoted) (rewriteProbe, bool) {
	for _, pr := range probes {
		if len(q.Transport) >= 8 && q.TCPSeq == pr.seq {
			return pr, true
		}
	}
	for _, pr := range probes {
		if q.Family == 4 && q.IPID == pr.ipid {
			return pr, true
		}
		if q.TCP != nil && q.TCP.Options.Timestamps && q.TCP.Options.TSVal == pr.tsval {
			return pr, true
		}
	}
	return rewriteProbe{}, false
}

// summariseRewrites turns the per-TTL answers into the report's rows: per
// hop, the rewrites made by its box (not the changes every later quote
// repeats) and what its quote showed.
func summariseRewrites(hops []ttlRewrite) []HopRewrite {
	addrOf := map[int]string{}
	for _, h := range hops {
		if h.From.IsValid() {
			addrOf[h.TTL] = h.From.String()
		}
	}
	byHop := map[int]*HopRewrite{}
	for _, h := range hops {
		for _, r := range h.Rewrites {
			hr := byHop[r.Hop]
			if hr == nil {
				hr = &HopRewrite{Hop: r.Hop, Address: addrOf[r.Hop], HopUpTo: r.UpTo, Changes: []string{}}
				byHop[r.Hop] = hr
			}
			hr.Changes = append(hr.Changes, r.Change().String())
		}
	}
	var out []HopRewrite
	for _, h := range hops {
		row := HopRewrite{Hop: h.TTL, Address: addrOf[h.TTL], Answer: h.Answer, Quote: h.Quote, Changes: []string{}}
		for _, c := range h.Changes {
			row.Seen = append(row.Seen, c.String())
		}
		if hr := byHop[h.TTL]; hr != nil {
			row.Changes, row.HopUpTo = hr.Changes, hr.HopUpTo
			delete(byHop, h.TTL)
		}
		out = append(out, row)
	}
	// Rewrites attributed to a hop that had no row of its own.
	var rest []int
	for hop := range byHop {
		rest = append(rest, hop)
	}
	sort.Ints(rest)
	for _, hop := range rest {
		out = append(out, *byHop[hop])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Hop < out[j].Hop })
	return out
}
