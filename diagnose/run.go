package diagnose

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// Profile sets how long and how hard a run measures.
type Profile struct {
	Name string
	// IdleMax is the longest idle time the ladder tries.
	IdleMax time.Duration
	// Connect: connections and their rate.
	ConnectCount int
	ConnectRate  float64
	// ConcurrencyCap is the light concurrency check's ceiling.
	ConcurrencyCap int
	// IdleWidth is the idle ladder's simultaneous connections.
	IdleWidth int
	// TraceQueries per hop.
	TraceQueries int
}

// Profiles by name.
var Profiles = map[string]Profile{
	// quick: about two minutes; idle up to 60 s.
	"quick": {Name: "quick", IdleMax: 60 * time.Second, ConnectCount: 20, ConnectRate: 10, ConcurrencyCap: 16, IdleWidth: 12, TraceQueries: 3},
	// standard: idle up to 10 minutes (covers 60 s ALBs, 240 s Azure, 350 s AWS NAT).
	"standard": {Name: "standard", IdleMax: 10 * time.Minute, ConnectCount: 50, ConnectRate: 5, ConcurrencyCap: 32, IdleWidth: 12, TraceQueries: 3},
	// full: idle up to 60 minutes (also 1200 s GCP NAT and firewalls' 3600 s).
	"full": {Name: "full", IdleMax: 60 * time.Minute, ConnectCount: 100, ConnectRate: 5, ConcurrencyCap: 32, IdleWidth: 12, TraceQueries: 5},
}

// Localiser runs the localisation probes toward one address; nil in
// Options skips localisation. It fills t.Localisation.
type Localiser func(ctx context.Context, t *TargetReport, serverHop int)

// Options configure a run.
type Options struct {
	Profile   Profile
	Privilege string // auto|raw|unprivileged (traces)
	// TCP is the base of every connection test (dial config: TLS, token).
	TCP       tcpcheck.Options
	NewProber trace.ProberFactory
	Localise  Localiser
	// Log reports progress ("[address] phase ...").
	Log func(format string, a ...any)
	// Now is injected for tests; time.Now when nil.
	Now func() time.Time
}

// Run diagnoses every job concurrently (each address has its own path)
// and returns the report with its findings. When ctx is cancelled it
// returns what was measured, marked incomplete.
func Run(ctx context.Context, opt Options, jobs []tcpcheck.Job) Report {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	rep := Report{SchemaVersion: SchemaVersion, StartedAt: start.UTC(), Profile: opt.Profile.Name,
		Targets: make([]TargetReport, len(jobs)), Findings: []Finding{}}
	// Sportradar blocks clients with more than 40 connections: share a
	// budget of 36 among the idle ladders toward *.betradar.com.
	betradar := 0
	for _, j := range jobs {
		if tcpcheck.IsBetradar(j.Target.Spec.Host) {
			betradar++
		}
	}
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opt
			if tcpcheck.IsBetradar(job.Target.Spec.Host) && betradar > 0 {
				o.Profile.IdleWidth = min(o.Profile.IdleWidth, max(2, 36/betradar))
				o.Profile.ConcurrencyCap = min(o.Profile.ConcurrencyCap, max(2, 36/betradar))
			}
			rep.Targets[i] = diagnoseOne(ctx, o, job, start)
		}()
	}
	wg.Wait()
	for _, t := range rep.Targets {
		for _, tr := range t.Traces {
			if tr.Privilege != "" {
				rep.Privilege = tr.Privilege
			}
		}
	}
	rep.Findings = Diagnose(rep.Targets)
	rep.Incomplete = ctx.Err() != nil
	rep.DurationS = now().Sub(start).Seconds()
	return rep
}

func (o Options) logf(format string, a ...any) {
	if o.Log != nil {
		o.Log(format, a...)
	}
}

// diagnoseOne runs the pipeline toward one address: traces (icmp, udp,
// tcp to the service port), connect, a light concurrency check, data,
// the idle ladder, then localisation.
func diagnoseOne(ctx context.Context, opt Options, job tcpcheck.Job, start time.Time) TargetReport {
	t := TargetReport{Target: job.Target.Name(), Host: job.Target.Spec.Host, Address: job.Addr.String(),
		Port: job.Target.Spec.Port, App: string(job.Target.App), Traces: []trace.Trace{},
		Tests: map[string]tcpcheck.Result{}, TestFindings: map[string][]tcpcheck.Finding{}}
	tag := fmt.Sprintf("[%s]", job.Addr)

	opt.logf("%s trace icmp, udp, tcp/%d", tag, t.Port)
	tcfg := trace.DefaultConfig()
	tcfg.Queries = opt.Profile.TraceQueries
	var tjobs []trace.Job
	for _, p := range []probe.Protocol{probe.ICMP, probe.UDP, probe.TCP} {
		tjobs = append(tjobs, trace.Job{Host: t.Host, Dest: trace.Destination{Addr: job.Addr, Protocol: p, Port: uint16(t.Port)}})
	}
	t.Traces = trace.TraceAll(ctx, tjobs, trace.Options{Config: tcfg, Privilege: opt.Privilege, NewProber: opt.NewProber})
	serverHop := 0
	for _, tr := range t.Traces {
		if tr.Reached && (serverHop == 0 || tr.ReachedTTL < serverHop) {
			serverHop = tr.ReachedTTL
		}
	}

	tests := []struct {
		name string
		run  func(context.Context, tcpcheck.Options, tcpcheck.Job, time.Time) (tcpcheck.Result, []tcpcheck.Finding)
		set  func(*tcpcheck.Options)
	}{
		{"connect", tcpcheck.RunConnect, func(o *tcpcheck.Options) { o.Count, o.Rate = opt.Profile.ConnectCount, opt.Profile.ConnectRate }},
		{"concurrency", tcpcheck.RunConcurrency, func(o *tcpcheck.Options) { o.Width = opt.Profile.ConcurrencyCap }},
		{"data", tcpcheck.RunData, func(o *tcpcheck.Options) {}},
		{"idle", tcpcheck.RunIdle, func(o *tcpcheck.Options) { o.Width, o.IdleMax = opt.Profile.IdleWidth, opt.Profile.IdleMax }},
	}
	for _, tc := range tests {
		if ctx.Err() != nil {
			break
		}
		if tc.name == "data" && job.Target.App == tcpcheck.AppAMQPS {
			continue // an AMQP broker sends nothing large before login
		}
		o := opt.TCP
		tc.set(&o)
		opt.logf("%s %s", tag, tc.name)
		res, fs := tc.run(ctx, o, job, start)
		t.Tests[tc.name] = res
		t.TestFindings[tc.name] = fs
		if res.ServerHop > 0 && serverHop == 0 {
			serverHop = res.ServerHop
		}
	}
	if opt.Localise != nil && ctx.Err() == nil {
		opt.logf("%s localise", tag)
		opt.Localise(ctx, &t, serverHop)
	}
	if ctx.Err() != nil {
		t.Error = "interrupted"
	}
	return t
}
