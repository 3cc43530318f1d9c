package trace

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// Routers rate-limit the ICMP errors a trace depends on: Linux answers
// time-exceeded and port-unreachable through a token bucket per peer (a
// burst of about 6, then about 1 per second), Cisco and Juniper police ICMP
// generation too. A Scheduler keeps every trace of a process within such a
// budget per responder, so that probes sent concurrently (several
// protocols, many addresses, run and serve) do not starve one another.

// SchedulerConfig sets the budget per responder.
type SchedulerConfig struct {
	// Burst and Rate (per second) bound ICMP errors asked of one router.
	Burst float64
	Rate  float64
	// FastBurst and FastRate bound answers that routers do not rate-limit
	// (SYN-ACK, RST, echo reply from the destination): a responder seen to
	// answer that way gets this budget, which only keeps us polite.
	FastBurst float64
	FastRate  float64
	// MaxBurst and MaxRate cap the budget of a router seen to answer
	// faster (see adapt). Zero means the default; at or below Burst and
	// Rate, budgets never grow.
	MaxBurst float64
	MaxRate  float64
	// AdaptHold is how long a router that showed rate limiting keeps the
	// conservative budget before it may be tried faster again.
	AdaptHold time.Duration
	// ReserveTiers: a probe of query tier q may take a token only if
	// 1+min(q, ReserveTiers) tokens are left, so that the first probes of
	// other traces toward the same router are not starved by later
	// queries of one trace.
	ReserveTiers int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultSchedulerConfig stays within the Linux default (burst 6, 1/s).
func DefaultSchedulerConfig() SchedulerConfig {
	return SchedulerConfig{Burst: 5, Rate: 1, FastBurst: 20, FastRate: 100, MaxBurst: 20, MaxRate: 50,
		AdaptHold: 10 * time.Minute, ReserveTiers: 2}
}

// Scheduler paces probes per responder. It is safe for concurrent use by
// every trace of a process; use DefaultScheduler unless a test needs its
// own.
type Scheduler struct {
	cfg SchedulerConfig

	mu      sync.Mutex
	buckets map[string]*bucket
	// hopAt[dst][ttl] is the router that answered a probe toward dst with
	// that TTL, learnt from any trace.
	hopAt map[netip.Addr]map[int]netip.Addr
	// destHop[dst] is the hop of the destination, when known.
	destHop map[netip.Addr]int
	groups  map[groupKey]*group
}

var (
	defaultSchedulerOnce sync.Once
	defaultScheduler     *Scheduler
)

// DefaultScheduler is the process-wide scheduler used by traces whose
// Config has none.
func DefaultScheduler() *Scheduler {
	defaultSchedulerOnce.Do(func() { defaultScheduler = NewScheduler(DefaultSchedulerConfig()) })
	return defaultScheduler
}

// NewScheduler returns a scheduler with its own budgets.
func NewScheduler(cfg SchedulerConfig) *Scheduler {
	def := DefaultSchedulerConfig()
	if cfg.Burst < 1 {
		cfg.Burst = def.Burst
	}
	if cfg.Rate <= 0 {
		cfg.Rate = def.Rate
	}
	if cfg.FastBurst < 1 {
		cfg.FastBurst = def.FastBurst
	}
	if cfg.FastRate <= 0 {
		cfg.FastRate = def.FastRate
	}
	if cfg.MaxBurst == 0 {
		cfg.MaxBurst = def.MaxBurst
	}
	if cfg.MaxRate == 0 {
		cfg.MaxRate = def.MaxRate
	}
	cfg.MaxBurst, cfg.MaxRate = max(cfg.MaxBurst, cfg.Burst), max(cfg.MaxRate, cfg.Rate)
	if cfg.AdaptHold <= 0 {
		cfg.AdaptHold = def.AdaptHold
	}
	if cfg.ReserveTiers < 0 {
		cfg.ReserveTiers = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{cfg: cfg, buckets: map[string]*bucket{}, hopAt: map[netip.Addr]map[int]netip.Addr{},
		destHop: map[netip.Addr]int{}, groups: map[groupKey]*group{}}
}

// Now is the scheduler's clock.
func (s *Scheduler) Now() time.Time { return s.cfg.Now() }

// bucket is a token bucket: tokens refill at rate per second up to burst.
type bucket struct {
	tokens float64
	burst  float64
	rate   float64
	at     time.Time
	// missed counts probes charged here that went unanswered in a row.
	missed int
	// The adaptive budget of a known responder's ICMP errors (adaptive):
	// pending probes charged here and not yet answered or given up;
	// streak, answers from this responder since the last miss or budget
	// change; limitedAt, when it last left a probe unanswered.
	adaptive  bool
	pending   int
	streak    int
	limitedAt time.Time
}

// refill brings the bucket to time now.
func (b *bucket) refill(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
}

// need is the number of tokens a probe of query tier must find.
func need(tier, reserveTiers int, burst float64) float64 {
	return min(burst, float64(1+min(max(tier, 0), reserveTiers)))
}

// takeToken is the pure budget decision: with the bucket at now, may a
// probe of this tier go? If not, when will it be able to.
func takeToken(b *bucket, now time.Time, tier, reserveTiers int) (ok bool, retryAt time.Time) {
	b.refill(now)
	n := need(tier, reserveTiers, b.burst)
	if b.tokens >= n {
		b.tokens--
		return true, now
	}
	wait := time.Duration((n - b.tokens) / b.rate * float64(time.Second))
	return false, now.Add(wait + time.Millisecond)
}

// answerClass says whether answers to probes toward dst with ttl are ICMP
// errors (rate limited by routers) or the destination's own replies.
type answerClass int

const (
	classError answerClass = iota
	classReply
)

// expectedClass: a TCP SYN or ICMP echo that reaches the destination gets a
// SYN-ACK/RST or echo reply, which routers do not rate-limit; a UDP probe
// gets a port unreachable, which they do.
func expectedClass(proto probe.Protocol) answerClass {
	if proto == probe.UDP {
		return classError
	}
	return classReply
}

// keyFor names the budget a probe toward dst with ttl is charged to: the
// router known to answer at that hop, the destination at and past its hop,
// or, while nothing is known, the unknown router at that TTL (routers near
// the source are shared by every destination). Caller holds s.mu.
func (s *Scheduler) keyFor(dst netip.Addr, proto probe.Protocol, ttl int) string {
	if h, ok := s.destHop[dst]; ok && ttl >= h {
		return responderKey(dst, expectedClass(proto))
	}
	if r, ok := s.hopAt[dst][ttl]; ok {
		if r == dst {
			return responderKey(dst, expectedClass(proto))
		}
		return responderKey(r, classError)
	}
	fam := "4"
	if dst.Is6() {
		fam = "6"
	}
	return "ttl" + fam + ":" + strconv.Itoa(ttl)
}

// isICMPError: answers that routers generate through their ICMP rate
// limit.
func isICMPError(k probe.ReplyKind) bool {
	switch k {
	case probe.KindTimeExceeded, probe.KindDestUnreachable, probe.KindParamProblem:
		return true
	}
	return false
}

func responderKey(a netip.Addr, c answerClass) string {
	if c == classReply {
		return a.String() + "|reply"
	}
	return a.String()
}

// bucketFor returns the bucket of key, created full. Caller holds s.mu.
func (s *Scheduler) bucketFor(key string, now time.Time) *bucket {
	b, ok := s.buckets[key]
	if !ok {
		burst, rate := s.cfg.Burst, s.cfg.Rate
		if strings.HasSuffix(key, "|reply") {
			burst, rate = s.cfg.FastBurst, s.cfg.FastRate
		}
		b = &bucket{tokens: burst, burst: burst, rate: rate, at: now,
			adaptive: !strings.HasPrefix(key, "ttl") && !strings.HasSuffix(key, "|reply")}
		s.buckets[key] = b
	}
	return b
}

// Take asks to send a probe toward dst with ttl. It returns the budget key
// charged (to pass to Answered/Missed) when the probe may go now, or ok
// false and when to ask again.
func (s *Scheduler) Take(dst netip.Addr, proto probe.Protocol, ttl, tier int) (key string, ok bool, retryAt time.Time) {
	dst = dst.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	key = s.keyFor(dst, proto, ttl)
	b := s.bucketFor(key, now)
	ok, retryAt = takeToken(b, now, tier, s.cfg.ReserveTiers)
	if ok {
		b.pending++
	}
	return key, ok, retryAt
}

// Answered records that a probe toward dst with ttl, charged to key, was
// answered by r. It learns who answers at that hop (moving the budget spent
// on the unknown router to the one now known) and where the destination is,
// and counts the ICMP errors of each responder toward a faster budget.
func (s *Scheduler) Answered(dst netip.Addr, ttl int, key string, r probe.Response) {
	dst = dst.Unmap()
	from := r.From.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if b, ok := s.buckets[key]; ok {
		b.missed = 0
		b.pending = max(b.pending-1, 0)
	}
	if r.Reached() {
		h := ttl
		if r.QuotedTTL >= 1 && r.QuotedTTL <= ttl {
			h = ttl - r.QuotedTTL + 1
		}
		if old, ok := s.destHop[dst]; !ok || h < old {
			s.destHop[dst] = h
		}
	} else {
		if s.hopAt[dst] == nil {
			s.hopAt[dst] = map[int]netip.Addr{}
		}
		s.hopAt[dst][ttl] = from
		// What the unknown router's budget spent is spent at the known one.
		if known := responderKey(from, classError); known != key {
			if spent, ok := s.buckets[key]; ok {
				spent.refill(now)
				b := s.bucketFor(known, now)
				b.refill(now)
				b.tokens = min(b.tokens, spent.tokens)
			}
		}
	}
	if isICMPError(r.Kind) && !r.Reached() {
		// A router's ICMP error shows how fast it answers. Not the
		// destination's port unreachables: probes sent beyond its hop
		// before it was known are dropped unmarked when they go
		// unanswered, so its answers alone would overstate it.
		b := s.bucketFor(responderKey(from, classError), now)
		b.streak++
		s.adapt(b, now)
	}
}

// adapt raises a responder's budget one step (burst and rate doubled, up
// to MaxBurst and MaxRate) once it has answered a conservative burst's
// worth of probes since the last step and every probe charged to it: the
// first step probes beyond what a Linux router (burst 6, 1/s) answers, and
// the first probe it leaves unanswered (limited) falls back to the
// conservative budget for AdaptHold. A router that answers only some
// probes never gets there. Caller holds s.mu.
func (s *Scheduler) adapt(b *bucket, now time.Time) {
	if !b.adaptive || b.pending > 0 || b.streak < int(s.cfg.Burst) {
		return
	}
	if b.burst >= s.cfg.MaxBurst && b.rate >= s.cfg.MaxRate {
		return
	}
	if !b.limitedAt.IsZero() && now.Sub(b.limitedAt) < s.cfg.AdaptHold {
		return
	}
	b.refill(now)
	burst := min(2*b.burst, s.cfg.MaxBurst)
	b.tokens += burst - b.burst
	b.burst, b.rate = burst, min(2*b.rate, s.cfg.MaxRate)
	b.streak = 0
}

// limited records that a responder left a probe unanswered: back to the
// conservative budget, with what it had beyond it taken away (its own
// bucket is likely empty). Caller holds s.mu.
func (s *Scheduler) limited(b *bucket, now time.Time) {
	b.refill(now)
	b.streak = 0
	b.limitedAt = now
	if b.burst > s.cfg.Burst || b.rate > s.cfg.Rate {
		b.burst, b.rate = s.cfg.Burst, s.cfg.Rate
		b.tokens = min(b.tokens, 0)
	}
}

// Missed records that a probe toward dst with ttl, charged to key, went
// unanswered. Routers that stop answering while our budget says they
// should (another program probing them, a stricter limit) are given a
// pause: the bucket is emptied, which delays the next probe there by a
// refill. The router known to answer at that hop loses any faster budget
// it was given.
func (s *Scheduler) Missed(dst netip.Addr, ttl int, key string) {
	dst = dst.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if r, ok := s.hopAt[dst][ttl]; ok {
		if b, ok := s.buckets[responderKey(r, classError)]; ok {
			s.limited(b, now)
		}
	}
	b, ok := s.buckets[key]
	if !ok {
		return
	}
	b.refill(now)
	b.pending = max(b.pending-1, 0)
	b.missed++
	if b.adaptive {
		s.limited(b, now)
	}
	if b.missed >= 2 {
		b.tokens = min(b.tokens, 0)
	}
}

// Released records that a probe charged to key will be neither answered
// nor missed: its trace was cancelled or ended with it in flight, or it
// went beyond the destination. It stops counting as pending (a router
// with probes pending is never given a faster budget) and counts as
// nothing else.
func (s *Scheduler) Released(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[key]; ok {
		b.pending = max(b.pending-1, 0)
	}
}

// AnsweringTTLs returns the TTLs toward dst at which a router has
// answered so far in this process, from any trace.
func (s *Scheduler) AnsweringTTLs(dst netip.Addr) map[int]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]bool{}
	for ttl := range s.hopAt[dst.Unmap()] {
		out[ttl] = true
	}
	return out
}

// DestinationHop returns the destination's hop learnt so far (0 unknown).
func (s *Scheduler) DestinationHop(dst netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.destHop[dst.Unmap()]
}

// expectDestination records where a destination is expected (a group's
// leader found it there), unless something nearer is known.
func (s *Scheduler) expectDestination(dst netip.Addr, hop int) {
	dst = dst.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.destHop[dst]; !ok || hop < old {
		s.destHop[dst] = hop
	}
}
