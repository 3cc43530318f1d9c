package trace

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// fakeLimiter is the routers' side of ICMP rate limiting: a token bucket
// per answering address for ICMP errors (Linux: burst 6, 1/s; scaled here),
// and optionally a router that answers only every Nth probe.
type fakeLimiter struct {
	burst, rate float64
	everyNth    map[netip.Addr]int

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	seen    map[netip.Addr]int
}

func newFakeLimiter(burst, rate float64) *fakeLimiter {
	return &fakeLimiter{burst: burst, rate: rate, buckets: map[netip.Addr]*bucket{}, seen: map[netip.Addr]int{}, everyNth: map[netip.Addr]int{}}
}

func (l *fakeLimiter) allow(from netip.Addr, kind probe.ReplyKind) bool {
	if kind != probe.KindTimeExceeded && kind != probe.KindDestUnreachable {
		return true // routers do not rate-limit SYN-ACKs and echo replies
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.everyNth[from]; n > 0 {
		l.seen[from]++
		return l.seen[from]%n == 0
	}
	now := time.Now()
	b, ok := l.buckets[from]
	if !ok {
		b = &bucket{tokens: l.burst, burst: l.burst, rate: l.rate, at: now}
		l.buckets[from] = b
	}
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func TestTakeTokenTiers(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name   string
		tokens float64
		tier   int
		after  time.Duration
		ok     bool
		left   float64
		waitMs int64 // when !ok: retryAt - now, rounded down to ms
	}{
		{"full bucket, first query", 5, 0, 0, true, 4, 0},
		{"third query keeps two for others' first probes", 3, 2, 0, true, 2, 0},
		{"third query refused with two left", 2, 2, 0, false, 2, 1001},
		{"first query takes the last token", 1, 0, 0, true, 0, 0},
		{"empty: first query waits a refill", 0, 0, 0, false, 0, 1001},
		{"refilled after a second", 0, 0, time.Second, true, 0, 0},
		{"tier beyond the reserve needs no more than 3", 3, 9, 0, true, 2, 0},
		{"refill stops at the burst", 4, 0, time.Minute, true, 4, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &bucket{tokens: c.tokens, burst: 5, rate: 1, at: t0}
			now := t0.Add(c.after)
			ok, retryAt := takeToken(b, now, c.tier, 2)
			if ok != c.ok || b.tokens != c.left {
				t.Fatalf("ok=%v tokens=%v, want ok=%v tokens=%v", ok, b.tokens, c.ok, c.left)
			}
			if !ok && retryAt.Sub(now).Milliseconds() != c.waitMs {
				t.Errorf("retry in %v, want %d ms", retryAt.Sub(now), c.waitMs)
			}
		})
	}
}

func TestFrontier(t *testing.T) {
	cases := []struct {
		name   string
		perTTL map[int]tally
		want   int
	}{
		{"nothing sent", map[int]tally{}, 0},
		{"first in flight", map[int]tally{1: {sent: 3, inflight: 3}}, 0},
		{"answered then in flight", map[int]tally{1: {sent: 3, answered: 1, inflight: 2}, 2: {sent: 3, inflight: 3}}, 1},
		{"silent and given up counts as settled", map[int]tally{1: {sent: 3, answered: 3}, 2: {sent: 3}, 3: {sent: 3, inflight: 3}}, 2},
		{"an answer beyond a silent hop in flight", map[int]tally{1: {sent: 3, inflight: 3}, 2: {sent: 3, answered: 1, inflight: 2}}, 2},
	}
	for _, c := range cases {
		if got := frontier(1, c.perTTL); got != c.want {
			t.Errorf("%s: frontier %d, want %d", c.name, got, c.want)
		}
	}
}

