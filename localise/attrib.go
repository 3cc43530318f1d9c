package localise

import (
	"fmt"
	"strings"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
)

// resetByFingerprint makes the k / k+1 choice of a reset bracket (time-
// exceeded up to TTL lastTE, RSTs from rst.TTL on) by the RST's return-path
// fingerprint: the hop whose own time-exceeded answers, in either run,
// arrive with the RST's TTL sent it (attrib.Attribute). A TTL count would
// be off by as many routers as the way back is longer than the way there.
// ok is false when it cannot judge (the RST's TTL unknown, or it looks like
// the server's); the caller keeps its own reasoning then.
func resetByFingerprint(healthy, expired []InFlowAnswer, rst InFlowAnswer, lastTE int) (StateLoss, bool) {
	if rst.ReplyTTL <= 0 {
		return StateLoss{}, false
	}
	var answers []attrib.Answer
	for _, run := range [][]InFlowAnswer{healthy, expired} {
		for _, a := range run {
			answers = append(answers, attrib.Answer{Hop: a.TTL, From: a.From, Kind: string(a.Kind), TTL: a.ReplyTTL, IPID: -1})
		}
	}
	in := attrib.Input{
		Packet:            attrib.Fingerprint{TTL: rst.ReplyTTL, IPID: -1},
		Server:            attrib.Fingerprint{IPID: -1},
		ServerHop:         attrib.ServerHopOf(answers),
		Hops:              attrib.HopPrints(answers),
		Bracket:           &attrib.Bracket{LastForwarded: lastTE, FirstBlocked: rst.TTL},
		ServerAnswerAfter: tri.NotTested,
	}
	for _, a := range healthy {
		if a.Kind == InFlowACK && a.TTL == in.ServerHop {
			in.Server.TTL = a.ReplyTTL
		}
	}
	r := attrib.Attribute(in)
	if r.Origin != attrib.OriginMiddlebox || r.Hop == 0 || len(r.Candidates) == 0 {
		return StateLoss{}, false
	}
	hop, upTo := r.Candidates[0], r.Candidates[len(r.Candidates)-1]
	return StateLoss{Behaviour: LossReset, Hop: hop, UpTo: upTo,
		Reason: fmt.Sprintf("time-exceeded up to TTL %d, then a RST from TTL %d on; %s", lastTE, rst.TTL, strings.Join(r.Evidence, "; "))}, true
}
