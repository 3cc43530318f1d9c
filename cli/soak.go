package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime/debug"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/metrics"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func soakCommand() *ucli.Command {
	flags := []ucli.Flag{
		&ucli.DurationFlag{Name: "duration", Value: time.Hour, Usage: "how long to soak (at least 10s), e.g. 6h"},
		&ucli.Float64Flag{Name: "rate", Value: soak.DefaultRate, Usage: "requests per second per address (at most 10 toward *.betradar.com)"},
		&ucli.Float64Flag{Name: "fresh-share", Value: soak.DefaultFreshShare, Usage: "share of requests over a new connection, 0..1"},
		&ucli.IntFlag{Name: "pool", Value: soak.DefaultPool, Usage: "pooled keep-alive connections per address (one hot, the rest resting to sample idle ages)"},
		&ucli.StringFlag{Name: "evidence", Usage: "write pcap files of failed flows into `DIR`"},
		&ucli.IntFlag{Name: "evidence-per-kind", Value: 5, Usage: "pcap files per failure kind and address at most"},
		&ucli.StringFlag{Name: "checkpoint", Usage: "rewrite the report so far to `FILE` every minute (default: the -o file)"},
		&ucli.DurationFlag{Name: "checkpoint-every", Value: time.Minute, Hidden: true, Usage: "checkpoint interval (tests)"},
		&ucli.IntFlag{Name: "minutes", Value: soak.DefaultMinuteRing, Usage: "minutes of per-minute time series kept in the report (the last ones)"},
	}
	flags = append(flags, storeFlags("soak")...)
	flags = append(flags, &ucli.StringFlag{Name: "path", Value: "/v1/users/whoami.xml", Usage: "HTTP request path"})
	flags = append(flags, dialFlags(vhostFlagOnly)...)
	flags = append(flags, familyFlags()...)
	return &ucli.Command{
		Name:      "soak",
		Usage:     "send real requests for hours like a UOF client (keep-alive pool + fresh connections): failure rates by idle age, phase and reset origin",
		ArgsUsage: "TARGET...   (https://host[:port], amqps://host[:5671], tcp://host:port)",
		Flags:     flags,
		Action:    func(c *ucli.Context) error { return runReport(c, parseSoak) },
	}
}

// soakOptions are the numbers of `hopcheck soak` as given, checked by
// Validate against each other and the targets' policy.
type soakOptions struct {
	Duration        time.Duration
	Rate            float64
	FreshShare      float64
	Pool            int
	CheckpointEvery time.Duration
	MinuteRing      int
	PerKind         int
	Path            string
	Policy          tcpcheck.Policy
}

// Validate checks the options without touching the network or files.
func (o soakOptions) Validate() error {
	switch {
	case o.Duration < 10*time.Second:
		return usageErr("--duration %v is below 10s", o.Duration)
	case o.Rate <= 0 || o.Rate > 1000:
		return usageErr("--rate %v must be above 0 and at most 1000", o.Rate)
	case o.Rate > o.Policy.MaxRequestRate:
		return usageErr("--rate %v is too high toward *.betradar.com (at most %v/s per address)", o.Rate, o.Policy.MaxRequestRate)
	case o.FreshShare < 0 || o.FreshShare > 1:
		return usageErr("--fresh-share %v must be between 0 and 1", o.FreshShare)
	case o.Pool < 1 || o.Pool > 200:
		return usageErr("--pool %d must be between 1 and 200", o.Pool)
	case o.Policy.Sportradar && o.Pool > o.Policy.MaxConns-o.Policy.FreshReserve:
		return usageErr("--pool %d: more than %d connections toward *.betradar.com get a client blocked", o.Pool, o.Policy.MaxConns)
	case o.CheckpointEvery < time.Second:
		return usageErr("--checkpoint-every %v is below 1s", o.CheckpointEvery)
	case o.MinuteRing < 1 || o.MinuteRing > 10080:
		return usageErr("--minutes %d must be between 1 and 10080", o.MinuteRing)
	case o.PerKind < 1 || o.PerKind > 1000:
		return usageErr("--evidence-per-kind %d must be between 1 and 1000", o.PerKind)
	}
	return checkHTTPPath("path", o.Path)
}

type soakRequest struct {
	targets     []tcpcheck.Target
	family      int
	opt         soak.Options
	policy      tcpcheck.Policy
	checkpoint  string
	store       storeOptions
	evidenceDir string
	perKind     int
}

