package trace

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// Config controls one trace.
type Config struct {
	Protocol probe.Protocol
	Port     uint16
	FirstHop int
	MaxHops  int
	// Queries is the number of probes per hop per flow and round.
	Queries int
	// Flows is the number of Paris flows (distinct 5-tuples) traced.
	Flows int
	// Rounds repeats the whole trace (mtr-like cycles), Interval apart.
	Rounds   int
	Interval time.Duration
	// Timeout is the longest wait for any single probe.
	Timeout time.Duration
	// InFlight caps the probes outstanding at once.
	InFlight int
	// NearFactor: a silent probe is given up NearFactor × the RTT of a
	// later hop's answer after it was sent (traceroute's "NEAR").
	NearFactor float64
	// MinWait is the shortest wait for a silent probe.
	MinWait time.Duration
	// Progress, when set, is called after each round (for live output).
	Progress func(round int, obs []Observation)
	// Scheduler paces the probes per responder, shared by every trace of
	// the process; nil means DefaultScheduler().
	Scheduler *Scheduler
	// Window is how many TTLs beyond the last settled one probes may go.
	Window int
	// RetryPasses is how many later passes retry unanswered TTLs, the
	// first RetryBackoff after the previous pass ended, doubling.
	RetryPasses  int
	RetryBackoff time.Duration
	// stallWait is how long the engine sleeps when it has nothing in
	// flight and nothing it may send (a state it should never reach);
	// tests set it long to make reaching it a failure.
	stallWait time.Duration
}

// DefaultConfig returns the defaults of `hopcheck trace`.
func DefaultConfig() Config {
	return Config{Protocol: probe.TCP, Port: 443, FirstHop: 1, MaxHops: 30, Queries: 3, Flows: 1,
		Rounds: 1, Interval: time.Second, Timeout: 3 * time.Second, InFlight: 64, NearFactor: 5,
		MinWait: 2 * time.Millisecond, Window: 5, RetryPasses: 3, RetryBackoff: time.Second}
}

// Validate reports the first bad setting as a one-line error.
func (c Config) Validate() error {
	switch {
	case c.MaxHops < 1 || c.MaxHops > 255:
		return fmt.Errorf("max-hops %d is out of range 1-255", c.MaxHops)
	case c.FirstHop < 1 || c.FirstHop > c.MaxHops:
		return fmt.Errorf("first-hop %d is out of range 1-%d (max-hops)", c.FirstHop, c.MaxHops)
	case c.Queries < 1 || c.Queries > 100:
		return fmt.Errorf("queries %d is out of range 1-100", c.Queries)
	case c.Flows < 1 || c.Flows > 64:
		return fmt.Errorf("flows %d is out of range 1-64", c.Flows)
	case c.Rounds < 1:
		return fmt.Errorf("rounds %d must be at least 1", c.Rounds)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout %s must be positive", c.Timeout)
	}
	return nil
}

// pendingProbe is a probe whose answer is awaited.
type pendingProbe struct {
	obsIndex int
	probe    probe.Probe
	// key is the scheduler budget the probe was charged to.
	key string
}

// Run traces toward the prober's destination and returns one observation
// per probe sent. The caller's context bounds the whole trace; when it is
// cancelled, Run returns what was observed so far with the context error.
// Probes are paced by cfg.Scheduler (the process-wide one when nil).
func Run(ctx context.Context, pr probe.Prober, cfg Config, dst Destination) ([]Observation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var obs []Observation
	destTTL := 0 // hop of the destination; 0 = not yet known
	for round := 0; round < cfg.Rounds; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				return obs, ctx.Err()
			case <-time.After(cfg.Interval):
			}
		}
		var err error
		obs, destTTL, err = runRound(ctx, pr, cfg, dst, round, obs, destTTL)
		if cfg.Progress != nil {
			cfg.Progress(round, obs)
		}
		if err != nil {
			return obs, err
		}
	}
	return obs, nil
}

