package diagnose

import (
	"context"
	"fmt"
	"net/netip"
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
	"quick": {Name: "quick", IdleMax: 60 * time.Second, ConnectCount: 20, ConnectRate: 10, ConcurrencyCap: 24, IdleWidth: 12, TraceQueries: 3},
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

// Run diagnoses every job and returns the report with its findings. When
// ctx is cancelled it returns what was measured, marked incomplete.
//
// Phases are ordered so that they do not distort each other: traces run
// concurrently for all addresses; connect, concurrency and data tests run
// one address at a time (the addresses of one name are often one server,
// whose connection limit they measure); idle ladders, which take long but
// hold few connections, run side by side within a connection budget;
// localisation last.
func Run(ctx context.Context, opt Options, jobs []tcpcheck.Job) Report {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	rep := Report{SchemaVersion: SchemaVersion, StartedAt: start.UTC(), Profile: opt.Profile.Name, TLSProfile: opt.TCP.Dial.TLSProfile.OrDefault(),
		Targets: make([]TargetReport, len(jobs)), Findings: []Finding{}}
	for i, job := range jobs {
		rep.Targets[i] = TargetReport{Target: job.Target.Name(), Host: job.Target.Spec.Host, Address: job.Addr.String(),
			Port: job.Target.Spec.Port, App: string(job.Target.App), Traces: []trace.Trace{},
			Tests: map[string]tcpcheck.Result{}, TestFindings: map[string][]tcpcheck.Finding{}}
	}
	if login := learnAMQPVHost(ctx, &opt, jobs); login != nil {
		rep.AMQP = login
		for i := range rep.Targets {
			if jobs[i].Target.App == tcpcheck.AppAMQPS {
				rep.Targets[i].amqpVHost = opt.TCP.Dial.AMQPVHost
			}
		}
		if login.Error != "" {
			rep.Warnings = append(rep.Warnings, "AMQP login: could not learn the virtual host from whoami.xml ("+login.Error+
				"): AMQP connections stop after Connection.Start, and the broker's handshake timeout bounds their idle test; give --amqp-vhost")
		}
	}
	budget, width := connectionBudget(opt.Profile, jobs)
	opt.Profile.IdleWidth = width
	opt.Profile.ConcurrencyCap = min(opt.Profile.ConcurrencyCap, budget)

	forEach(jobs, len(jobs), func(i int) { runTraces(ctx, opt, &rep.Targets[i]) })
	for i, job := range jobs {
		for _, name := range []string{"connect", "concurrency", "data"} {
			runTest(ctx, opt, name, job, &rep.Targets[i], start)
		}
	}
	// A connection limit found by the concurrency test bounds the idle
	// ladders too: beyond it the server's resets would pass for expiry.
	for _, t := range rep.Targets {
		for _, f := range t.TestFindings["concurrency"] {
			if f.Limit > 0 {
				budget = max(2, min(budget, f.Limit-2))
			}
		}
	}
	opt.Profile.IdleWidth = min(opt.Profile.IdleWidth, budget)
	forEach(jobs, budget/opt.Profile.IdleWidth, func(i int) { runTest(ctx, opt, "idle", jobs[i], &rep.Targets[i], start) })
	if opt.Localise != nil {
		forEach(jobs, len(jobs), func(i int) {
			if ctx.Err() == nil {
				opt.logf("[%s] localise", jobs[i].Addr)
				opt.Localise(ctx, &rep.Targets[i], serverHop(rep.Targets[i]))
			}
		})
	}
	for i := range rep.Targets {
		if ctx.Err() != nil {
			rep.Targets[i].Error = "interrupted"
		}
		for _, tr := range rep.Targets[i].Traces {
			if tr.Privilege != "" {
				rep.Privilege = tr.Privilege
			}
		}
	}
	for _, t := range rep.Targets {
		for _, name := range tcpcheck.TestNames() {
			if pmtu, link, ok := tcpcheck.CachedPMTU(t.Tests[name]); ok {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s %s: the kernel's cached path MTU toward this address was %d (link %d), learned from a frag-needed an earlier packet drew: connections advertised a smaller MSS, so a PMTU black hole toward the client would stay hidden; run again after the cache expires (net.ipv4.route.mtu_expires, 10 min)", t.Target, t.Address, pmtu, link))
				break
			}
		}
		if t.loginRefused != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s %s: %s; its connection tests did not run", t.Target, t.Address, t.Error))
			if rep.AMQP != nil && rep.AMQP.Refused == nil {
				rep.AMQP.Refused = t.loginRefused
			}
		}
		if idle, ok := t.Tests["idle"]; ok && idle.Idle != nil && idle.Idle.Cause != "" {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s %s: AMQP idle not tested past %.0fs: %s", t.Target, t.Address, idle.Idle.BracketS[1], idle.Idle.Note))
		}
	}
	rep.Findings = Diagnose(rep.Targets)
	rep.Incomplete = ctx.Err() != nil
	rep.DurationS = now().Sub(start).Seconds()
	return rep
}