func parseSoakRequest(c *ucli.Context) (soakRequest, error) {
	var req soakRequest
	family, err := familyFromFlags(c)
	if err != nil {
		return req, err
	}
	req.family = family
	if c.NArg() == 0 {
		return req, usageErr("soak needs at least one TARGET (https://host, amqps://host or tcp://host:port)")
	}
	for _, arg := range c.Args().Slice() {
		t, err := tcpcheck.ParseTarget(arg)
		if err != nil {
			return req, usageErr("%v", err)
		}
		req.targets = append(req.targets, t)
	}
	req.policy = tcpcheck.PolicyFor(req.targets)
	o := soakOptions{Duration: c.Duration("duration"), Rate: c.Float64("rate"), FreshShare: c.Float64("fresh-share"),
		Pool: c.Int("pool"), CheckpointEvery: c.Duration("checkpoint-every"), MinuteRing: c.Int("minutes"),
		PerKind: c.Int("evidence-per-kind"), Path: c.String("path"), Policy: req.policy}
	if err := o.Validate(); err != nil {
		return req, err
	}
	req.opt = soak.Options{Duration: o.Duration, Rate: o.Rate, FreshShare: o.FreshShare, Pool: o.Pool, MinuteRing: o.MinuteRing,
		Observe: probe.HasRawAccess(), CheckpointEvery: o.CheckpointEvery}
	req.perKind = o.PerKind
	req.evidenceDir = c.String("evidence")
	if req.evidenceDir != "" {
		if st, err := os.Stat(req.evidenceDir); err == nil && !st.IsDir() {
			return req, usageErr("--evidence %q is not a directory", req.evidenceDir)
		}
	}
	req.store = storeOptions{History: c.String("history"), Keep: history.Retention{Keep: c.Int("keep"), MaxAge: c.Duration("keep-age")},
		KeepSet: c.IsSet("keep") || c.IsSet("keep-age"), MetricsFile: c.String("metrics-file")}
	if err := req.store.Validate(); err != nil {
		return req, err
	}
	req.checkpoint = c.String("checkpoint")
	if req.checkpoint == "" {
		if p := flagString(c, "output"); p != "-" {
			req.checkpoint = p
		}
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return req, err
	}
	dial.Path = o.Path
	req.opt.Dial = dial
	for _, t := range req.targets {
		if t.App == tcpcheck.AppAMQPS && (dial.Token == "" || dial.AMQPVHost == "") {
			// Pooled connections rest 30 s and more on purpose; a broker
			// closes one that never logged in after its handshake timeout,
			// which would read as an idle timeout.
			return req, usageErr("soak %s needs the access token and --amqp-vhost: without login a broker closes AMQP connections after its handshake timeout (RabbitMQ: 10 s)", t.Name())
		}
	}
	// Directories last: bad input leaves nothing behind.
	if err := req.store.prepare(); err != nil {
		return req, err
	}
	return req, nil
}

func parseSoak(c *ucli.Context) (*reportRun[soak.Report], error) {
	req, err := parseSoakRequest(c)
	if err != nil {
		return nil, err
	}
	var jobs []tcpcheck.Job
	var warnings []string
	return &reportRun[soak.Report]{
		formats: []string{"text", "json"},
		resolve: resolveTCPJobsInto(&jobs, req.targets, req.family),
		run: func(ctx context.Context) (soak.Report, error) {
			if err := soakLoginCheck(ctx, req.opt.Dial, jobs); err != nil {
				return soak.Report{}, err
			}
			var err error
			warnings, err = prepareSoak(c, &req, jobs)
			if err != nil {
				return soak.Report{}, err
			}
			progressOnTerminal(c, &req.opt.Log, "soak: %d address(es) for %v at %.1f req/s each...\n", len(jobs), req.opt.Duration, req.opt.Rate)
			defer tuneSoakGC()()
			rep := soak.Run(ctx, req.opt, jobs)
			rep.Tool, rep.Warnings = "hopcheck "+Version, warnings
			if ev := req.opt.Evidence; ev != nil && ev.Err() != nil {
				warnf(c, "%v", ev.Err())
			}
			return rep, nil
		},
		write: jsonOrText(soak.WriteJSON, soak.WriteText),
		written: func(rep soak.Report) {
			if req.checkpoint != "" && req.checkpoint != flagString(c, "output") {
				var buf bytes.Buffer
				if err := soak.WriteJSON(&buf, rep); err == nil {
					if err := history.WriteAtomic(req.checkpoint, buf.Bytes(), 0o644); err != nil {
						warnf(c, "checkpoint: %v", err)
					}
				}
			}
			req.store.save(c, "soak", rep, func(path string) error { return metrics.WriteSoakFile(path, rep) })
		},
		outcome: func(ctx context.Context, rep soak.Report) error {
			total := 0
			for _, t := range rep.Targets {
				total += t.Requests
			}
			if total == 0 && ctx.Err() == nil {
				return cantRunErr("no request could be sent toward any address")
			}
			if len(rep.Findings) > 0 {
				return findingsErr("findings")
			}
			return nil
		},
	}, nil
}

