package trace

import (
	"container/heap"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// simRouter answers ICMP errors on the simulated clock: a token bucket
// (burst, rate; burst 0 = no limit) or only every Nth probe.
type simRouter struct {
	burst, rate float64
	everyNth    int

	b    *bucket
	seen int
}

func (r *simRouter) answers(now time.Time) bool {
	if r.everyNth > 0 {
		r.seen++
		return r.seen%r.everyNth == 0
	}
	if r.burst == 0 {
		return true
	}
	if r.b == nil {
		r.b = &bucket{tokens: r.burst, burst: r.burst, rate: r.rate, at: now}
	}
	r.b.refill(now)
	if r.b.tokens < 1 {
		return false
	}
	r.b.tokens--
	return true
}

// simOutcome is a probe's answer (after the RTT) or its give-up (after the
// near wait), as the engine would report it.
type simOutcome struct {
	at       time.Time
	key      string
	answered bool
}

type outcomeQueue []simOutcome

func (q outcomeQueue) Len() int           { return len(q) }
func (q outcomeQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q outcomeQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *outcomeQueue) Push(x any)        { *q = append(*q, x.(simOutcome)) }
func (q *outcomeQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// simResult is what a simulated run of n probes toward one router shows.
type simResult struct {
	elapsed    time.Duration // until the last probe was sent
	unanswered int
	lastMiss   time.Duration // when the last probe went unanswered
	maxBurst   float64       // the largest budget the router was given
	maxRate    float64
	final      bucket
}

// simulate sends n UDP probes at TTL 1 toward a destination behind router
// as fast as the scheduler allows (the engine's loop, on a fake clock):
// answers come 1 ms after the send, give-ups 50 ms after (the near wait),
// so that answers to later probes are seen before earlier probes are
// given up, as in a real trace.
func simulate(t *testing.T, router *simRouter, n int) simResult {
	t.Helper()
	t0 := time.Unix(1000, 0)
	now := t0
	s := NewScheduler(SchedulerConfig{Now: func() time.Time { return now }})
	dst := netip.MustParseAddr("198.18.9.2")
	hop := netip.MustParseAddr("198.18.0.2")
	var res simResult
	var q outcomeQueue
	resolve := func(o simOutcome) {
		if o.answered {
			s.Answered(dst, 1, o.key, probe.Response{From: hop, Kind: probe.KindTimeExceeded, QuotedTTL: 1})
			return
		}
		s.Missed(dst, 1, o.key)
		res.unanswered++
		res.lastMiss = o.at.Sub(t0)
	}
	for sent := 0; sent < n; {
		for q.Len() > 0 && !q[0].at.After(now) {
			resolve(heap.Pop(&q).(simOutcome))
		}
		key, ok, retryAt := s.Take(dst, probe.UDP, 1, 0)
		if b := s.buckets[hop.String()]; b != nil {
			res.maxBurst, res.maxRate = max(res.maxBurst, b.burst), max(res.maxRate, b.rate)
		}
		if ok {
			sent++
			res.elapsed = now.Sub(t0)
			if router.answers(now) {
				heap.Push(&q, simOutcome{at: now.Add(time.Millisecond), key: key, answered: true})
			} else {
				heap.Push(&q, simOutcome{at: now.Add(50 * time.Millisecond), key: key})
			}
			now = now.Add(10 * time.Microsecond) // the engine's send loop
			continue
		}
		next := retryAt
		if q.Len() > 0 && q[0].at.Before(next) {
			next = q[0].at
		}
		now = next
	}
	for q.Len() > 0 {
		o := heap.Pop(&q).(simOutcome)
		now = o.at
		resolve(o)
	}
	if b := s.buckets[hop.String()]; b != nil {
		res.final = *b
	}
	return res
}

// The budget grows only where a router shows it answers faster: a router
// without a limit gets the cap and its probes go much faster than at the
// conservative 1/s; a Linux router (burst 6, 1/s) loses a few probes to
// one step beyond the budget, then stays at 1/s; a router answering every
// 3rd probe is never taken for a fast one.
func TestAdaptiveBudgetOverSimulatedRouters(t *testing.T) {
	const n = 60
	conservative := time.Duration(n-5) * time.Second // burst 5, then 1/s
	cases := []struct {
		name          string
		router        simRouter
		maxElapsed    time.Duration
		maxUnanswered int
		// missesBy: every unanswered probe was sent before this.
		missesBy  time.Duration
		wantBurst float64 // the largest budget given
		wantFinal float64 // the budget at the end
	}{
		{"no limit: raised to the cap", simRouter{}, 3 * time.Second, 0, 0, 20, 20},
		{"linux burst 6, 1/s: one step beyond, then conservative", simRouter{burst: 6, rate: 1}, conservative + 2*time.Second, 4, 2 * time.Second, 10, 5},
		{"nft 20 burst, 10/s: raised, then back at the first gap", simRouter{burst: 20, rate: 10}, conservative, 10, 3 * time.Second, 20, 5},
		{"every 3rd probe: never raised", simRouter{everyNth: 3}, conservative + 2*time.Second, n, 0, 5, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.router
			res := simulate(t, &r, n)
			t.Logf("%d probes sent in %s, %d unanswered (last at %s), largest budget %v/%v per s, final %v/%v per s",
				n, res.elapsed, res.unanswered, res.lastMiss, res.maxBurst, res.maxRate, res.final.burst, res.final.rate)
			if res.elapsed > c.maxElapsed {
				t.Errorf("%d probes took %s, want at most %s", n, res.elapsed, c.maxElapsed)
			}
			if res.unanswered > c.maxUnanswered {
				t.Errorf("%d unanswered, want at most %d", res.unanswered, c.maxUnanswered)
			}
			if c.missesBy > 0 && res.lastMiss > c.missesBy {
				t.Errorf("a probe went unanswered at %s: probed beyond its budget for too long", res.lastMiss)
			}
			if res.maxBurst != c.wantBurst || res.final.burst != c.wantFinal {
				t.Errorf("budget: largest burst %v, final %v (rate %v), want %v and %v", res.maxBurst, res.final.burst, res.final.rate, c.wantBurst, c.wantFinal)
			}
		})
	}
}

// The adaptive steps, pure: a whole burst answered with nothing pending
// raises the budget by one step up to the cap; a miss takes it back and
// holds it there.
func TestAdaptSteps(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewScheduler(SchedulerConfig{Burst: 5, Rate: 1, MaxBurst: 20, MaxRate: 50, AdaptHold: time.Minute})
	cases := []struct {
		name                 string
		b                    bucket
		wantBurst, wantRate  float64
		wantTokens           float64
		wantStreakAfterAdapt int
	}{
		{"burst answered: doubled", bucket{adaptive: true, burst: 5, rate: 1, tokens: 0, streak: 5}, 10, 2, 5, 0},
		{"one short of the burst: unchanged", bucket{adaptive: true, burst: 5, rate: 1, streak: 4}, 5, 1, 0, 4},
		{"probes pending: unchanged", bucket{adaptive: true, burst: 5, rate: 1, streak: 5, pending: 1}, 5, 1, 0, 5},
		{"capped", bucket{adaptive: true, burst: 20, rate: 32, tokens: 3, streak: 20}, 20, 50, 3, 0},
		{"at the cap: unchanged", bucket{adaptive: true, burst: 20, rate: 50, streak: 40}, 20, 50, 0, 40},
		{"unknown router (ttl budget): unchanged", bucket{burst: 5, rate: 1, streak: 5}, 5, 1, 0, 5},
		{"limited within the hold: unchanged", bucket{adaptive: true, burst: 5, rate: 1, streak: 5, limitedAt: now.Add(-30 * time.Second)}, 5, 1, 0, 5},
		{"limited before the hold: doubled", bucket{adaptive: true, burst: 5, rate: 1, streak: 5, limitedAt: now.Add(-2 * time.Minute)}, 10, 2, 5, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.b
			b.at = now
			s.adapt(&b, now)
			if b.burst != c.wantBurst || b.rate != c.wantRate || b.tokens != c.wantTokens || b.streak != c.wantStreakAfterAdapt {
				t.Errorf("burst %v rate %v tokens %v streak %d, want %v %v %v %d", b.burst, b.rate, b.tokens, b.streak, c.wantBurst, c.wantRate, c.wantTokens, c.wantStreakAfterAdapt)
			}
		})
	}
	b := bucket{adaptive: true, burst: 20, rate: 50, tokens: 7, streak: 3, at: now}
	s.limited(&b, now)
	if b.burst != 5 || b.rate != 1 || b.tokens != 0 || b.streak != 0 || !b.limitedAt.Equal(now) {
		t.Errorf("after a miss: %+v, want the conservative budget, empty, held from now", b)
	}
}

