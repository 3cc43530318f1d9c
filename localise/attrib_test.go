package localise

import (
	"strings"
	"testing"
)

// A return path one router longer from hop 3 on: a TTL count puts the RST
// of the Linux box at hop 3 at hop 4; its own time-exceeded answers, which
// come back the same way, place it at hop 3.
func TestExplainStateLossAsymmetricReturn(t *testing.T) {
	te := func(ttl, reply int) InFlowAnswer {
		return InFlowAnswer{TTL: ttl, Kind: InFlowTimeExceeded, From: routerAddr(ttl).String(), ReplyTTL: reply}
	}
	healthy := []InFlowAnswer{te(1, 64), te(2, 63), te(3, 61), te(4, 60), te(5, 59),
		{TTL: 6, Kind: InFlowACK, From: server4.String(), ReplyTTL: 58, SenderHop: 7}}
	rst := func(ttl int) InFlowAnswer {
		return InFlowAnswer{TTL: ttl, Kind: InFlowRST, From: server4.String(), ReplyTTL: 61, SenderHop: 4}
	}
	expired := []InFlowAnswer{te(1, 64), te(2, 63), te(3, 61), rst(4), rst(5), rst(6)}
	l := ExplainStateLoss(healthy, expired)
	if l.Behaviour != LossReset || l.Hop != 3 || l.UpTo != 3 || !strings.Contains(l.Reason, "would have named hop 4") {
		t.Errorf("%+v; want reset at hop 3 exactly, saying the count would have named hop 4", l)
	}
	// The same with the box's TTL expiry silent: no fingerprint of hop 3,
	// both candidates stay.
	expired[2] = InFlowAnswer{TTL: 3, Kind: InFlowNone, ReplyTTL: -1}
	healthy[2] = InFlowAnswer{TTL: 3, Kind: InFlowNone, ReplyTTL: -1}
	l = ExplainStateLoss(healthy, expired)
	if l.Behaviour != LossReset || l.Hop != 3 || l.UpTo != 4 {
		t.Errorf("%+v; want reset at hop 3-4", l)
	}
}
