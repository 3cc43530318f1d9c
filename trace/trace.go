package trace

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// Job is one trace to run: a resolved address with one protocol.
type Job struct {
	Host string
	Dest Destination
}

// ProberFactory opens a prober; probe.NewProber in production, a fake in
// tests.
type ProberFactory func(ctx context.Context, cfg probe.Config) (probe.Prober, error)

// Options are the run-wide settings of TraceAll.
type Options struct {
	Config    Config
	Privilege string // auto|raw|unprivileged
	NewProber ProberFactory
	// OnTrace, when set, is called with each trace as soon as it is done.
	OnTrace func(Trace)
	// OnRound, when set, is called after every round of job i with the
	// trace so far (for a live view); calls for different jobs may come
	// from different goroutines.
	OnRound func(i int, partial Trace)
}

// TraceAll runs every job concurrently and returns the traces in job order.
// A job that cannot run (e.g. its sockets cannot be opened) yields a trace
// with Error set rather than failing the others.
func TraceAll(ctx context.Context, jobs []Job, opt Options) []Trace {
	out := make([]Trace, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = traceOne(ctx, i, job, opt)
			if opt.OnTrace != nil {
				opt.OnTrace(out[i])
			}
		}()
	}
	wg.Wait()
	return out
}

func traceOne(ctx context.Context, i int, job Job, opt Options) Trace {
	cfg := opt.Config
	cfg.Protocol = job.Dest.Protocol
	if cfg.Scheduler == nil {
		cfg.Scheduler = DefaultScheduler()
	}
	t := Trace{
		Target: Target{Host: job.Host, Address: job.Dest.Addr.String(), Port: int(job.Dest.Port),
			Protocol: string(job.Dest.Protocol)},
		Flows: cfg.Flows, Rounds: cfg.Rounds, Queries: cfg.Queries, Hops: []Hop{},
	}
	if job.Dest.Protocol == probe.ICMP {
		t.Target.Port = 0
	}
	start := time.Now()
	// Doubletree: the first trace of a group probes the path; the others
	// wait for it (before opening sockets) and probe only its end.
	g, leader := cfg.Scheduler.joinGroup(cfg, job.Dest)
	var shared *groupResult
	if g != nil && !leader {
		select {
		case <-g.done:
			shared = g.result
		case <-ctx.Done():
		}
	}
	pr, err := opt.NewProber(ctx, probe.Config{Protocol: job.Dest.Protocol, Dst: job.Dest.Addr,
		DstPort: job.Dest.Port, Flows: cfg.Flows, Privilege: opt.Privilege, MaxWait: cfg.Timeout})
	if err != nil {
		if g != nil && leader {
			g.publish(nil)
		}
		t.Error = err.Error()
		t.Privilege = opt.Privilege
		return t
	}
	defer pr.Close()
	t.Privilege = string(pr.Privilege())
	aggregate := AggregateOptions{Queries: cfg.Queries * cfg.Flows, MaxHops: cfg.MaxHops}
	if opt.OnRound != nil {
		progress := cfg.Progress
		cfg.Progress = func(round int, obs []Observation) {
			if progress != nil {
				progress(round, obs)
			}
			partial := t
			partial.Hops, partial.Reached, partial.ReachedTTL = Aggregate(obs, aggregate)
			partial.Rounds = round + 1
			partial.DurationS = time.Since(start).Seconds()
			opt.OnRound(i, partial)
		}
	}
	var obs []Observation
	if shared != nil && shared.reachedTTL > cfg.FirstHop {
		obs, err = runPastSharedHops(ctx, pr, cfg, job.Dest, shared)
		if err == nil && obs != nil {
			t.SharedWith, t.SharedHops = shared.leader.String(), shared.reachedTTL-cfg.FirstHop
		}
	}
	if obs == nil && err == nil {
		obs, err = Run(ctx, pr, cfg, job.Dest)
		if g != nil && leader {
			g.publish(leaderResult(job.Dest.Addr, obs, aggregate))
		}
	}
	t.Hops, t.Reached, t.ReachedTTL = Aggregate(obs, aggregate)
	if t.SharedWith != "" {
		note := fmt.Sprintf("probed once for the group (shared with %s)", t.SharedWith)
		for k := range t.Hops {
			if t.Hops[k].TTL < shared.reachedTTL {
				t.Hops[k].Note = strings.TrimPrefix(t.Hops[k].Note+"; "+note, "; ")
			}
		}
	}
	t.DurationS = time.Since(start).Seconds()
	if err != nil {
		t.Error = fmt.Sprintf("trace interrupted: %v", err)
	}
	return t
}
