package trace

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// AggregateOptions bound the aggregation.
type AggregateOptions struct {
	// Queries is the number of probes per TTL per round the engine planned;
	// it is informational (Sent counts the observations actually made).
	Queries int
	// MaxHops drops observations beyond this TTL (0: no limit).
	MaxHops int
}

// Loss kinds of Hop.LossKind.
const (
	LossRateLimit = "rate-limit"
	LossPath      = "path-loss"
	// LossSilent: the hop never answered, though it was asked again after
	// a pause (a router that sends no ICMP, or filters it).
	LossSilent = "silent"
)

// Hop notes.
const (
	NoteNoReply   = "no reply"
	NoteRateLimit = "loss here does not persist: ICMP rate limiting, not path loss"
	NotePathLoss  = "path loss from here on"
	// NoteRateLimitPattern: answers came and went (some probes answered,
	// others not, or answers again after a pause): the router's ICMP rate
	// limit, not loss.
	NoteRateLimitPattern = "answers some probes and not others: ICMP rate limiting, not path loss"
	NoteSilent           = "silent: no answer, also when asked again after a pause"
)

// lossTolerancePct is the noise allowance when comparing the loss of two
// hops: differences up to this many percentage points (or one probe, when
// samples are few) are "the same loss".
const lossTolerancePct = 10.0

// Aggregate groups observations by TTL into hops and classifies their loss.
// Hops beyond the first TTL at which the destination answered are dropped;
// when the destination was not reached every probed TTL is kept (the engine
// bounds them). reachedTTL is 0 when not reached.
func Aggregate(obs []Observation, opt AggregateOptions) (hops []Hop, reached bool, reachedTTL int) {
	for _, o := range obs {
		if o.TTL <= 0 || (opt.MaxHops > 0 && o.TTL > opt.MaxHops) || o.Response == nil || !o.Response.Reached() {
			continue
		}
		// The destination's answer places it at hop TTL-quoted+1.
		if h := DestinationHop(o.TTL, *o.Response); !reached || h < reachedTTL {
			reached, reachedTTL = true, h
		}
	}
	byTTL := make(map[int][]indexedObs)
	var further []indexedObs
	for i, o := range obs {
		if o.TTL <= 0 || (opt.MaxHops > 0 && o.TTL > opt.MaxHops) {
			continue
		}
		if reached && o.TTL > reachedTTL {
			if o.Response != nil && o.Response.Reached() && DestinationHop(o.TTL, *o.Response) == reachedTTL {
				further = append(further, indexedObs{o, i, o.TTL})
			}
			continue
		}
		byTTL[o.TTL] = append(byTTL[o.TTL], indexedObs{o, i, o.TTL})
	}
	// Answers of the destination to probes sent further stand in for its
	// own probes that went unanswered (its port unreachables are rate
	// limited too), up to the answers wanted per hop.
	slices.SortStableFunc(further, sendOrder)
	answered := 0
	for _, o := range byTTL[reachedTTL] {
		if o.Response != nil {
			answered++
		}
	}
	for _, o := range further {
		if answered >= opt.Queries {
			break
		}
		o.TTL = reachedTTL
		byTTL[reachedTTL] = append(byTTL[reachedTTL], o)
		answered++
	}
	ttls := make([]int, 0, len(byTTL))
	for ttl := range byTTL {
		if reached && ttl > reachedTTL {
			continue
		}
		ttls = append(ttls, ttl)
	}
	slices.Sort(ttls)

	hops = make([]Hop, 0, len(ttls))
	for _, ttl := range ttls {
		hops = append(hops, aggregateHop(ttl, byTTL[ttl]))
	}
	classifyLoss(hops, reached)
	for i := range hops {
		hops[i].LossKind = answerPattern(hops[i], byTTL[hops[i].TTL])
	}
	for i := range hops {
		hops[i].Note = strings.Join(hopNotes(hops[i], byTTL[hops[i].TTL]), "; ")
		annotateReturn(&hops[i]) // trace/asymm.go
	}
	return hops, reached, reachedTTL
}