// withDefaults fills the settings a caller may leave zero.
func (c Config) withDefaults() Config {
	if c.InFlight < 1 {
		c.InFlight = 64
	}
	if c.NearFactor <= 0 {
		c.NearFactor = 3
	}
	if c.Window < 1 {
		c.Window = 5
	}
	if c.RetryPasses < 0 {
		c.RetryPasses = 0
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Second
	}
	if c.Scheduler == nil {
		c.Scheduler = DefaultScheduler()
	}
	if c.stallWait <= 0 {
		c.stallWait = 10 * time.Millisecond
	}
	return c
}

// Destination is where a trace goes.
type Destination struct {
	Addr     netip.Addr
	Protocol probe.Protocol
	Port     uint16
}

// want is a probe the engine still has to send.
type want struct {
	ttl, flow int
	// tier orders probes toward one router across traces (query index in
	// the first pass, 0 for retries); pass is 0 first, then the retries.
	tier, pass int
	notBefore  time.Time
}

// firstPass lists the probes of a round in send order: TTL by TTL, every
// query and flow of a TTL together.
func firstPass(cfg Config) []want {
	var ws []want
	for ttl := cfg.FirstHop; ttl <= cfg.MaxHops; ttl++ {
		for q := 0; q < cfg.Queries; q++ {
			for flow := 0; flow < cfg.Flows; flow++ {
				ws = append(ws, want{ttl: ttl, flow: flow, tier: q})
			}
		}
	}
	return ws
}

// cellKey is one TTL and flow.
type cellKey struct{ ttl, flow int }

// tally counts a cell's probes this round.
type tally struct{ sent, answered, inflight int }

// frontier is the highest TTL that has settled (answered, or every probe
// given up): probes go at most Window TTLs beyond it, so that a path's end
// is found before many probes pile onto the destination. A silent hop
// below an answered one does not hold it back (the near wait gives it up
// soon), as traceroute keeps its probes going as answers come.
func frontier(first int, perTTL map[int]tally) int {
	f := first - 1
	for ttl, t := range perTTL {
		if ttl > f && (t.answered > 0 || (t.sent > 0 && t.inflight == 0)) {
			f = ttl
		}
	}
	return f
}

// planRetries decides which unanswered probes to send again in the next
// pass (pure). A cell that answered some probes and not others is retried
// for the missing answers (rate limiting looks like that); a cell that
// answered none is retried once only when the trace shows pressure: some
// cell answered partly, or most hops were silent (a whole column of '*' is
// what an exhausted budget looks like; a router that never answers is
// silent and costs no retry on a healthy path). Only TTLs up to the
// destination (or, unreached, the last answering TTL) are retried. A cell
// that answered none is also retried once when its TTL is known to answer
// (answered, toward this address, earlier in the process): a router that
// answered before and not now is rate limiting, not silent.
func planRetries(cells map[cellKey]tally, cfg Config, destTTL, pass int, answersAt map[int]bool) []want {
	if pass >= cfg.RetryPasses {
		return nil
	}
	limit := destTTL
	if limit == 0 {
		for k, t := range cells {
			if t.answered > 0 && k.ttl > limit {
				limit = k.ttl
			}
		}
	}
	partial, silent, total := false, 0, 0
	for k, t := range cells {
		if k.ttl > limit {
			continue
		}
		total++
		switch {
		case t.answered == 0:
			silent++
		case t.answered < cfg.Queries:
			partial = true
		}
	}
	pressure := partial || (silent > 0 && 2*silent > total)
	var ws []want
	for ttl := cfg.FirstHop; ttl <= limit; ttl++ {
		for flow := 0; flow < cfg.Flows; flow++ {
			t, ok := cells[cellKey{ttl, flow}]
			if !ok || t.answered >= cfg.Queries {
				continue
			}
			n := cfg.Queries - t.answered
			if t.answered == 0 {
				if !pressure && !answersAt[ttl] {
					continue
				}
				n = 1
			}
			for range n {
				ws = append(ws, want{ttl: ttl, flow: flow, pass: pass + 1})
			}
		}
	}
	return ws
}

