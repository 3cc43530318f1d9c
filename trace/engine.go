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
}

// DefaultConfig returns the defaults of `hopcheck trace`.
func DefaultConfig() Config {
	return Config{Protocol: probe.TCP, Port: 443, FirstHop: 1, MaxHops: 30, Queries: 3, Flows: 1,
		Rounds: 1, Interval: time.Second, Timeout: 3 * time.Second, InFlight: 64, NearFactor: 5,
		MinWait: 2 * time.Millisecond}
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
}

// Run traces toward the prober's destination and returns one observation
// per probe sent. The caller's context bounds the whole trace; when it is
// cancelled, Run returns what was observed so far with the context error.
func Run(ctx context.Context, pr probe.Prober, cfg Config, dst Destination) ([]Observation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InFlight < 1 {
		cfg.InFlight = 64
	}
	if cfg.NearFactor <= 0 {
		cfg.NearFactor = 3
	}
	var obs []Observation
	destTTL := 0 // TTL at which the destination answered; 0 = not yet
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

// Destination is where a trace goes.
type Destination struct {
	Addr     netip.Addr
	Protocol probe.Protocol
	Port     uint16
}

// runRound sends every TTL (up to the destination once known) and waits
// for the answers with the adaptive wait.
func runRound(ctx context.Context, pr probe.Prober, cfg Config, dst Destination, round int, obs []Observation, destTTL int) ([]Observation, int, error) {
	inflight := map[uint16]pendingProbe{}
	// answeredRTT[channel][t] is the largest RTT of an answer from hop t
	// this round, by the socket (channel) it arrived on.
	answeredRTT := map[int]map[int]time.Duration{}
	unpriv := pr.Privilege() == probe.PrivilegeUnprivileged
	maxTTL := cfg.MaxHops
	if destTTL > 0 {
		maxTTL = destTTL
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	responses := pr.Responses()

	record := func(r probe.Response) {
		pp, ok := inflight[r.ProbeID]
		if !ok {
			return
		}
		delete(inflight, r.ProbeID)
		rr := r
		obs[pp.obsIndex].Response = &rr
		ttl := pp.probe.TTL
		if ch, ok := nearChannel(rr.Kind, pp.probe, unpriv); ok {
			if answeredRTT[ch] == nil {
				answeredRTT[ch] = map[int]time.Duration{}
			}
			if rr.RTT > answeredRTT[ch][ttl] {
				answeredRTT[ch][ttl] = rr.RTT
			}
		}
		if rr.Reached() && (destTTL == 0 || ttl < destTTL) {
			destTTL = ttl
			if ttl < maxTTL {
				maxTTL = ttl
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
				delete(inflight, id)
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
			} else if giveUp.Before(next) {
				next = giveUp
			}
		}
		return next
	}
	drain := func(block bool) error {
		if block {
			next := expire(time.Now())
			if len(inflight) == 0 {
				return nil
			}
			timer.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case r, ok := <-responses:
				if !ok {
					return fmt.Errorf("prober closed")
				}
				record(r)
			case <-timer.C:
				// Answers already delivered count before anything is given up.
				for drained := false; !drained; {
					select {
					case r, ok := <-responses:
						if !ok {
							return fmt.Errorf("prober closed")
						}
						record(r)
					default:
						drained = true
					}
				}
				expire(time.Now())
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
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

	for ttl := cfg.FirstHop; ttl <= cfg.MaxHops; ttl++ {
		if ttl > maxTTL {
			break
		}
		for q := 0; q < cfg.Queries; q++ {
			for flow := 0; flow < cfg.Flows; flow++ {
				for len(inflight) >= cfg.InFlight {
					if err := drain(true); err != nil {
						return obs, destTTL, err
					}
				}
				if err := drain(false); err != nil {
					return obs, destTTL, err
				}
				if ttl > maxTTL {
					break
				}
				p := probe.Probe{Protocol: dst.Protocol, Dst: dst.Addr, DstPort: dst.Port, TTL: ttl, Flow: flow}
				if err := pr.Send(&p); err != nil {
					return obs, destTTL, err
				}
				obs = append(obs, Observation{TTL: ttl, Flow: flow, Round: round, ProbeID: p.ID, SentAt: p.SentAt})
				inflight[p.ID] = pendingProbe{obsIndex: len(obs) - 1, probe: p}
			}
		}
	}
	for len(inflight) > 0 {
		if err := drain(true); err != nil {
			return obs, destTTL, err
		}
	}
	return obs, destTTL, nil
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