func TestPlanRetries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Queries, cfg.RetryPasses = 3, 2
	full := tally{sent: 3, answered: 3}
	silent := tally{sent: 3}
	cases := []struct {
		name    string
		cells   map[cellKey]tally
		destTTL int
		pass    int
		want    map[int]int // ttl -> probes retried
		// answersAt: TTLs whose router answered earlier in the process.
		answersAt map[int]bool
	}{
		{"all answered", map[cellKey]tally{{1, 0}: full, {2, 0}: full}, 2, 0, map[int]int{}, nil},
		{"partial hop retried for the missing answers", map[cellKey]tally{{1, 0}: full, {2, 0}: {sent: 3, answered: 1}, {3, 0}: full}, 3, 0, map[int]int{2: 2}, nil},
		{"silent routers on a healthy path are not retried", map[cellKey]tally{{1, 0}: full, {2, 0}: silent, {3, 0}: full, {4, 0}: silent, {5, 0}: full, {6, 0}: full, {7, 0}: full}, 7, 0,
			map[int]int{}, nil},
		{"a column of stars is retried once per hop", map[cellKey]tally{{1, 0}: silent, {2, 0}: silent, {3, 0}: silent, {4, 0}: full}, 4, 0, map[int]int{1: 1, 2: 1, 3: 1}, nil},
		{"with a partial hop, silent hops are retried too", map[cellKey]tally{{1, 0}: silent, {2, 0}: {sent: 3, answered: 2}, {3, 0}: full, {4, 0}: full}, 4, 0, map[int]int{1: 1, 2: 1}, nil},
		{"unreached: nothing past the last answer", map[cellKey]tally{{1, 0}: {sent: 3, answered: 1}, {2, 0}: silent, {3, 0}: silent}, 0, 0, map[int]int{1: 2}, nil},
		{"no more than RetryPasses", map[cellKey]tally{{1, 0}: {sent: 3, answered: 1}, {2, 0}: full}, 2, 2, map[int]int{}, nil},
		{"the destination's hop is retried (port unreachables are limited too)", map[cellKey]tally{{1, 0}: full, {2, 0}: {sent: 3, answered: 1}}, 2, 1, map[int]int{2: 2}, nil},
		{"a silent hop whose router answered before is rate limiting: retried once", map[cellKey]tally{{1, 0}: full, {2, 0}: silent, {3, 0}: full, {4, 0}: silent, {5, 0}: full}, 5, 0,
			map[int]int{2: 1}, map[int]bool{1: true, 2: true, 3: true, 5: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := map[int]int{}
			for _, w := range planRetries(c.cells, cfg, c.destTTL, c.pass, c.answersAt) {
				got[w.ttl]++
				if w.pass != c.pass+1 || w.tier != 0 {
					t.Errorf("want pass %d tier 0, got %+v", c.pass+1, w)
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("retries %v, want %v", got, c.want)
			}
			for ttl, n := range c.want {
				if got[ttl] != n {
					t.Fatalf("retries %v, want %v", got, c.want)
				}
			}
		})
	}
}

func TestSchedulerMovesSpentBudgetToTheLearntRouter(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewScheduler(SchedulerConfig{Burst: 5, Rate: 1, ReserveTiers: 2, Now: func() time.Time { return now }})
	dst := netip.MustParseAddr("198.18.9.2")
	other := netip.MustParseAddr("198.18.77.2")
	router := netip.MustParseAddr("198.18.0.2")
	var key string
	for i := range 3 {
		k, ok, _ := s.Take(dst, probe.UDP, 1, i)
		if !ok {
			t.Fatalf("probe %d refused from a full bucket", i)
		}
		key = k
	}
	s.Answered(dst, 1, key, probe.Response{From: router, Kind: probe.KindTimeExceeded, QuotedTTL: 1})
	// Another trace toward dst now charges the known router, which has
	// the two tokens left; a trace to another address still charges the
	// unknown router at TTL 1 (which is the same router, and as empty).
	k, ok, _ := s.Take(dst, probe.TCP, 1, 0)
	if k != router.String() || !ok {
		t.Fatalf("charged %q ok=%v, want the learnt router", k, ok)
	}
	if _, ok, _ := s.Take(dst, probe.TCP, 1, 1); ok {
		t.Fatal("second query taken with one token left; the reserve should keep it")
	}
	if k, _, _ := s.Take(other, probe.TCP, 1, 0); k != "ttl4:1" {
		t.Errorf("unknown path charged %q", k)
	}
	// The destination's hop from a quoted TTL: TTL 9 quoting 4 is hop 6.
	s.Answered(dst, 9, "ttl4:9", probe.Response{From: dst, Kind: probe.KindDestUnreachable, Code: 3, QuotedTTL: 4})
	if h := s.DestinationHop(dst); h != 6 {
		t.Errorf("destination hop %d, want 6", h)
	}
	if k, _, _ := s.Take(dst, probe.UDP, 12, 0); k != dst.String() {
		t.Errorf("probe past the destination charged %q, want the destination", k)
	}
	if k, _, _ := s.Take(dst, probe.TCP, 6, 0); k != dst.String()+"|reply" {
		t.Errorf("tcp probe to the destination charged %q, want its reply budget", k)
	}
}

// testScheduler is a scheduler ten times as fast as the real one (the fake
// routers are too), so that budget tests run in tenths of seconds.
func testScheduler() *Scheduler {
	return NewScheduler(SchedulerConfig{Burst: 5, Rate: 10, FastBurst: 20, FastRate: 1000, MaxBurst: 20, MaxRate: 500,
		AdaptHold: time.Minute, ReserveTiers: 2})
}