// runRound sends every TTL (up to the destination once known) within the
// scheduler's budget, waits for the answers with the adaptive wait, and
// retries unanswered TTLs in later passes with backoff.
func runRound(ctx context.Context, pr probe.Prober, cfg Config, dst Destination, round int, obs []Observation, destTTL int) ([]Observation, int, error) {
	sched := cfg.Scheduler
	inflight := map[uint16]pendingProbe{}
	// answeredRTT[channel][t] is the largest RTT of an answer from hop t
	// this round, by the socket (channel) it arrived on.
	answeredRTT := map[int]map[int]time.Duration{}
	unpriv := pr.Privilege() == probe.PrivilegeUnprivileged
	cells := map[cellKey]tally{}
	perTTL := map[int]tally{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// Probes still in flight when the round ends (cancelled, an error)
	// are released, or their routers would count them pending for the
	// life of the process (serve) and never be given a faster budget.
	defer func() {
		for _, pp := range inflight {
			sched.Released(pp.key)
		}
	}()
	responses := pr.Responses()
	wants := firstPass(cfg)
	pass := 0

	count := func(ttl, flow int, f func(*tally)) {
		c := cells[cellKey{ttl, flow}]
		f(&c)
		cells[cellKey{ttl, flow}] = c
		t := perTTL[ttl]
		f(&t)
		perTTL[ttl] = t
	}
	record := func(r probe.Response) {
		pp, ok := inflight[r.ProbeID]
		if !ok {
			return
		}
		delete(inflight, r.ProbeID)
		rr := r
		obs[pp.obsIndex].Response = &rr
		ttl := pp.probe.TTL
		count(ttl, pp.probe.Flow, func(t *tally) { t.inflight--; t.answered++ })
		sched.Answered(dst.Addr, ttl, pp.key, rr)
		if ch, ok := nearChannel(rr.Kind, pp.probe, unpriv); ok {
			if answeredRTT[ch] == nil {
				answeredRTT[ch] = map[int]time.Duration{}
			}
			if rr.RTT > answeredRTT[ch][ttl] {
				answeredRTT[ch][ttl] = rr.RTT
			}
		}
		if rr.Reached() {
			// The destination's answer to a TTL-t probe quoting TTL q
			// places it at hop t-q+1, whatever t was.
			h := ttl
			if rr.QuotedTTL >= 1 && rr.QuotedTTL <= ttl {
				h = ttl - rr.QuotedTTL + 1
			}
			if destTTL == 0 || h < destTTL {
				destTTL = h
			}
			if h < ttl {
				// Counted at the destination's hop too, whose own probes
				// may have gone unanswered (a limited port unreachable).
				count(h, pp.probe.Flow, func(t *tally) { t.answered++ })
			}
		}
	}
	// expire gives up on silent probes: after Timeout, or earlier once a
	// later hop answered (its RTT bounds how long this one can take). It
	// returns when the next pending probe would be given up.
	expire := func(now time.Time) time.Time {
		next := now.Add(cfg.Timeout)
		for id, pp := range inflight {
			ttl := pp.probe.TTL
			if destTTL > 0 && ttl > destTTL {
				// Beyond the destination: not wanted, not a miss.
				delete(inflight, id)
				count(ttl, pp.probe.Flow, func(t *tally) { t.inflight-- })
				sched.Released(pp.key)
				continue
			}
			wait := cfg.Timeout
			var later time.Duration
			if ch, ok := nearChannel(probe.KindTimeExceeded, pp.probe, unpriv); ok {
				for t, rtt := range answeredRTT[ch] {
					if t > ttl && rtt > later {
						later = rtt
					}
				}
			}
			if later > 0 {
				adaptive := time.Duration(cfg.NearFactor * float64(later))
				if adaptive < cfg.MinWait {
					adaptive = cfg.MinWait
				}
				if adaptive < wait {
					wait = adaptive
				}
			}
			giveUp := pp.probe.SentAt.Add(wait)
			if !now.Before(giveUp) {
				delete(inflight, id)
				count(ttl, pp.probe.Flow, func(t *tally) { t.inflight-- })
				sched.Missed(dst.Addr, ttl, pp.key)
			} else if giveUp.Before(next) {
				next = giveUp
			}
		}
		return next
	}
	drainReady := func() error {
		for {
			select {
			case r, ok := <-responses:
				if !ok {
					return fmt.Errorf("prober closed")
				}
				record(r)
			default:
				return nil
			}
		}
	}
	// sendReady sends every wanted probe that the window, the in-flight cap
	// and the budget allow now, and returns when to look again (zero: only
	// on an answer or expiry).
	sendReady := func() (time.Time, error) {
		var wake time.Time
		soon := func(t time.Time) {
			if wake.IsZero() || t.Before(wake) {
				wake = t
			}
		}
		kept := wants[:0]
		for i, w := range wants {
			if destTTL > 0 && w.ttl > destTTL {
				continue
			}
			f := frontier(cfg.FirstHop, perTTL)
			if w.ttl > f+cfg.Window || len(inflight) >= cfg.InFlight {
				kept = append(kept, w)
				continue
			}
			if now := sched.Now(); now.Before(w.notBefore) {
				kept = append(kept, w)
				soon(w.notBefore)
				continue
			}
			key, ok, retryAt := sched.Take(dst.Addr, dst.Protocol, w.ttl, w.tier)
			if !ok {
				kept = append(kept, w)
				soon(retryAt)
				continue
			}
			p := probe.Probe{Protocol: dst.Protocol, Dst: dst.Addr, DstPort: dst.Port, TTL: w.ttl, Flow: w.flow}
			if err := pr.Send(&p); err != nil {
				sched.Released(key)
				wants = append(kept, wants[i:]...)
				return wake, err
			}
			obs = append(obs, Observation{TTL: w.ttl, Flow: w.flow, Round: round, Pass: w.pass, ProbeID: p.ID, SentAt: p.SentAt})
			inflight[p.ID] = pendingProbe{obsIndex: len(obs) - 1, probe: p, key: key}
			count(w.ttl, w.flow, func(t *tally) { t.sent++; t.inflight++ })
			if err := drainReady(); err != nil {
				wants = append(kept, wants[i+1:]...)
				return wake, err
			}
		}
		wants = kept
		return wake, nil
	}

	for {
		if err := drainReady(); err != nil {
			return obs, destTTL, err
		}
		expire(time.Now())
		wake, err := sendReady()
		if err != nil {
			return obs, destTTL, err
		}
		// Answers read between the sends may have placed the destination,
		// which settles the probes sent beyond it: look again before
		// deciding whether the round is over.
		next := expire(time.Now())
		if len(wants) == 0 && len(inflight) == 0 {
			retries := planRetries(cells, cfg, destTTL, pass, sched.AnsweringTTLs(dst.Addr))
			if len(retries) == 0 {
				return obs, destTTL, nil
			}
			pass++
			backoff := cfg.RetryBackoff << (pass - 1)
			at := sched.Now().Add(backoff)
			for i := range retries {
				retries[i].notBefore = at
			}
			wants = retries
			continue
		}
		if !wake.IsZero() && (len(inflight) == 0 || wake.Before(next)) {
			next = wake
		}
		if len(inflight) == 0 && wake.IsZero() {
			// Nothing in flight and nothing sendable: the window waits for
			// nothing; should not happen, but never spin.
			next = time.Now().Add(cfg.stallWait)
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
			return obs, destTTL, ctx.Err()
		case r, ok := <-responses:
			if !ok {
				return obs, destTTL, fmt.Errorf("prober closed")
			}
			record(r)
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// nearChannel says whether an answer of kind to p may shorten the wait for
// earlier hops, and on which channel. The near wait assumes that an answer
// from an earlier hop, had it come, would already have been read: true only
// for answers read in arrival order from one socket. With raw sockets every
// ICMP answer comes through the prober's one ICMP socket (a SYN-ACK or RST
// comes through another, whose reader may run ahead); unprivileged UDP and
// ICMP answers come through one socket per flow; unprivileged TCP probes
// each have their own socket, so none qualifies.
func nearChannel(kind probe.ReplyKind, p probe.Probe, unpriv bool) (int, bool) {
	switch kind {
	case probe.KindTimeExceeded, probe.KindDestUnreachable, probe.KindPacketTooBig, probe.KindParamProblem, probe.KindEchoReply:
	default:
		return 0, false
	}
	if !unpriv {
		return 0, true
	}
	if p.Protocol == probe.TCP {
		return 0, false
	}
	return p.Flow, true
}
