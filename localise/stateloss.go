package localise

// Where a flow lost its state: the healthy and the expired in-flow runs
// compared.

import (
	"fmt"

	"github.com/hopcheck/hopcheck/probe"
)

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
			(a.SenderHop == 0 || a.SenderHop == serverHop && probe.InitialTTL(a.ReplyTTL) == probe.InitialTTL(serverReplyTTL)) {
			return StateLoss{Behaviour: LossServerReset, Hop: t, UpTo: t,
				Reason: fmt.Sprintf("every router still forwarded the expired flow (time-exceeded up to TTL %d); at TTL %d the server, which acknowledged the healthy flow, answered with a RST (reply TTL %d): the server lost the flow, or a NAT on the path remapped its port", t-1, t, a.ReplyTTL)}
		}
		behaviour, what := LossReset, "a RST"
		if a.Kind == InFlowUnreachable {
			behaviour, what = LossReject, "an ICMP unreachable from "+a.From
		}
		lo := max(t-1, 1)
		if a.Kind == InFlowRST {
			if l, ok := resetByFingerprint(healthy, expired, a, lastTE); ok { // localise/attrib.go
				return l
			}
		}
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
func hopOf(addr string, runs ...[]InFlowAnswer) int {
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
