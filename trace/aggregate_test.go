package trace

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// resp builds a response of kind from addr with an RTT in milliseconds.
func resp(kind probe.ReplyKind, from string, ms float64) *probe.Response {
	r := &probe.Response{
		Kind:      kind,
		From:      netip.MustParseAddr(from),
		RTT:       time.Duration(ms * float64(time.Millisecond)),
		ReplyTTL:  -1,
		ReplyIPID: -1,
		QuotedTTL: -1,
	}
	switch kind {
	case probe.KindTimeExceeded:
		r.Type, r.QuotedTTL, r.ReplyTTL = 11, 1, 254
		if r.From.Is6() {
			r.Type = 3
		}
	case probe.KindDestUnreachable:
		r.Type, r.Code, r.QuotedTTL = 3, 3, 1
		if r.From.Is6() {
			r.Type, r.Code = 1, 4
		}
	}
	return r
}

func te(from string, ms float64) *probe.Response { return resp(probe.KindTimeExceeded, from, ms) }
func synAck(from string, ms float64) *probe.Response {
	r := resp(probe.KindSynAck, from, ms)
	r.ReplyTTL = 60
	return r
}
func echo(from string, ms float64) *probe.Response { return resp(probe.KindEchoReply, from, ms) }
func unreach(from string, code int, ms float64) *probe.Response {
	r := resp(probe.KindDestUnreachable, from, ms)
	r.Code = code
	return r
}

// at places responses (nil: no answer) at ttl, one per round, flow 0.
func at(ttl int, rs ...*probe.Response) []Observation {
	out := make([]Observation, len(rs))
	for i, r := range rs {
		out[i] = Observation{TTL: ttl, Round: i, ProbeID: uint16(ttl*100 + i), Response: r}
	}
	return out
}

// lossy sends n probes at ttl of which the last lost get no answer; the
// others answer with mk(i).
func lossy(ttl, n, lost int, mk func(i int) *probe.Response) []Observation {
	rs := make([]*probe.Response, n)
	for i := range n - lost {
		rs[i] = mk(i)
	}
	return at(ttl, rs...)
}

func teFrom(addr string) func(int) *probe.Response {
	return func(i int) *probe.Response { return te(addr, 10+float64(i)) }
}

func synFrom(addr string) func(int) *probe.Response {
	return func(i int) *probe.Response { return synAck(addr, 20+float64(i)) }
}

func concat(parts ...[]Observation) []Observation { return slices.Concat(parts...) }

// hopSummary is the part of a Hop that the loss tables check.
type hopSummary struct {
	TTL      int
	Sent     int
	Received int
	LossPct  float64
	LossKind string
	Note     string
}

func summarize(hops []Hop) []hopSummary {
	out := make([]hopSummary, len(hops))
	for i, h := range hops {
		out[i] = hopSummary{h.TTL, h.Sent, h.Received, h.LossPct, h.LossKind, h.Note}
	}
	return out
}

