package trace

import (
	"fmt"

	"github.com/hopcheck/hopcheck/probe"
)

// annotateReturn sets the hop's return distance from the TTL its reply
// arrived with, and the asymmetry when it differs from the forward
// distance. A reply's initial TTL is taken as the smallest common one
// (64, 128, 255) not below it, as tracepath does.
func annotateReturn(h *Hop) {
	h.ReturnHops, h.Asymm = ReturnHops(h.ReplyTTL), 0
	if h.ReturnHops > 0 {
		h.Asymm = h.ReturnHops - h.TTL
	}
}

// ReturnHops counts, like a TTL, how far back a reply received with TTL
// replyTTL came: hop k of a symmetric path answers with k. 0 unknown.
func ReturnHops(replyTTL int) int {
	return probe.SenderHop(replyTTL)
}

// AsymmNote is tracepath's "asymm N" for a hop whose reply came back over
// more or fewer hops than lie before it: "asymm 5 (+2)" is a reply that
// crossed 5 hops back to hop 3. "" when symmetric or unknown. The trace
// tables and the run report's hop table both show it, so it lives here.
func AsymmNote(h *Hop) string {
	if h.ReturnHops == 0 || h.Asymm == 0 || h.Received == 0 {
		return ""
	}
	return fmt.Sprintf("asymm %d (%+d)", h.ReturnHops, h.Asymm)
}
