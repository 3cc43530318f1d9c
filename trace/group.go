package trace

import (
	"context"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// Doubletree (Donnet et al., SIGMETRICS 2005): traces from one source to
// many destinations share the hops near the source. The first trace of a
// group probes the whole path; the others probe only the leader's
// destination hop, and take the shared hops from the leader when the
// check holds: their destination answers a probe sent with the leader's
// destination TTL (so it is no farther) and its answer arrives with the
// same TTL as the leader's (so it is no nearer). Otherwise they trace the
// whole path themselves. This keeps N traces behind the same routers
// within the routers' ICMP budget.

// groupKey: traces that may share hops.
type groupKey struct {
	proto probe.Protocol
	// port: a filter may treat ports differently (TCP to 5671 dropped
	// where 443 passes); traces to other ports do not share hops.
	port      uint16
	v6        bool
	queries   int
	firstHop  int
	maxHops   int
	scheduler *Scheduler
}

// groupFresh is how long a leader's path is reused (serve runs again).
const groupFresh = 30 * time.Second

// group is one leader's trace, awaited by the others.
type group struct {
	done    chan struct{}
	started time.Time
	result  *groupResult // nil: the leader found no destination
}

// groupResult is what followers need of the leader's trace.
type groupResult struct {
	leader     netip.Addr
	reachedTTL int
	// replyTTL is the TTL of the destination's answer as received, -1
	// unknown.
	replyTTL int
	obs      []Observation
}

func (g *group) publish(r *groupResult) {
	g.result = r
	close(g.done)
}

// joinGroup returns the group of a trace and whether it leads it; nil
// when the trace is not grouped (several rounds or flows: every probe is
// wanted by itself).
func (s *Scheduler) joinGroup(cfg Config, dst Destination) (*group, bool) {
	if cfg.Rounds != 1 || cfg.Flows != 1 {
		return nil, false
	}
	k := groupKey{proto: dst.Protocol, port: dst.Port, v6: dst.Addr.Unmap().Is6(), queries: cfg.Queries, firstHop: cfg.FirstHop, maxHops: cfg.MaxHops, scheduler: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if g, ok := s.groups[k]; ok && now.Sub(g.started) < groupFresh {
		select {
		case <-g.done:
			if g.result == nil {
				break // the leader found nothing to share: lead anew
			}
			return g, false
		default:
			return g, false
		}
	}
	g := &group{done: make(chan struct{}), started: now}
	s.groups[k] = g
	return g, true
}

// leaderResult keeps what followers need of a leader's observations (nil
// when the destination was not reached).
func leaderResult(dst netip.Addr, obs []Observation, opt AggregateOptions) *groupResult {
	_, reached, at := Aggregate(obs, opt)
	if !reached {
		return nil
	}
	r := &groupResult{leader: dst.Unmap(), reachedTTL: at, replyTTL: -1}
	for _, o := range obs {
		if o.TTL < at {
			r.obs = append(r.obs, o)
		}
		if o.Response != nil && o.Response.Reached() && DestinationHop(o.TTL, *o.Response) == at {
			r.replyTTL = o.Response.ReplyTTL
		}
	}
	return r
}

// checkOutcome is what a follower's probes at the leader's destination
// hop say about the shared path.
type checkOutcome int

const (
	// checkHolds: the destination answered there, at that hop, with the
	// leader's reply TTL.
	checkHolds checkOutcome = iota
	// checkFails: something contradicts (a router answered, another hop,
	// another reply TTL): trace alone.
	checkFails
	// checkSilent: no answer (e.g. the destination's port unreachables
	// are rate limited, as for many addresses of one host): the shared
	// hops stand (same protocol and port, same group), the destination
	// is not confirmed.
	checkSilent
)

// sharedPathCheck is the cheap check of a follower's own probes (pure).
func sharedPathCheck(obs []Observation, dst netip.Addr, shared *groupResult) checkOutcome {
	out := checkSilent
	for _, o := range obs {
		r := o.Response
		if r == nil {
			continue
		}
		if !r.Reached() || r.From.Unmap() != dst.Unmap() || DestinationHop(o.TTL, *r) != shared.reachedTTL {
			return checkFails
		}
		if shared.replyTTL >= 0 && r.ReplyTTL >= 0 && r.ReplyTTL != shared.replyTTL {
			return checkFails
		}
		out = checkHolds
	}
	return out
}

// runPastSharedHops probes only the leader's destination hop and, when the
// check holds, returns the leader's observations of the shared hops with
// its own. nil observations and no error: the check failed, trace alone.
func runPastSharedHops(ctx context.Context, pr probe.Prober, cfg Config, dst Destination, shared *groupResult) ([]Observation, error) {
	// The probes go to the destination itself: charge its budget, not the
	// unknown router at that TTL that every follower would share.
	cfg.Scheduler.expectDestination(dst.Addr, shared.reachedTTL)
	own := cfg
	own.FirstHop, own.MaxHops = shared.reachedTTL, shared.reachedTTL
	obs, err := Run(ctx, pr, own, dst)
	if err != nil {
		return obs, err
	}
	if sharedPathCheck(obs, dst.Addr, shared) == checkFails {
		return nil, nil
	}
	out := make([]Observation, 0, len(shared.obs)+len(obs))
	out = append(out, shared.obs...)
	return append(out, obs...), nil
}
