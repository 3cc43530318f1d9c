package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

func traceCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "trace",
		Usage:     "show every hop toward a service (ICMP, UDP or TCP to the service port)",
		ArgsUsage: "TARGET...   (host, IP, host:port, https://host, amqps://host:5671)",
		Flags: append([]ucli.Flag{
			&ucli.StringFlag{Name: "protocol", Aliases: []string{"P"}, Value: "tcp", Usage: "icmp|udp|tcp|all (all: the three side by side)"},
			&ucli.IntFlag{Name: "queries", Aliases: []string{"q"}, Value: 3, Usage: "probes per hop (per flow and round)"},
			&ucli.IntFlag{Name: "rounds", Value: 1, Usage: "repeat the trace N times (mtr-like cycles)"},
			&ucli.DurationFlag{Name: "interval", Value: time.Second, Usage: "pause between rounds"},
			&ucli.IntFlag{Name: "max-hops", Aliases: []string{"m"}, Value: 30, Usage: "largest TTL probed (1-255)"},
			&ucli.IntFlag{Name: "first-hop", Aliases: []string{"f"}, Value: 1, Usage: "first TTL probed"},
			&ucli.DurationFlag{Name: "timeout", Aliases: []string{"w"}, Value: 3 * time.Second, Usage: "longest wait for one probe"},
			&ucli.IntFlag{Name: "flows", Value: 1, Usage: "Paris flows (distinct 5-tuples) to trace; lists every ECMP responder per hop"},
			privilegeFlag(),
			&ucli.BoolFlag{Name: "numeric", Aliases: []string{"n"}, Usage: "no reverse DNS"},
			&ucli.BoolFlag{Name: "asn", Usage: "look up AS numbers (Team Cymru DNS)"},
		}, familyFlags()...),
		Action: func(c *ucli.Context) error { return runReport(c, parseTrace) },
	}
}

// traceRequest is the validated input of `hopcheck trace`.
type traceRequest struct {
	protocols []probe.Protocol
	family    int
	cfg       trace.Config
	privilege string
	specs     []trace.Spec
}

func parseTraceRequest(c *ucli.Context) (traceRequest, error) {
	var req traceRequest
	switch p := c.String("protocol"); p {
	case "all":
		req.protocols = []probe.Protocol{probe.ICMP, probe.UDP, probe.TCP}
	default:
		proto, ok := probe.ParseProtocol(p)
		if !ok {
			return req, usageErr("unknown --protocol %q (want icmp, udp, tcp or all)", p)
		}
		req.protocols = []probe.Protocol{proto}
	}
	family, err := familyFromFlags(c)
	if err != nil {
		return req, err
	}
	req.family = family
	if req.privilege, err = privilegeFromFlags(c); err != nil {
		return req, err
	}
	cfg := trace.DefaultConfig()
	cfg.Queries = c.Int("queries")
	cfg.Rounds = c.Int("rounds")
	cfg.Interval = c.Duration("interval")
	cfg.MaxHops = c.Int("max-hops")
	cfg.FirstHop = c.Int("first-hop")
	cfg.Timeout = c.Duration("timeout")
	cfg.Flows = c.Int("flows")
	if cfg.Interval < 0 {
		return req, usageErr("--interval %s must not be negative", cfg.Interval)
	}
	if err := cfg.Validate(); err != nil {
		return req, usageErr("--%v", err)
	}
	req.cfg = cfg
	if c.NArg() == 0 {
		return req, usageErr("trace needs at least one TARGET (host, IP, host:port or URL)")
	}
	for _, arg := range c.Args().Slice() {
		spec, err := trace.ParseTarget(arg, 443)
		if err != nil {
			return req, usageErr("%v", err)
		}
		req.specs = append(req.specs, spec)
	}
	return req, nil
}