// DestinationHop is the hop of a destination that answered a probe sent
// with ttl: a quoted TTL q says the probe had q left on arrival, so the
// destination is at ttl-q+1. Without a quote (SYN-ACK, echo reply) it is
// ttl.
func DestinationHop(ttl int, r probe.Response) int {
	if r.QuotedTTL >= 1 && r.QuotedTTL <= ttl {
		return ttl - r.QuotedTTL + 1
	}
	return ttl
}

// answerPattern refines a hop's loss kind by when its answers came (pure):
// a hop that never answered though asked again in a later pass is silent;
// one that answered in one pass and not in another, or answered some
// probes and not others where later hops answered all, is rate limiting.
func answerPattern(h Hop, obs []indexedObs) string {
	passes := map[int]bool{}
	answeredIn, missedIn := map[int]bool{}, map[int]bool{}
	icmpErrors, remapped := true, false
	for _, o := range obs {
		passes[o.Pass] = true
		if o.sentTTL != o.TTL {
			remapped = true
		}
		if o.Response != nil {
			answeredIn[o.Pass] = true
			if k := o.Response.Kind; k != probe.KindTimeExceeded && k != probe.KindDestUnreachable {
				icmpErrors = false
			}
		} else {
			missedIn[o.Pass] = true
		}
	}
	switch {
	case h.Received == 0 && len(passes) > 1:
		return LossSilent
	case h.Received == 0:
		return h.LossKind
	}
	// Loss of SYN-ACKs or echo replies is not a router's rate limit.
	if h.Received == h.Sent || !icmpErrors {
		return h.LossKind
	}
	if remapped {
		// The destination answered probes sent further but not all of
		// its own: it limits its port unreachables.
		return LossRateLimit
	}
	for p := range answeredIn {
		for q := range missedIn {
			if q < p {
				// Missed, then answered again after a pause.
				return LossRateLimit
			}
		}
	}
	return h.LossKind
}

// indexedObs keeps the input position as the last tie-breaker of send order.
type indexedObs struct {
	Observation
	index int
	// sentTTL is the probe's TTL; Observation.TTL the hop it counts at.
	sentTTL int
}

// sendOrder sorts observations as they were sent: by round, then send time,
// then flow and probe ID (SentAt may be zero in synthetic input), then input
// order.
func sendOrder(a, b indexedObs) int {
	return cmp.Or(
		cmp.Compare(a.Round, b.Round),
		a.SentAt.Compare(b.SentAt),
		cmp.Compare(a.Flow, b.Flow),
		cmp.Compare(a.ProbeID, b.ProbeID),
		cmp.Compare(a.index, b.index),
	)
}

