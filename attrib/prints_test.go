package attrib

import (
	"reflect"
	"testing"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/trace"
)

func TestHopPrints(t *testing.T) {
	in := []Answer{
		{Hop: 1, From: "a", Kind: KindTimeExceeded, TTL: 64, IPID: 1},
		{Hop: 2, From: "b", Kind: KindTimeExceeded, TTL: 62, IPID: 0},
		{Hop: 2, From: "b", Kind: KindTimeExceeded, TTL: 62, IPID: 0},
		{Hop: 2, From: "b2", Kind: KindTimeExceeded, TTL: 63, IPID: -1}, // minority (ECMP)
		{Hop: 3, From: "c", Kind: KindRST, TTL: 62},                     // not an ICMP answer
		{Hop: 4, From: "d", Kind: KindTimeExceeded, TTL: -1},            // TTL unknown
		{Hop: 5, From: "e", Kind: KindTimeExceeded, TTL: 252, IPID: -1},
	}
	want := []HopPrint{
		{Hop: 1, Address: "a", TTL: 64, Samples: 1, IPIDZero: tri.No},
		{Hop: 2, Address: "b", TTL: 62, Samples: 3, IPIDZero: tri.Yes},
		{Hop: 5, Address: "e", TTL: 252, Samples: 1, IPIDZero: tri.NotTested},
	}
	if got := HopPrints(in); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if a := want[1].Asymmetry(); a != 1 {
		t.Errorf("hop 2 at 62: asymmetry %d, want +1 (2 routers back, 1 there)", a)
	}
}

func TestHopPrintAsymmetry(t *testing.T) {
	for _, tc := range []struct {
		hp   HopPrint
		want int
	}{
		{HopPrint{Hop: 3, TTL: 62}, 0},
		{HopPrint{Hop: 3, TTL: 61}, 1},
		{HopPrint{Hop: 3, TTL: 253}, 0},
		{HopPrint{Hop: 3, TTL: 124}, 2},
		{HopPrint{Hop: 4, TTL: 64}, -3},
	} {
		if got := tc.hp.Asymmetry(); got != tc.want {
			t.Errorf("%+v: asymmetry %d, want %d", tc.hp, got, tc.want)
		}
	}
}

func TestBracketOf(t *testing.T) {
	te := func(h int) Answer { return Answer{Hop: h, Kind: KindTimeExceeded, TTL: 65 - h} }
	healthy := []Answer{te(1), te(2), te(3), te(4), {Hop: 5, Kind: KindACK, TTL: 60}}
	tests := []struct {
		name    string
		expired []Answer
		want    *Bracket
	}{
		{"linux box at 3", []Answer{te(1), te(2), te(3), {Hop: 4, Kind: KindRST}, {Hop: 5, Kind: KindRST}}, &Bracket{LastForwarded: 3, FirstBlocked: 4}},
		{"silent box at 3", []Answer{te(1), te(2), {Hop: 3, Kind: "none"}, {Hop: 4, Kind: KindRST}}, &Bracket{LastForwarded: 2, FirstBlocked: 4}},
		{"unreachable", []Answer{te(1), {Hop: 2, Kind: KindUnreachable}}, &Bracket{LastForwarded: 1, FirstBlocked: 2}},
		{"nothing turned", []Answer{te(1), te(2), te(3), te(4), {Hop: 5, Kind: KindACK}}, nil},
		{"drop only", []Answer{te(1), te(2)}, nil},
	}
	for _, tc := range tests {
		if got := BracketOf(healthy, tc.expired); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got := ServerHopOf(healthy); got != 5 {
		t.Errorf("server hop %d, want 5", got)
	}
}

func TestTraceAnswers(t *testing.T) {
	trs := []trace.Trace{{Reached: true, ReachedTTL: 3, Hops: []trace.Hop{
		{TTL: 1, Received: 1, ReplyTTL: 64, Responders: []trace.Responder{{Address: "r1", Kinds: []string{"time-exceeded"}}}},
		{TTL: 2, Received: 0, ReplyTTL: -1},
		{TTL: 3, Received: 1, ReplyTTL: 62, Responders: []trace.Responder{{Address: "srv", Kinds: []string{"syn-ack"}}}},
	}}}
	want := []Answer{{Hop: 1, From: "r1", Kind: KindTimeExceeded, TTL: 64, IPID: -1}}
	if got := TraceAnswers(trs); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