func parseTrace(c *ucli.Context) (*reportRun[trace.Report], error) {
	req, err := parseTraceRequest(c)
	if err != nil {
		return nil, err
	}
	var jobs []trace.Job
	return &reportRun[trace.Report]{
		formats: []string{"text", "json"},
		resolve: func(ctx context.Context) (err error) {
			jobs, err = resolveJobs(ctx, req)
			return err
		},
		run: func(ctx context.Context) (trace.Report, error) { return traceRun(ctx, c, req, jobs) },
		write: func(out *output, report trace.Report) error {
			if out.format == "json" {
				return trace.WriteJSON(out.w, report)
			}
			return trace.WriteText(out.w, report, trace.TextOptions{SideBySide: len(req.protocols) > 1})
		},
		outcome: func(_ context.Context, report trace.Report) error {
			failed := 0
			for _, t := range report.Traces {
				if t.Error != "" && len(t.Hops) == 0 {
					failed++
				}
			}
			if failed == len(report.Traces) {
				return cantRunErr("no trace could run: %s", report.Traces[0].Error)
			}
			return nil
		},
	}, nil
}

// traceRun is the run step of `hopcheck trace`: the traces, with live
// progress on a terminal, then names and AS numbers.
func traceRun(ctx context.Context, c *ucli.Context, req traceRequest, jobs []trace.Job) (trace.Report, error) {
	if req.privilege == "auto" && !probe.HasRawAccess() {
		warnf(c, "no CAP_NET_RAW: using unprivileged probes (no reply TTL/IP ID of SYN-ACKs, no Paris flows for TCP; ICMP only where net.ipv4.ping_group_range allows). Grant it with: sudo setcap cap_net_raw+ep %s", exePath())
	}
	if req.privilege == "raw" && !probe.HasRawAccess() {
		return trace.Report{}, cantRunErr("--privilege raw: %v", probe.ErrNoRawAccess)
	}
	started := time.Now()
	opt := trace.Options{Config: req.cfg, Privilege: req.privilege, NewProber: probe.NewProber}
	var live *liveView
	switch {
	case isTerminal(c.App.ErrWriter) && req.cfg.Rounds > 1:
		// Several rounds: an mtr-like table redrawn after each round.
		fmt.Fprintf(c.App.ErrWriter, "tracing %d path(s)...\n", len(jobs))
		live = newLiveView(c.App.ErrWriter, len(jobs), req.cfg.Rounds, trace.TextOptions{SideBySide: len(req.protocols) > 1})
		opt.OnRound = live.update
	case isTerminal(c.App.ErrWriter):
		// Live progress for humans; pipes and cron get only the report.
		fmt.Fprintf(c.App.ErrWriter, "tracing %d path(s)...\n", len(jobs))
		var mu sync.Mutex
		done := 0
		opt.OnTrace = func(t trace.Trace) {
			mu.Lock()
			defer mu.Unlock()
			done++
			state := "not reached"
			if t.Reached {
				state = fmt.Sprintf("reached at hop %d", t.ReachedTTL)
			}
			fmt.Fprintf(c.App.ErrWriter, "  [%d/%d] %s %s: %s\n", done, len(jobs), t.Target.Protocol, t.Target.Address, state)
		}
	}
	traces := trace.TraceAll(ctx, jobs, opt)
	if live != nil {
		live.clear()
	}
	report := trace.Report{SchemaVersion: trace.SchemaVersion, Tool: "hopcheck " + Version,
		StartedAt: started.UTC(), Traces: traces, Incomplete: ctx.Err() != nil}
	if !c.Bool("numeric") || c.Bool("asn") {
		en := trace.NewEnricher(net.DefaultResolver, trace.EnrichOptions{ReverseDNS: !c.Bool("numeric"),
			ASN: c.Bool("asn"), Timeout: time.Second})
		ectx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		en.Enrich(ectx, report.Traces)
		cancel()
	}
	report.DurationS = time.Since(started).Seconds()
	return report, nil
}

// resolveJobs resolves every target to all its addresses; an unresolvable
// name is a usage error naming it.
func resolveJobs(ctx context.Context, req traceRequest) ([]trace.Job, error) {
	var jobs []trace.Job
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, spec := range req.specs {
		addrs, err := trace.ResolveAll(rctx, net.DefaultResolver, spec, req.family)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		for _, a := range addrs {
			for _, p := range req.protocols {
				jobs = append(jobs, trace.Job{Host: spec.Host, Dest: trace.Destination{Addr: a, Protocol: p, Port: uint16(spec.Port)}})
			}
		}
	}
	return jobs, nil
}

func exePath() string {
	p, err := os.Executable()
	if err != nil {
		return "hopcheck"
	}
	return p
}