func aggregateHop(ttl int, obs []indexedObs) Hop {
	slices.SortStableFunc(obs, sendOrder)
	hop := Hop{TTL: ttl, Sent: len(obs), ReplyTTL: -1, Responders: []Responder{}}
	var rtts []float64
	byAddr := make(map[netip.Addr]int) // index into hop.Responders
	flowSeen := make(map[netip.Addr]map[int]bool)
	for _, o := range obs {
		r := o.Response
		if r == nil {
			continue
		}
		hop.Received++
		rtts = append(rtts, durationMs(r.RTT))
		hop.ReplyTTL = r.ReplyTTL

		from := r.From.Unmap()
		i, ok := byAddr[from]
		if !ok {
			i = len(hop.Responders)
			byAddr[from] = i
			flowSeen[from] = make(map[int]bool)
			hop.Responders = append(hop.Responders, Responder{Address: addrString(from)})
		}
		resp := &hop.Responders[i]
		resp.Received++
		if !flowSeen[from][o.Flow] {
			flowSeen[from][o.Flow] = true
			resp.Flows = append(resp.Flows, o.Flow)
		}
		if kind := string(r.Kind); !slices.Contains(resp.Kinds, kind) {
			resp.Kinds = append(resp.Kinds, kind)
		}
		// MPLS of the latest reply: a later reply without labels clears it.
		resp.MPLS = append([]probe.MPLSLabel{}, r.MPLS...)
	}
	for i := range hop.Responders {
		slices.Sort(hop.Responders[i].Flows)
	}
	hop.LossPct = round(lossPct(hop.Sent, hop.Received), 1)
	hop.RTTms, hop.JitterMs = rttStats(rtts)
	return hop
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func durationMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func lossPct(sent, received int) float64 {
	if sent == 0 {
		return 0
	}
	return 100 * float64(sent-received) / float64(sent)
}

func round(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

// rttStats computes last/min/avg/max/population stdev and the jitter (mean
// absolute difference of consecutive RTTs) of RTTs in send order, in ms
// rounded to microseconds.
func rttStats(rtts []float64) (RTTStats, float64) {
	if len(rtts) == 0 {
		return RTTStats{}, 0
	}
	s := RTTStats{Last: rtts[len(rtts)-1], Min: rtts[0], Max: rtts[0]}
	var sum, jitterSum float64
	for i, v := range rtts {
		sum += v
		s.Min = min(s.Min, v)
		s.Max = max(s.Max, v)
		if i > 0 {
			jitterSum += math.Abs(v - rtts[i-1])
		}
	}
	s.Avg = sum / float64(len(rtts))
	var sq float64
	for _, v := range rtts {
		sq += (v - s.Avg) * (v - s.Avg)
	}
	s.Stdev = math.Sqrt(sq / float64(len(rtts)))
	var jitter float64
	if len(rtts) > 1 {
		jitter = jitterSum / float64(len(rtts)-1)
	}
	const us = 3
	return RTTStats{
		Last: round(s.Last, us), Min: round(s.Min, us), Avg: round(s.Avg, us),
		Max: round(s.Max, us), Stdev: round(s.Stdev, us),
	}, round(jitter, us)
}

// classifyLoss sets LossKind on hops with partial loss.
//
// Replies from hop j>i cross hop i, so loss that is real at hop i shows at
// every later hop. Loss at i that a later answering hop does not show is the
// router limiting its ICMP replies (rate-limit). Loss that every later
// answering hop shows (within noise) and that is higher than the loss that
// already persisted before i starts at i (path-loss, marked only at the hop
// where it starts). Silent hops (no reply at all) are routers that do not
// answer; they are skipped. Loss at the last answering hop of an unreached
// trace cannot be classified and stays "".
func classifyLoss(hops []Hop, reached bool) {
	var answering []int // indexes of hops with at least one reply
	for i, h := range hops {
		if h.Received > 0 {
			answering = append(answering, i)
		}
	}
	// persisting[k] is the lowest loss from answering hop k to the end: the
	// loss that the path up to and including that hop surely has.
	persisting := make([]float64, len(answering))
	for k := len(answering) - 1; k >= 0; k-- {
		persisting[k] = rawLoss(hops[answering[k]])
		if k+1 < len(answering) {
			persisting[k] = min(persisting[k], persisting[k+1])
		}
	}
	for k, i := range answering {
		h := &hops[i]
		loss := rawLoss(*h)
		if loss == 0 {
			continue
		}
		later := answering[k+1:]
		if len(later) == 0 && !(reached && i == len(hops)-1) {
			continue // nothing after it to compare with
		}
		rateLimited := false
		for _, j := range later {
			if loss-rawLoss(hops[j]) > tolerance(*h, hops[j]) {
				rateLimited = true
				break
			}
		}
		if rateLimited {
			h.LossKind = LossRateLimit
			continue
		}
		before, tol := 0.0, tolerance(*h, *h)
		if k > 0 {
			before = persisting[k-1]
			tol = tolerance(*h, hops[answering[k-1]])
		}
		if loss-before > tol {
			h.LossKind = LossPath
		}
	}
}

func rawLoss(h Hop) float64 { return lossPct(h.Sent, h.Received) }

// tolerance is the loss difference (percentage points) between two hops
// that counts as noise: 10 points, or one probe of the smaller sample.
func tolerance(a, b Hop) float64 {
	n := min(a.Sent, b.Sent)
	if n <= 0 {
		return lossTolerancePct
	}
	return max(lossTolerancePct, 100/float64(n))
}

// hopNotes explains a hop: silence, loss kind, ECMP, unreachable markers
// and TTL rewriting, in that order.
func hopNotes(h Hop, obs []indexedObs) []string {
	var notes []string
	if h.Received == 0 {
		if h.LossKind == LossSilent {
			return []string{NoteNoReply, NoteSilent}
		}
		return []string{NoteNoReply}
	}
	switch h.LossKind {
	case LossRateLimit:
		if retried(obs) {
			notes = append(notes, NoteRateLimitPattern)
		} else {
			notes = append(notes, NoteRateLimit)
		}
	case LossPath:
		notes = append(notes, NotePathLoss)
	}
	if len(h.Responders) > 1 {
		notes = append(notes, fmt.Sprintf("ECMP: %d responders", len(h.Responders)))
	}
	// obs is in send order (aggregateHop sorted it).
	quoted := make(map[netip.Addr]int)
	var quotedOrder []netip.Addr
	for _, o := range obs {
		r := o.Response
		if r == nil {
			continue
		}
		if m := unreachableMarker(*r); m != "" && !slices.Contains(notes, m) {
			notes = append(notes, m)
		}
		// A destination quoting TTL q to a probe sent with TTL t is at hop
		// t-q+1: that is the path's length, not a rewrite.
		if r.QuotedTTL > 1 && !(r.Reached() && o.sentTTL-r.QuotedTTL+1 == h.TTL) {
			from := r.From.Unmap()
			if _, ok := quoted[from]; !ok {
				quotedOrder = append(quotedOrder, from)
			}
			quoted[from] = max(quoted[from], r.QuotedTTL)
		}
	}
	for _, from := range quotedOrder {
		if len(h.Responders) > 1 {
			notes = append(notes, fmt.Sprintf("quoted TTL %d from %s: TTL rewritten", quoted[from], addrString(from)))
		} else {
			notes = append(notes, fmt.Sprintf("quoted TTL %d: TTL rewritten", quoted[from]))
		}
	}
	return notes
}

// retried says whether some of a hop's probes were sent in a retry pass.
func retried(obs []indexedObs) bool {
	for _, o := range obs {
		if o.Pass > 0 {
			return true
		}
	}
	return false
}

// unreachableMarker returns traceroute's marker and meaning for an ICMP
// error that ends the path early ("" for the destination's own port
// unreachable and for non-errors).
func unreachableMarker(r probe.Response) string {
	from := r.From.Unmap()
	switch r.Kind {
	case probe.KindPacketTooBig:
		return "!F packet too big (mtu " + mtuString(r.MTU) + ")"
	case probe.KindParamProblem:
		return fmt.Sprintf("parameter problem (code %d)", r.Code)
	case probe.KindDestUnreachable:
	default:
		return ""
	}
	if r.Reached() {
		return ""
	}
	if from.Is6() {
		switch r.Code {
		case 0:
			return "!N no route to destination"
		case 1:
			return "!X administratively prohibited"
		case 2:
			return "!S beyond scope of source address"
		case 3:
			return "!H address unreachable"
		case 5:
			return "!X source address failed ingress/egress policy"
		case 6:
			return "!X reject route to destination"
		}
		return fmt.Sprintf("!<%d> destination unreachable", r.Code)
	}
	switch r.Code {
	case 0, 6, 8, 11:
		return "!N network unreachable"
	case 1, 7, 12:
		return "!H host unreachable"
	case 2:
		return "!P protocol unreachable"
	case 4:
		return "!F frag needed (mtu " + mtuString(r.MTU) + ")"
	case 5:
		return "!S source route failed"
	case 9, 10, 13:
		return "!X administratively prohibited"
	case 14:
		return "!V host precedence violation"
	case 15:
		return "!C precedence cutoff"
	}
	return fmt.Sprintf("!<%d> destination unreachable", r.Code)
}

func mtuString(mtu int) string {
	if mtu <= 0 {
		return "unknown"
	}
	return fmt.Sprint(mtu)
}
