package trace

import "testing"

func TestAnnotateReturn(t *testing.T) {
	for _, tc := range []struct {
		ttl, reply, wantReturn, wantAsymm int
	}{
		{3, 62, 3, 0},  // symmetric
		{3, 61, 4, 1},  // one router longer back
		{3, 59, 6, 3},  //
		{3, 253, 3, 0}, // a box starting at 255
		{3, 124, 5, 2}, // at 128, two longer
		{4, 63, 2, -2}, // shorter back
		{3, -1, 0, 0},  // unknown
		{3, 0, 0, 0},   //
		{3, 300, 0, 0}, // impossible
	} {
		h := Hop{TTL: tc.ttl, ReplyTTL: tc.reply}
		annotateReturn(&h)
		if h.ReturnHops != tc.wantReturn || h.Asymm != tc.wantAsymm {
			t.Errorf("TTL %d reply %d: return %d asymm %d, want %d %d", tc.ttl, tc.reply, h.ReturnHops, h.Asymm, tc.wantReturn, tc.wantAsymm)
		}
	}
}
