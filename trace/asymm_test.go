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

func TestAsymmNote(t *testing.T) {
	for _, tc := range []struct {
		h    Hop
		want string
	}{
		{Hop{TTL: 3, Received: 1, ReturnHops: 5, Asymm: 2}, "asymm 5 (+2)"},
		{Hop{TTL: 3, Received: 1, ReturnHops: 2, Asymm: -1}, "asymm 2 (-1)"},
		{Hop{TTL: 3, Received: 1, ReturnHops: 3}, ""},
		{Hop{TTL: 3, Received: 0, ReturnHops: 5, Asymm: 2}, ""},
		{Hop{TTL: 3, Received: 1}, ""},
	} {
		if got := AsymmNote(&tc.h); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.h, got, tc.want)
		}
	}
}