func TestAggregateLossAndReach(t *testing.T) {
	const (
		r1, r2, r3, r4 = "198.18.1.1", "198.18.2.1", "198.18.3.1", "198.18.4.1"
		dst            = "198.19.0.10"
	)
	tests := []struct {
		name        string
		obs         []Observation
		opt         AggregateOptions
		wantReached bool
		wantTTL     int
		want        []hopSummary
	}{
		{
			name:        "empty",
			obs:         nil,
			wantReached: false,
			want:        []hopSummary{},
		},
		{
			name: "clean TCP path, hops beyond the destination dropped",
			obs: concat(
				lossy(1, 3, 0, teFrom(r1)), lossy(2, 3, 0, teFrom(r2)),
				lossy(3, 3, 0, synFrom(dst)), lossy(4, 3, 0, synFrom(dst)),
			),
			wantReached: true, wantTTL: 3,
			want: []hopSummary{
				{1, 3, 3, 0, "", ""},
				{2, 3, 3, 0, "", ""},
				{3, 3, 3, 0, "", ""},
			},
		},
		{
			name: "silent router between answering hops is no reply, not path loss",
			obs: concat(
				lossy(1, 3, 0, teFrom(r1)), lossy(2, 3, 3, nil),
				lossy(3, 3, 0, teFrom(r3)), lossy(4, 3, 0, synFrom(dst)),
			),
			wantReached: true, wantTTL: 4,
			want: []hopSummary{
				{1, 3, 3, 0, "", ""},
				{2, 3, 0, 100, "", "no reply"},
				{3, 3, 3, 0, "", ""},
				{4, 3, 3, 0, "", ""},
			},
		},
		{
			name: "loss that later hops do not show is rate limiting",
			obs: concat(
				lossy(1, 10, 0, teFrom(r1)), lossy(2, 10, 5, teFrom(r2)),
				lossy(3, 10, 0, teFrom(r3)), lossy(4, 10, 0, synFrom(dst)),
			),
			wantReached: true, wantTTL: 4,
			want: []hopSummary{
				{1, 10, 10, 0, "", ""},
				{2, 10, 5, 50, LossRateLimit, NoteRateLimit},
				{3, 10, 10, 0, "", ""},
				{4, 10, 10, 0, "", ""},
			},
		},
		{
			name: "rate limiting hidden only from the destination is still rate limiting",
			obs: concat(
				lossy(1, 10, 4, teFrom(r1)), lossy(2, 10, 4, teFrom(r2)),
				lossy(3, 10, 0, synFrom(dst)),
			),
			wantReached: true, wantTTL: 3,
			want: []hopSummary{
				{1, 10, 6, 40, LossRateLimit, NoteRateLimit},
				{2, 10, 6, 40, LossRateLimit, NoteRateLimit},
				{3, 10, 10, 0, "", ""},
			},
		},
		{
			name: "loss that persists to the destination is path loss, marked where it starts",
			obs: concat(
				lossy(1, 10, 0, teFrom(r1)), lossy(2, 10, 3, teFrom(r2)),
				lossy(3, 10, 3, teFrom(r3)), lossy(4, 10, 4, teFrom(r4)),
				lossy(5, 10, 3, synFrom(dst)),
			),
			wantReached: true, wantTTL: 5,
			want: []hopSummary{
				{1, 10, 10, 0, "", ""},
				{2, 10, 7, 30, LossPath, NotePathLoss},
				{3, 10, 7, 30, "", ""},
				{4, 10, 6, 40, "", ""},
				{5, 10, 7, 30, "", ""},
			},
		},
		{
			name: "path loss tolerates noise of up to 10 points at later hops",
			obs: concat(
				lossy(1, 10, 3, teFrom(r1)), lossy(2, 10, 2, teFrom(r2)),
				lossy(3, 10, 3, synFrom(dst)),
			),
			wantReached: true, wantTTL: 3,
			want: []hopSummary{
				{1, 10, 7, 30, LossPath, NotePathLoss},
				{2, 10, 8, 20, "", ""},
				{3, 10, 7, 30, "", ""},
			},
		},
		{
			name: "path loss through a silent router",
			obs: concat(
				lossy(1, 10, 0, teFrom(r1)), lossy(2, 10, 4, teFrom(r2)),
				lossy(3, 10, 10, nil), lossy(4, 10, 4, synFrom(dst)),
			),
			wantReached: true, wantTTL: 4,
			want: []hopSummary{
				{1, 10, 10, 0, "", ""},
				{2, 10, 6, 40, LossPath, NotePathLoss},
				{3, 10, 0, 100, "", "no reply"},
				{4, 10, 6, 40, "", ""},
			},
		},
		{
			name: "rate limiting first, path loss further on, both marked",
			obs: concat(
				lossy(1, 10, 6, teFrom(r1)), lossy(2, 10, 0, teFrom(r2)),
				lossy(3, 10, 4, teFrom(r3)), lossy(4, 10, 4, synFrom(dst)),
			),
			wantReached: true, wantTTL: 4,
			want: []hopSummary{
				{1, 10, 4, 60, LossRateLimit, NoteRateLimit},
				{2, 10, 10, 0, "", ""},
				{3, 10, 6, 40, LossPath, NotePathLoss},
				{4, 10, 6, 40, "", ""},
			},
		},
		{
			name: "more loss added further on is a second start of path loss",
			obs: concat(
				lossy(1, 20, 4, teFrom(r1)), lossy(2, 20, 4, teFrom(r2)),
				lossy(3, 20, 12, teFrom(r3)), lossy(4, 20, 12, synFrom(dst)),
			),
			wantReached: true, wantTTL: 4,
			want: []hopSummary{
				{1, 20, 16, 20, LossPath, NotePathLoss},
				{2, 20, 16, 20, "", ""},
				{3, 20, 8, 60, LossPath, NotePathLoss},
				{4, 20, 8, 60, "", ""},
			},
		},
		{
			name: "loss only at the destination starts there",
			obs: concat(
				lossy(1, 10, 0, teFrom(r1)), lossy(2, 10, 0, teFrom(r2)),
				lossy(3, 10, 5, synFrom(dst)),
			),
			wantReached: true, wantTTL: 3,
			want: []hopSummary{
				{1, 10, 10, 0, "", ""},
				{2, 10, 10, 0, "", ""},
				{3, 10, 5, 50, LossPath, NotePathLoss},
			},
		},
		{
			name: "one lost probe of three is inconclusive, two of three is rate limiting",
			obs: concat(
				lossy(1, 3, 1, teFrom(r1)), lossy(2, 3, 2, teFrom(r2)),
				lossy(3, 3, 0, synFrom(dst)),
			),
			wantReached: true, wantTTL: 3,
			want: []hopSummary{
				{1, 3, 2, 33.3, "", ""},
				{2, 3, 1, 66.7, LossRateLimit, NoteRateLimit},
				{3, 3, 3, 0, "", ""},
			},
		},
		{
			name: "unreached: every probed TTL kept, loss at the last answering hop unclassified",
			obs: concat(
				lossy(1, 10, 0, teFrom(r1)), lossy(2, 10, 3, teFrom(r2)),
				lossy(3, 10, 10, nil), lossy(4, 10, 10, nil), lossy(5, 10, 10, nil),
			),
			wantReached: false,
			want: []hopSummary{
				{1, 10, 10, 0, "", ""},
				{2, 10, 7, 30, "", ""},
				{3, 10, 0, 100, "", "no reply"},
				{4, 10, 0, 100, "", "no reply"},
				{5, 10, 0, 100, "", "no reply"},
			},
		},
		{
			name: "MaxHops drops later TTLs, TTL 0 ignored",
			obs: concat(
				lossy(0, 3, 0, teFrom(r1)), lossy(1, 3, 0, teFrom(r1)),
				lossy(2, 3, 0, teFrom(r2)), lossy(3, 3, 0, synFrom(dst)),
			),
			opt:         AggregateOptions{Queries: 3, MaxHops: 2},
			wantReached: false,
			want: []hopSummary{
				{1, 3, 3, 0, "", ""},
				{2, 3, 3, 0, "", ""},
			},
		},
		{
			name: "host unreachable from a router ends the path without reaching",
			obs: concat(
				lossy(1, 3, 0, teFrom(r1)),
				at(2, unreach(r2, 1, 5), unreach(r2, 1, 5), nil),
			),
			wantReached: false,
			want: []hopSummary{
				{1, 3, 3, 0, "", ""},
				{2, 3, 2, 33.3, "", "!H host unreachable"},
			},
		},
		{
			name: "ICMP echo reply and UDP port unreachable reach the destination",
			obs: concat(
				at(1, te(r1, 1)), at(2, echo(dst, 2)), at(3, unreach(dst, 3, 3)),
			),
			wantReached: true, wantTTL: 2,
			want: []hopSummary{
				{1, 1, 1, 0, "", ""},
				{2, 1, 1, 0, "", ""},
			},
		},
		{
			name:        "port unreachable (code 3) reaches at the first TTL it appears",
			obs:         concat(at(2, unreach(dst, 3, 3)), at(1, te(r1, 1))),
			wantReached: true, wantTTL: 2,
			want: []hopSummary{
				{1, 1, 1, 0, "", ""},
				{2, 1, 1, 0, "", ""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hops, reached, ttl := Aggregate(tt.obs, tt.opt)
			if reached != tt.wantReached || ttl != tt.wantTTL {
				t.Errorf("reached, ttl = %v, %d; want %v, %d", reached, ttl, tt.wantReached, tt.wantTTL)
			}
			if got := summarize(hops); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("hops\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestAggregateUnreachableMarkers(t *testing.T) {
	const r = "198.18.9.1"
	const r6 = "2001:db8:9::1"
	frag := unreach(r, 4, 1)
	frag.MTU = 1400
	fragUnknown := unreach(r, 4, 1)
	ptb := resp(probe.KindPacketTooBig, r6, 1)
	ptb.MTU = 1280
	tests := []struct {
		resp *probe.Response
		note string
	}{
		{unreach(r, 0, 1), "!N network unreachable"},
		{unreach(r, 1, 1), "!H host unreachable"},
		{unreach(r, 2, 1), "!P protocol unreachable"},
		{frag, "!F frag needed (mtu 1400)"},
		{fragUnknown, "!F frag needed (mtu unknown)"},
		{unreach(r, 5, 1), "!S source route failed"},
		{unreach(r, 9, 1), "!X administratively prohibited"},
		{unreach(r, 10, 1), "!X administratively prohibited"},
		{unreach(r, 13, 1), "!X administratively prohibited"},
		{unreach(r, 14, 1), "!V host precedence violation"},
		{unreach(r, 15, 1), "!C precedence cutoff"},
		{unreach(r, 99, 1), "!<99> destination unreachable"},
		{unreach(r6, 0, 1), "!N no route to destination"},
		{unreach(r6, 1, 1), "!X administratively prohibited"},
		{unreach(r6, 3, 1), "!H address unreachable"},
		{unreach(r6, 5, 1), "!X source address failed ingress/egress policy"},
		{unreach(r6, 6, 1), "!X reject route to destination"},
		{ptb, "!F packet too big (mtu 1280)"},
	}
	for _, tt := range tests {
		hops, reached, _ := Aggregate(at(1, tt.resp), AggregateOptions{})
		if reached || len(hops) != 1 || hops[0].Note != tt.note {
			t.Errorf("%s code %d: reached %v, hops %+v; want note %q", tt.resp.From, tt.resp.Code, reached, hops, tt.note)
		}
	}
	// The destination's own port unreachable carries no marker.
	for _, r := range []*probe.Response{unreach("198.19.0.1", 3, 1), unreach("2001:db8::10", 4, 1)} {
		hops, reached, _ := Aggregate(at(1, r), AggregateOptions{})
		if !reached || hops[0].Note != "" {
			t.Errorf("%s port unreachable: reached %v, note %q", r.From, reached, hops[0].Note)
		}
	}
}

func TestAggregateStatsAndResponders(t *testing.T) {
	const r1, r1b, dst = "198.18.1.1", "198.18.1.2", "2001:db8::10"
	mpls := []probe.MPLSLabel{{Label: 16005, TC: 0, S: true, TTL: 1}}
	withMPLS := te(r1, 4)
	withMPLS.MPLS = mpls
	withMPLS.ReplyTTL = 253
	mapped := te("::ffff:"+r1b, 2)
	rewritten := te(r1b, 6)
	rewritten.QuotedTTL = 3

	obs := []Observation{
		// TTL 1: two responders over four flows; send order is by round.
		{TTL: 1, Flow: 0, Round: 0, Response: te(r1, 1)},
		{TTL: 1, Flow: 1, Round: 0, Response: mapped},
		{TTL: 1, Flow: 2, Round: 0, Response: nil},
		{TTL: 1, Flow: 3, Round: 0, Response: te(r1, 3)},
		{TTL: 1, Flow: 0, Round: 1, Response: withMPLS},
		{TTL: 1, Flow: 1, Round: 1, Response: rewritten},
		// TTL 2: the destination, over ICMPv6.
		{TTL: 2, Flow: 0, Round: 0, Response: echo(dst, 10)},
		{TTL: 2, Flow: 0, Round: 1, Response: echo(dst, 14)},
	}
	// Aggregation must not depend on the input order.
	shuffled := slices.Clone(obs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	for name, in := range map[string][]Observation{"ordered": obs, "shuffled": shuffled} {
		t.Run(name, func(t *testing.T) {
			hops, reached, ttl := Aggregate(in, AggregateOptions{Queries: 4})
			if !reached || ttl != 2 || len(hops) != 2 {
				t.Fatalf("reached %v at %d with %d hops", reached, ttl, len(hops))
			}
			h := hops[0]
			// RTTs in send order: 1, 2, 3, 4, 6.
			wantStats := RTTStats{Last: 6, Min: 1, Avg: 3.2, Max: 6, Stdev: 1.720}
			if h.RTTms != wantStats {
				t.Errorf("rtt = %+v, want %+v", h.RTTms, wantStats)
			}
			if h.JitterMs != 1.25 { // |2-1|+|3-2|+|4-3|+|6-4| = 5 over 4
				t.Errorf("jitter = %v, want 1.25", h.JitterMs)
			}
			if h.Sent != 6 || h.Received != 5 || h.LossPct != 16.7 {
				t.Errorf("sent/received/loss = %d/%d/%v", h.Sent, h.Received, h.LossPct)
			}
			if h.ReplyTTL != 254 { // of the last reply in send order (rewritten)
				t.Errorf("reply TTL = %d, want 254", h.ReplyTTL)
			}
			wantResponders := []Responder{
				{Address: r1, MPLS: mpls, Received: 3, Flows: []int{0, 3}, Kinds: []string{"time-exceeded"}},
				{Address: r1b, MPLS: []probe.MPLSLabel{}, Received: 2, Flows: []int{1}, Kinds: []string{"time-exceeded"}},
			}
			if !reflect.DeepEqual(h.Responders, wantResponders) {
				t.Errorf("responders\n got %+v\nwant %+v", h.Responders, wantResponders)
			}
			wantNote := "ECMP: 2 responders; quoted TTL 3 from 198.18.1.2: TTL rewritten"
			if h.Note != wantNote {
				t.Errorf("note = %q, want %q", h.Note, wantNote)
			}

			d := hops[1]
			if d.RTTms != (RTTStats{Last: 14, Min: 10, Avg: 12, Max: 14, Stdev: 2}) || d.JitterMs != 4 {
				t.Errorf("destination rtt %+v jitter %v", d.RTTms, d.JitterMs)
			}
			if d.ReplyTTL != -1 || d.Responders[0].Kinds[0] != "echo-reply" || d.Responders[0].Address != dst {
				t.Errorf("destination hop %+v", d)
			}
		})
	}
}

func TestAggregateSilentHopJSON(t *testing.T) {
	hops, _, _ := Aggregate(at(1, nil, nil), AggregateOptions{})
	h := hops[0]
	if h.ReplyTTL != -1 || h.RTTms != (RTTStats{}) || h.JitterMs != 0 {
		t.Errorf("silent hop %+v", h)
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	// Empty lists are [] for consumers, not null.
	want := `{"ttl":1,"responders":[],"sent":2,"received":0,"loss_pct":100,"rtt_ms":{"last":0,"min":0,"avg":0,"max":0,"stdev":0},"jitter_ms":0,"reply_ttl":-1,"note":"no reply"}`
	if string(b) != want {
		t.Errorf("json\n got %s\nwant %s", b, want)
	}
}

func TestAggregateQuotedTTLSingleResponder(t *testing.T) {
	r := te("198.18.5.1", 1)
	r.QuotedTTL = 2
	hops, _, _ := Aggregate(at(1, r, te("198.18.5.1", 1)), AggregateOptions{})
	if got, want := hops[0].Note, "quoted TTL 2: TTL rewritten"; got != want {
		t.Errorf("note = %q, want %q", got, want)
	}
}

func TestAggregateECMPAtDestinationTTL(t *testing.T) {
	// Flow 0 reaches at TTL 3; flow 1 takes a longer path and reaches at 4.
	obs := []Observation{
		{TTL: 1, Flow: 0, Response: te("198.18.1.1", 1)},
		{TTL: 1, Flow: 1, Response: te("198.18.1.1", 1)},
		{TTL: 2, Flow: 0, Response: te("198.18.2.1", 2)},
		{TTL: 2, Flow: 1, Response: te("198.18.2.2", 2)},
		{TTL: 3, Flow: 0, Response: synAck("198.19.0.10", 3)},
		{TTL: 3, Flow: 1, Response: te("198.18.3.2", 3)},
		{TTL: 4, Flow: 0, Response: synAck("198.19.0.10", 3)},
		{TTL: 4, Flow: 1, Response: synAck("198.19.0.10", 4)},
	}
	hops, reached, ttl := Aggregate(obs, AggregateOptions{})
	if !reached || ttl != 3 || len(hops) != 3 {
		t.Fatalf("reached %v at %d, %d hops", reached, ttl, len(hops))
	}
	var notes []string
	for _, h := range hops {
		notes = append(notes, fmt.Sprintf("%d:%s", h.TTL, h.Note))
	}
	want := []string{"1:", "2:ECMP: 2 responders", "3:ECMP: 2 responders"}
	if !slices.Equal(notes, want) {
		t.Errorf("notes %q, want %q", notes, want)
	}
}

// The case: the server, 7 hops away, rate-limits its port
// unreachables; the probes with TTL 7-21 go unanswered and the TTL-22 probe
// is answered quoting TTL 16. The destination is at hop 22-16+1 = 7, not
// 22, and the quote is the path's length, not a rewrite.
func TestAggregateDestinationHopFromQuotedTTL(t *testing.T) {
	cases := []struct {
		name      string
		obs       []Observation
		reachedAt int
		hops      int
		note7     string
	}{
		{"far answer only", append(append(at(6, te("198.18.5.2", 1)), at(7, nil, nil, nil)...), Observation{TTL: 22, Response: quotedUnreach("198.18.6.2", 16)}), 7, 2,
			NoteRateLimit},
		{"own answer and a far one", append(append(at(6, te("198.18.5.2", 1)), at(7, quotedUnreach("198.18.6.2", 1))...), Observation{TTL: 9, Response: quotedUnreach("198.18.6.2", 3)}), 7, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hops, reached, reachedAt := Aggregate(c.obs, AggregateOptions{Queries: 3, MaxHops: 30})
			if !reached || reachedAt != c.reachedAt || len(hops) != c.hops {
				t.Fatalf("reached %v at %d with %d hops, want %d with %d", reached, reachedAt, len(hops), c.reachedAt, c.hops)
			}
			if got := hops[len(hops)-1].Note; got != c.note7 {
				t.Errorf("hop 7 note %q, want %q", got, c.note7)
			}
		})
	}
}

func quotedUnreach(from string, quoted int) *probe.Response {
	r := unreach(from, 3, 5)
	r.QuotedTTL = quoted
	return r
}