// prepareSoak fits the pools to the connection budget, opens the evidence
// store, installs the checkpoint and returns the report's warnings.
func prepareSoak(c *ucli.Context, req *soakRequest, jobs []tcpcheck.Job) ([]string, error) {
	req.opt.MaxConns = req.policy.MaxConns
	if req.policy.Sportradar {
		// Sportradar blocks clients with more than 40 connections: the
		// budget is shared by every address; requests beyond it are
		// skipped (and counted).
		n := 0
		for _, j := range jobs {
			if tcpcheck.IsBetradar(j.Target.Spec.Host) {
				n++
			}
		}
		pool, err := req.policy.FitSoakPool(req.opt.Pool, n, c.IsSet("pool"))
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if pool != req.opt.Pool {
			warnf(c, "%d addresses toward *.betradar.com: --pool lowered from %d to %d per address to stay below %d connections", n, req.opt.Pool, pool, req.policy.MaxConns)
			req.opt.Pool = pool
		}
	}
	if req.evidenceDir != "" {
		ev, err := soak.NewEvidence(req.evidenceDir, req.perKind)
		if err != nil {
			return nil, usageErr("--evidence %q: %v", req.evidenceDir, err)
		}
		req.opt.Evidence = ev
	}
	var warnings []string
	if req.evidenceDir != "" && req.opt.Observe && len(jobs) > 0 {
		warnings = append(warnings, evidenceCaptureCheck(c.App.ErrWriter, flagString(c, "format"), req.evidenceDir,
			jobs[0].Target.Endpoint(jobs[0].Addr), captureErrToward)...)
	}
	if !req.opt.Observe {
		w := "no CAP_NET_RAW: no packet capture, so the origin and hop of resets stay unknown. Grant it with: sudo setcap cap_net_raw+ep " + exePath()
		warnf(c, "%s", w)
		warnings = append(warnings, w)
	}
	if req.opt.Dial.Token == "" {
		for _, t := range req.targets {
			if t.App == tcpcheck.AppHTTPS {
				w := "no access token ($UOF_ACCESS_TOKEN or --token-file): every request is answered with an error status; the connections are still measured, but run it with the token, as a UOF client does"
				warnf(c, "%s", w)
				warnings = append(warnings, w)
				break
			}
		}
	}
	if req.checkpoint != "" {
		path := req.checkpoint
		req.opt.Checkpoint = func(r soak.Report) {
			r.Tool, r.Warnings = "hopcheck "+Version, warnings
			var buf bytes.Buffer
			if err := soak.WriteJSON(&buf, r); err == nil {
				if err := history.WriteAtomic(path, buf.Bytes(), 0o644); err != nil {
					warnf(c, "checkpoint: %v", err)
				}
			}
		}
	}
	return warnings, nil
}

// tuneSoakGC lowers the garbage collector's target for a soak and returns
// the undo. A soak keeps under 1 MB live and allocates about 10 kB per
// request, so with the default GOGC=100 the heap goal is set by the
// binary's ~5 MB of globals: the collector runs about once a minute and
// resident memory creeps up over its first cycles (+18 % between minute 1
// and 10 in BenchmarkLabSoakRSS). At 25 it runs every ~10 s for about
// 2 ms and memory is flat from the first minute. An explicit GOGC in the
// environment wins.
func tuneSoakGC() (undo func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(25)
	return func() { debug.SetGCPercent(old) }
}

// soakLoginCheck logs in once to each amqps:// address before the soak: a
// broker that refuses the login (wrong token or vhost) would refuse every
// one of the soak's requests, hours of refused logins toward the real
// broker. Exit 3 naming the broker's reply; other failures are left to
// the soak to measure.
func soakLoginCheck(ctx context.Context, d tcpcheck.DialConfig, jobs []tcpcheck.Job) error {
	for _, j := range jobs {
		if j.Target.App != tcpcheck.AppAMQPS {
			continue
		}
		cfg := d
		cfg.App, cfg.ServerName = j.Target.App, j.Target.ServerName()
		dr := tcpcheck.Dial(ctx, cfg, j.Target.Endpoint(j.Addr))
		if dr.Conn != nil {
			dr.Conn.Close()
		}
		var le *tcpcheck.AMQPLoginError
		if errors.As(dr.Err, &le) {
			return cantRunErr("%s %s: %s", j.Target.Name(), j.Addr, le.Reply().Explain())
		}
	}
	return nil
}