func fastConfig() Config {
	cfg := DefaultConfig()
	cfg.Scheduler = testScheduler()
	cfg.RetryBackoff = 100 * time.Millisecond
	cfg.Timeout = time.Second
	return cfg
}

// traceAllProtocols traces a fake path of rate-limited routers with icmp,
// udp and tcp at once, as `trace -P all` does, and returns the hops.
func traceAllProtocols(t *testing.T, sched *Scheduler, lim *fakeLimiter, routers ...string) map[probe.Protocol][]Hop {
	t.Helper()
	dst := netip.MustParseAddr("198.18.6.2")
	out := map[probe.Protocol][]Hop{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, proto := range []probe.Protocol{probe.ICMP, probe.UDP, probe.TCP} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fp := newFakePath(dst, routers...)
			fp.limiter = lim
			defer fp.Close()
			cfg := fastConfig()
			cfg.Scheduler = sched
			obs, err := Run(context.Background(), fp, cfg, Destination{Addr: dst, Protocol: proto, Port: 443})
			if err != nil {
				t.Error(err)
			}
			hops, _, _ := Aggregate(obs, AggregateOptions{Queries: 3, MaxHops: 30})
			mu.Lock()
			out[proto] = hops
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// With the routers' limits (burst 6, then a tenth of the rate), three
// protocols at once must each see every router; without the scheduler's
// budget (a burst of 100) they do not, which shows the test can fail.
func TestAllProtocolsWithinTheRoutersBudget(t *testing.T) {
	routers := []string{"198.18.0.2", "198.18.1.2", "198.18.2.2", "198.18.3.2"}
	byProto := traceAllProtocols(t, testScheduler(), newFakeLimiter(6, 10), routers...)
	for proto, hops := range byProto {
		if len(hops) != 5 {
			t.Fatalf("%s: %d hops, want 5", proto, len(hops))
		}
		for _, h := range hops {
			if h.Received == 0 {
				t.Errorf("%s: hop %d silent under the budget: %+v", proto, h.TTL, h)
			}
		}
	}
	greedy := NewScheduler(SchedulerConfig{Burst: 100, Rate: 1000, ReserveTiers: 0})
	silent := 0
	for _, hops := range traceAllProtocols(t, greedy, newFakeLimiter(6, 0.01), routers...) {
		for _, h := range hops {
			if h.Received < h.Sent {
				silent++
			}
		}
	}
	if silent == 0 {
		t.Error("without a budget every probe was answered: the fake routers do not limit")
	}
}

// A router that never answers is silent; one that answers only every 3rd
// probe is rate limiting; both are told apart in the notes.
func TestSilentToldApartFromRateLimited(t *testing.T) {
	dst := netip.MustParseAddr("198.18.6.2")
	lim := newFakeLimiter(6, 10)
	lim.everyNth[netip.MustParseAddr("198.18.1.2")] = 3
	fp := newFakePath(dst, "", "198.18.1.2", "198.18.2.2")
	fp.limiter = lim
	defer fp.Close()
	obs, err := Run(context.Background(), fp, fastConfig(), Destination{Addr: dst, Protocol: probe.ICMP})
	if err != nil {
		t.Fatal(err)
	}
	hops, reached, at := Aggregate(obs, AggregateOptions{Queries: 3, MaxHops: 30})
	if !reached || at != 4 {
		t.Fatalf("reached %v at %d", reached, at)
	}
	if h := hops[0]; h.LossKind != LossSilent || h.Note != NoteNoReply+"; "+NoteSilent {
		t.Errorf("hop 1: kind %q note %q, want silent", h.LossKind, h.Note)
	}
	if h := hops[1]; h.Received == 0 || h.LossKind != LossRateLimit {
		t.Errorf("hop 2: %d of %d, kind %q note %q, want rate-limit", h.Received, h.Sent, h.LossKind, h.Note)
	}
}

// A UDP trace whose destination's port unreachables are limited: probes
// beyond it are answered late; the destination is placed by the quoted
// TTL, never beyond, and no "TTL rewritten" note.
func TestDestinationPlacedByQuotedTTL(t *testing.T) {
	dst := netip.MustParseAddr("198.18.6.2")
	fp := newFakePath(dst, "198.18.0.2", "198.18.1.2")
	lim := newFakeLimiter(6, 10)
	fp.limiter = lim
	// Drain the destination's budget so that the first answers are lost.
	for range 6 {
		lim.allow(dst, probe.KindDestUnreachable)
	}
	defer fp.Close()
	cfg := fastConfig()
	obs, err := Run(context.Background(), fp, cfg, Destination{Addr: dst, Protocol: probe.UDP, Port: 33434})
	if err != nil {
		t.Fatal(err)
	}
	hops, reached, at := Aggregate(obs, AggregateOptions{Queries: 3, MaxHops: 30})
	if !reached || at != 3 || len(hops) != 3 {
		t.Fatalf("reached %v at %d with %d hops, want 3", reached, at, len(hops))
	}
	for _, h := range hops {
		if h.Note != "" && h.LossKind != LossRateLimit {
			t.Errorf("hop %d note %q: %+v", h.TTL, h.Note, hops)
		}
	}
}

// Doubletree: 8 addresses behind the same routers; the shared hops are
// probed once (by the leader), every report still lists every hop; an
// address one hop nearer fails the check and is traced alone.
func TestSharedHopsProbedOncePerGroup(t *testing.T) {
	routers := []string{"198.18.0.2", "198.18.1.2", "198.18.2.2"}
	nearer := netip.MustParseAddr("198.18.2.77")
	lim := newFakeLimiter(6, 10)
	var mu sync.Mutex
	var paths []*fakePath
	cfg := fastConfig()
	opt := Options{Config: cfg, NewProber: func(_ context.Context, pc probe.Config) (probe.Prober, error) {
		rs := routers
		if pc.Dst == nearer {
			rs = routers[:2]
		}
		fp := newFakePath(pc.Dst, rs...)
		fp.limiter = lim
		mu.Lock()
		paths = append(paths, fp)
		mu.Unlock()
		return fp, nil
	}}
	var jobs []Job
	for i := range 8 {
		jobs = append(jobs, Job{Dest: Destination{Addr: netip.AddrFrom4([4]byte{198, 18, 3, byte(10 + i)}), Protocol: probe.TCP, Port: 443}})
	}
	// The nearer address comes in a later TraceAll of the same process
	// (sharing its scheduler), after the group has its leader.
	traces := TraceAll(context.Background(), jobs, opt)
	jobs = append(jobs, Job{Dest: Destination{Addr: nearer, Protocol: probe.TCP, Port: 443}})
	traces = append(traces, TraceAll(context.Background(), jobs[len(jobs)-1:], opt)...)
	for i, tr := range traces {
		want := 4
		if i == len(jobs)-1 {
			want = 3
			if tr.SharedWith != "" {
				t.Errorf("the nearer address shared the leader's hops")
			}
		}
		if !tr.Reached || tr.ReachedTTL != want || len(tr.Hops) != want {
			t.Fatalf("%s: reached %v at %d, %d hops, want %d", tr.Target.Address, tr.Reached, tr.ReachedTTL, len(tr.Hops), want)
		}
		for _, h := range tr.Hops {
			if h.Received == 0 {
				t.Errorf("%s: hop %d silent", tr.Target.Address, h.TTL)
			}
		}
	}
	shared := 0
	for _, tr := range traces {
		if tr.SharedWith != "" {
			shared++
		}
	}
	if shared != 7 {
		t.Errorf("%d traces shared the leader's hops, want 7", shared)
	}
	// Probes at the routers' TTLs: the leader's, the nearer one's, and
	// the checks of the followers at TTL 4 only.
	routerProbes := 0
	for _, fp := range paths {
		for _, p := range fp.sent {
			if p.TTL <= 3 && fp.dst != nearer {
				routerProbes++
			}
		}
	}
	if routerProbes > 3*3+3 {
		t.Errorf("%d probes at the shared routers, want the leader's 9 (and a few retries at most)", routerProbes)
	}
}

func TestSharedPathCheck(t *testing.T) {
	dst := netip.MustParseAddr("198.18.4.9")
	shared := &groupResult{leader: netip.MustParseAddr("198.18.4.2"), reachedTTL: 5, replyTTL: 60}
	ans := func(ttl int, r *probe.Response) Observation { return Observation{TTL: ttl, Response: r} }
	sa := func(from string, replyTTL int) *probe.Response {
		r := synAck(from, 1)
		r.ReplyTTL = replyTTL
		return r
	}
	cases := []struct {
		name string
		obs  []Observation
		want checkOutcome
	}{
		{"destination answers at the hop with the leader's reply TTL", []Observation{ans(5, sa("198.18.4.9", 60)), ans(5, nil)}, checkHolds},
		{"nearer: another reply TTL", []Observation{ans(5, sa("198.18.4.9", 61))}, checkFails},
		{"farther: a router answers", []Observation{ans(5, te("198.18.3.2", 1))}, checkFails},
		{"another address answers", []Observation{ans(5, sa("198.18.4.2", 60))}, checkFails},
		{"quoted TTL places it nearer", []Observation{ans(5, quotedUnreach("198.18.4.9", 2))}, checkFails},
		{"silence confirms nothing", []Observation{ans(5, nil), ans(5, nil)}, checkSilent},
	}
	for _, c := range cases {
		if got := sharedPathCheck(c.obs, dst, shared); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
