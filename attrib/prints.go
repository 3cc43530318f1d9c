package attrib

import (
	"sort"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

// Kinds of Answer, as traces and in-flow probes spell them.
const (
	KindTimeExceeded = "time-exceeded"
	KindRST          = "rst"
	KindACK          = "ack"
	KindUnreachable  = "unreachable"
)

// Answer is one answer to a TTL-limited probe, from a trace or from the
// in-flow probes: what came back for the probe sent with TTL Hop.
type Answer struct {
	Hop  int    // the probe's TTL
	From string // the answering address ("" none)
	Kind string // time-exceeded|rst|ack|unreachable|none|...
	TTL  int    // the answer's TTL as received (0 or less: unknown)
	IPID int    // its IPv4 ID; -1 unknown or IPv6
	DF   bool
}

// TraceAnswers turns trace hops into answers: one per hop that answered
// with time-exceeded (the destination's own answers are left out, they are
// the server's fingerprint, not a router's).
func TraceAnswers(trs []trace.Trace) []Answer {
	var out []Answer
	for _, tr := range trs {
		for _, h := range tr.Hops {
			if h.Received == 0 || h.ReplyTTL <= 0 || (tr.Reached && h.TTL >= tr.ReachedTTL) {
				continue
			}
			from, te := "", false
			for _, r := range h.Responders {
				if from == "" {
					from = r.Address
				}
				for _, k := range r.Kinds {
					te = te || k == KindTimeExceeded
				}
			}
			if !te {
				continue
			}
			out = append(out, Answer{Hop: h.TTL, From: from, Kind: KindTimeExceeded, TTL: h.ReplyTTL, IPID: -1})
		}
	}
	return out
}

// HopPrints groups the time-exceeded answers by hop into return-path
// fingerprints: per hop the commonest received TTL (the larger on a tie:
// the nearer path), and the address that sent it.
func HopPrints(answers []Answer) []HopPrint {
	type acc struct {
		ttls           map[int]int
		from           map[int]string
		ipidSeen, zero int
		df             bool
	}
	byHop := map[int]*acc{}
	for _, a := range answers {
		if a.Kind != KindTimeExceeded || a.Hop <= 0 || probe.InitialTTL(a.TTL) == 0 {
			continue
		}
		x := byHop[a.Hop]
		if x == nil {
			x = &acc{ttls: map[int]int{}, from: map[int]string{}}
			byHop[a.Hop] = x
		}
		x.ttls[a.TTL]++
		if x.from[a.TTL] == "" {
			x.from[a.TTL] = a.From
		}
		if a.IPID >= 0 {
			x.ipidSeen++
			if a.IPID == 0 {
				x.zero++
			}
		}
		x.df = x.df || a.DF
	}
	var out []HopPrint
	for hop, x := range byHop {
		best, n, total := 0, 0, 0
		for ttl, c := range x.ttls {
			total += c
			if c > n || c == n && ttl > best {
				best, n = ttl, c
			}
		}
		hp := HopPrint{Hop: hop, Address: x.from[best], TTL: best, DF: x.df, Samples: total, IPIDZero: tri.NotTested}
		switch {
		case x.ipidSeen > 0 && x.zero == x.ipidSeen:
			hp.IPIDZero = tri.Yes
		case x.ipidSeen > 0:
			hp.IPIDZero = tri.No
		}
		out = append(out, hp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hop < out[j].Hop })
	return out
}

// BracketOf reads the forward bracket from in-flow probes of a flow while
// healthy and after it expired: the first TTL whose answer turned into a
// RST or unreachable, and the highest TTL below it still answered with
// time-exceeded. nil when nothing turned.
func BracketOf(healthy, expired []Answer) *Bracket {
	before := map[int]string{}
	for _, a := range healthy {
		before[a.Hop] = a.Kind
	}
	first := 0
	for _, a := range expired {
		if (a.Kind == KindRST || a.Kind == KindUnreachable) && before[a.Hop] != a.Kind && (first == 0 || a.Hop < first) {
			first = a.Hop
		}
	}
	if first == 0 {
		return nil
	}
	b := &Bracket{FirstBlocked: first}
	for _, a := range expired {
		if a.Kind == KindTimeExceeded && a.Hop < first && a.Hop > b.LastForwarded {
			b.LastForwarded = a.Hop
		}
	}
	return b
}

// ServerHopOf is the lowest TTL at which the server itself answered (an
// ACK of the flow, or a trace's destination reply), 0 unknown.
func ServerHopOf(answers []Answer) int {
	hop := 0
	for _, a := range answers {
		if a.Kind == KindACK && (hop == 0 || a.Hop < hop) {
			hop = a.Hop
		}
	}
	return hop
}