// learnAMQPVHost decides how AMQP connections log in: with the token and
// --amqp-vhost as given, or, without --amqp-vhost, with the virtual_host
// that whoami.xml names, asked of the first https:// target of the run (a
// UOF environment pairs the API and the feed host; the SDKs learn their
// vhost the same way). It sets opt.TCP.Dial.AMQPVHost; nil when no AMQP
// target is tested with a token.
func learnAMQPVHost(ctx context.Context, opt *Options, jobs []tcpcheck.Job) *AMQPLogin {
	d := opt.TCP.Dial
	var https *tcpcheck.Job
	amqp := false
	for i := range jobs {
		switch jobs[i].Target.App {
		case tcpcheck.AppAMQPS:
			amqp = true
		case tcpcheck.AppHTTPS:
			if https == nil {
				https = &jobs[i]
			}
		}
	}
	if !amqp || d.Token == "" {
		return nil
	}
	if d.AMQPVHost != "" {
		return &AMQPLogin{VHost: d.AMQPVHost, Source: "flag"}
	}
	if https == nil {
		return &AMQPLogin{Source: "none", Error: "no https:// target in the run to ask whoami.xml"}
	}
	opt.logf("[%s] whoami.xml: the AMQP virtual host", https.Addr)
	vhost, err := tcpcheck.FetchAMQPVHost(ctx, d, *https)
	if err != nil {
		return &AMQPLogin{Source: "none", From: https.Addr.String(), Error: err.Error()}
	}
	opt.TCP.Dial.AMQPVHost = vhost
	return &AMQPLogin{VHost: vhost, Source: "whoami", From: https.Addr.String()}
}

// connectionBudget is how many connections a run may hold at once and the
// idle ladder width of each address (tcpcheck.Policy: toward
// *.betradar.com the budget stays below Sportradar's 40).
func connectionBudget(p Profile, jobs []tcpcheck.Job) (budget, width int) {
	budget = tcpcheck.PolicyForJobs(jobs).RunConns
	width = max(2, min(p.IdleWidth, budget))
	return budget, width
}

// forEach runs fn for every job index with at most n at once.
func forEach(jobs []tcpcheck.Job, n int, fn func(i int)) {
	sem := make(chan struct{}, max(1, n))
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

func (o Options) logf(format string, a ...any) {
	if o.Log != nil {
		o.Log(format, a...)
	}
}

// runTraces traces toward the address with icmp, udp and tcp to the
// service port, side by side.
func runTraces(ctx context.Context, opt Options, t *TargetReport) {
	opt.logf("[%s] trace icmp, udp, tcp/%d", t.Address, t.Port)
	tcfg := trace.DefaultConfig()
	tcfg.Queries = opt.Profile.TraceQueries
	addr, err := netip.ParseAddr(t.Address)
	if err != nil {
		t.Error = fmt.Sprintf("bad address %q", t.Address)
		return
	}
	var tjobs []trace.Job
	for _, p := range []probe.Protocol{probe.ICMP, probe.UDP, probe.TCP} {
		tjobs = append(tjobs, trace.Job{Host: t.Host, Dest: trace.Destination{Addr: addr, Protocol: p, Port: uint16(t.Port)}})
	}
	t.Traces = trace.TraceAll(ctx, tjobs, trace.Options{Config: tcfg, Privilege: opt.Privilege, NewProber: opt.NewProber})
}

// runTest runs one connection test toward the address.
func runTest(ctx context.Context, opt Options, name string, job tcpcheck.Job, t *TargetReport, start time.Time) {
	if ctx.Err() != nil {
		return
	}
	if name == "data" && job.Target.App == tcpcheck.AppAMQPS {
		return // an AMQP broker sends nothing large before login
	}
	o := opt.TCP
	var run func(context.Context, tcpcheck.Options, tcpcheck.Job, time.Time) (tcpcheck.Result, []tcpcheck.Finding)
	switch name {
	case "connect":
		run, o.Count, o.Rate = tcpcheck.RunConnect, opt.Profile.ConnectCount, opt.Profile.ConnectRate
	case "concurrency":
		run, o.Width = tcpcheck.RunConcurrency, opt.Profile.ConcurrencyCap
	case "data":
		run = tcpcheck.RunData
	case "idle":
		run, o.Width, o.IdleMax = tcpcheck.RunIdle, opt.Profile.IdleWidth, opt.Profile.IdleMax
	default:
		return
	}
	if t.loginRefused != nil {
		return // the broker refused this address's login already: no more refused logins
	}
	opt.logf("[%s] %s", job.Addr, name)
	res, fs := run(ctx, o, job, start)
	res = tcpcheck.CheckLoginRefused(res)
	t.Tests[name] = res
	t.TestFindings[name] = fs
	if res.LoginRefused != nil {
		t.loginRefused = res.LoginRefused
		t.Error = res.LoginRefused.Explain()
	}
}

// serverHop is the hop at which the server answered (0 unknown).
func serverHop(t TargetReport) int {
	hop := 0
	for _, tr := range t.Traces {
		if tr.Reached && (hop == 0 || tr.ReachedTTL < hop) {
			hop = tr.ReachedTTL
		}
	}
	if hop == 0 {
		for _, r := range t.Tests {
			if r.ServerHop > 0 {
				return r.ServerHop
			}
		}
	}
	return hop
}