// The adaptive budget over the fake path's routers, three protocols at
// once (9 probes per router, beyond the conservative burst): routers
// without a limit are given more and every hop answers every probe; on
// Linux-like routers (burst 6) the step beyond costs a few probes, which
// the retries recover, and the budget falls back; a router answering only
// every 3rd probe is never given more.
func TestAdaptiveBudgetOverFakeRouters(t *testing.T) {
	routers := []string{"198.18.0.2", "198.18.1.2", "198.18.2.2", "198.18.3.2"}
	everyThird := netip.MustParseAddr(routers[1])
	cases := []struct {
		name    string
		limiter func() *fakeLimiter
		// raised: routers whose budget must end above the conservative
		// one; the others must end at it.
		raised map[string]bool
		// allAnswered: every probe of every hop answered (no limit met).
		allAnswered bool
		// maxLost bounds the probes a router left unanswered.
		maxLost int
	}{
		{"no limit", func() *fakeLimiter { return nil }, map[string]bool{routers[0]: true, routers[1]: true, routers[2]: true, routers[3]: true}, true, 0},
		{"linux-like burst 6", func() *fakeLimiter { return newFakeLimiter(6, 10) }, map[string]bool{}, false, 4},
		{"every 3rd probe at hop 2", func() *fakeLimiter {
			l := newFakeLimiter(1000, 1000)
			l.everyNth[everyThird] = 3
			return l
		}, map[string]bool{routers[0]: true, routers[2]: true, routers[3]: true}, false, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sched := testScheduler()
			byProto := traceAllProtocols(t, sched, c.limiter(), routers...)
			lost := map[int]int{}
			for proto, hops := range byProto {
				if len(hops) != 5 {
					t.Fatalf("%s: %d hops, want 5", proto, len(hops))
				}
				for _, h := range hops {
					switch {
					case h.TTL == 2 && c.maxLost < 0:
						// every 3rd: which protocol gets the answers varies.
					case h.Received == 0:
						t.Errorf("%s: hop %d silent", proto, h.TTL)
					case h.TTL < 5 && len(h.Responders) != 1, h.TTL < 5 && h.Responders[0].Address != routers[h.TTL-1]:
						t.Errorf("%s: hop %d answered by %+v, want %s", proto, h.TTL, h.Responders, routers[h.TTL-1])
					}
					if c.allAnswered && h.Received != h.Sent {
						t.Errorf("%s: hop %d: %d of %d answered", proto, h.TTL, h.Received, h.Sent)
					}
					lost[h.TTL] += h.Sent - h.Received
				}
			}
			for i, r := range routers {
				b := sched.buckets[r]
				if b == nil {
					t.Fatalf("no budget for %s", r)
				}
				if raised := b.burst > 5 || b.rate > 10; raised != c.raised[r] {
					t.Errorf("%s: budget %v/%v per s, want raised %v", r, b.burst, b.rate, c.raised[r])
				}
				if c.maxLost >= 0 && lost[i+1] > c.maxLost {
					t.Errorf("hop %d lost %d probes, want at most %d", i+1, lost[i+1], c.maxLost)
				}
			}
		})
	}
}

// The destination's port unreachables do not raise its budget: a UDP
// trace sends probes beyond its hop before it is known, and those that go
// unanswered are dropped unmarked (not misses), so its answers alone
// would overstate it. A router's time-exceeded answers do.
func TestAdaptCountsRoutersNotTheDestination(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewScheduler(SchedulerConfig{Now: func() time.Time { return now }})
	dst := netip.MustParseAddr("198.18.9.2")
	router := netip.MustParseAddr("198.18.0.2")
	for ttl := 2; ttl < 12; ttl++ {
		s.Answered(dst, ttl, "ttl4:"+strconv.Itoa(ttl), probe.Response{From: dst, Kind: probe.KindDestUnreachable, Code: 3, QuotedTTL: ttl - 1})
		s.Answered(dst, 1, "ttl4:1", probe.Response{From: router, Kind: probe.KindTimeExceeded, QuotedTTL: 1})
	}
	if b := s.buckets[dst.String()]; b != nil && b.burst != 5 {
		t.Errorf("destination's budget raised to %v by its port unreachables", b.burst)
	}
	if b := s.buckets[router.String()]; b == nil || b.burst != 20 {
		t.Errorf("router's budget %+v, want raised to 20 after 10 answers", b)
	}
}
