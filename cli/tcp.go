package cli

import (
	"context"
	"os"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func tcpFlags() []ucli.Flag {
	flags := []ucli.Flag{
		&ucli.IntFlag{Name: "count", Value: 50, Usage: "connect: connections to open"},
		&ucli.Float64Flag{Name: "rate", Value: 5, Usage: "connect: connections per second"},
		&ucli.IntFlag{Name: "conns", Usage: "simultaneous connections: concurrency cap (default 32), idle ladder width (default 12); at most 40 toward *.betradar.com"},
		&ucli.DurationFlag{Name: "idle-max", Value: 15 * time.Minute, Usage: "idle: longest idle time tried (at least 1s)"},
		&ucli.BoolFlag{Name: "no-verify", Usage: "idle: skip holding one connection past the timeout with TCP keepalive"},
		&ucli.StringFlag{Name: "path", Value: "/v1/users/whoami.xml", Usage: "HTTP request path (data: the large object, default the UOF market descriptions, " + tcpcheck.DefaultDataPath + ")"},
		&ucli.DurationFlag{Name: "stall", Value: 10 * time.Second, Usage: "data: no progress this long is a stall"},
		&ucli.StringFlag{Name: "evidence", Usage: "write pcap files of the connections behind each finding into `DIR`"},
	}
	flags = append(flags, dialFlags(vhostFlagOnly)...)
	return append(flags, familyFlags()...)
}

func tcpCommand() *ucli.Command {
	cmd := &ucli.Command{
		Name:  "tcp",
		Usage: "connection tests that say who reset the connection: connect, concurrency, data, idle",
	}
	for _, t := range tcpcheck.Tests {
		name := t.Name
		cmd.Subcommands = append(cmd.Subcommands, &ucli.Command{
			Name:      name,
			Usage:     t.Usage,
			ArgsUsage: "TARGET...   (https://host[:port], amqps://host[:5671], tcp://host:port, host:port)",
			Flags:     tcpFlags(),
			Action: func(c *ucli.Context) error {
				return runReport(c, func(c *ucli.Context) (*reportRun[tcpcheck.Report], error) { return parseTCP(c, name) })
			},
		})
	}
	return cmd
}

// tcpOptions are the numbers of `hopcheck tcp TEST` as given, checked by
// Validate against each other and the targets' policy.
type tcpOptions struct {
	Test     string
	Count    int
	Rate     float64
	Conns    int
	ConnsSet bool
	IdleMax  time.Duration
	Stall    time.Duration
	Path     string
	Policy   tcpcheck.Policy
}

// Validate checks the options without touching the network or files.
func (o tcpOptions) Validate() error {
	switch {
	case o.Count < 1:
		return usageErr("--count %d must be at least 1", o.Count)
	case o.Rate <= 0:
		return usageErr("--rate %v must be positive", o.Rate)
	case o.Test == "connect" && o.Policy.MaxConnectRate > 0 && o.Rate > o.Policy.MaxConnectRate:
		return usageErr("--rate %v is too high toward *.betradar.com (at most %v/s)", o.Rate, o.Policy.MaxConnectRate)
	case o.IdleMax < time.Second:
		return usageErr("--idle-max %v is below 1s", o.IdleMax)
	case o.Stall < 100*time.Millisecond:
		return usageErr("--stall %v is below 100ms", o.Stall)
	case o.ConnsSet && o.Conns < 1:
		return usageErr("--conns %d must be at least 1", o.Conns)
	}
	width := o.width()
	switch {
	case o.Policy.Sportradar && width > o.Policy.MaxConns:
		return usageErr("--conns %d: more than %d connections toward *.betradar.com get a client blocked", width, o.Policy.MaxConns)
	case o.Test == "idle" && width > 40:
		return usageErr("--conns %d: the idle ladder uses at most 40 connections", width)
	case width > 1000:
		return usageErr("--conns %d is above 1000", width)
	}
	return checkHTTPPath("path", o.Path)
}

// width is the concurrency cap or idle ladder width: --conns, else the
// test's default.
func (o tcpOptions) width() int {
	switch {
	case o.ConnsSet:
		return o.Conns
	case o.Test == "idle":
		return 12
	}
	return 32
}

// tcpRequest is the validated input of `hopcheck tcp`.
type tcpRequest struct {
	test    string
	targets []tcpcheck.Target
	family  int
	opt     tcpcheck.Options
	// evidence is the --evidence directory ("" none).
	evidence string
}

func parseTCPRequest(c *ucli.Context, test string) (tcpRequest, error) {
	req := tcpRequest{test: test}
	family, err := familyFromFlags(c)
	if err != nil {
		return req, err
	}
	req.family = family
	if c.NArg() == 0 {
		return req, usageErr("tcp %s needs at least one TARGET (https://host, amqps://host, tcp://host:port or host:port)", test)
	}
	for _, arg := range c.Args().Slice() {
		t, err := tcpcheck.ParseTarget(arg)
		if err != nil {
			return req, usageErr("%v", err)
		}
		if test == "data" && t.App == tcpcheck.AppAMQPS {
			// Garbage after the protocol header would make the broker
			// close, which would read as a truncated transfer.
			return req, usageErr("tcp data %s: an AMQP broker sends nothing large before login; test the API host (https://) or a tcp:// echo service", arg)
		}
		req.targets = append(req.targets, t)
	}
	o := tcpOptions{Test: test, Count: c.Int("count"), Rate: c.Float64("rate"), Conns: c.Int("conns"), ConnsSet: c.IsSet("conns"),
		IdleMax: c.Duration("idle-max"), Stall: c.Duration("stall"), Path: c.String("path"), Policy: tcpcheck.PolicyFor(req.targets)}
	if err := o.Validate(); err != nil {
		return req, err
	}
	opt := tcpcheck.Options{Dial: tcpcheck.DefaultDialConfig(), Verify: !c.Bool("no-verify"), Observe: probe.HasRawAccess(),
		HopAddress: tcpcheck.HopAddress, Count: o.Count, Rate: o.Rate, IdleMax: o.IdleMax, StallAfter: o.Stall, Width: o.width()}
	opt.Dial.Path, opt.DataPath = o.Path, tcpcheck.DefaultDataPath
	if test == "data" && c.IsSet("path") {
		opt.Dial.Path, opt.DataPath = "/v1/users/whoami.xml", o.Path
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return req, err
	}
	opt.Dial.Insecure, opt.Dial.RootCAs, opt.Dial.Token, opt.Dial.AMQPVHost = dial.Insecure, dial.RootCAs, dial.Token, dial.AMQPVHost
	opt.Dial.TLSProfile = dial.TLSProfile
	req.opt = opt
	// Directories last: bad input leaves nothing behind.
	if dir := c.String("evidence"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return req, usageErr("--evidence %q: %v", dir, unwrapPathErr(err))
		}
		req.evidence = dir
	}
	return req, nil
}

func parseTCP(c *ucli.Context, test string) (*reportRun[tcpcheck.Report], error) {
	req, err := parseTCPRequest(c, test)
	if err != nil {
		return nil, err
	}
	var jobs []tcpcheck.Job
	return &reportRun[tcpcheck.Report]{
		formats: []string{"text", "json"},
		resolve: resolveTCPJobsInto(&jobs, req.targets, req.family),
		run: func(ctx context.Context) (tcpcheck.Report, error) {
			if !req.opt.Observe {
				warnf(c, "no CAP_NET_RAW: no packet capture, so the origin of resets stays unknown (weaker evidence). Grant it with: sudo setcap cap_net_raw+ep %s", exePath())
			}
			progressOnTerminal(c, &req.opt.Log, "tcp %s: %d address(es)...\n", test, len(jobs))
			report := tcpcheck.Run(ctx, test, req.opt, jobs)
			report.Tool = "hopcheck " + Version
			if req.evidence != "" {
				tcpEvidence(req.evidence, &report, sourceToward)
			}
			return report, nil
		},
		write: jsonOrText(tcpcheck.WriteJSON, tcpcheck.WriteText),
		written: func(report tcpcheck.Report) {
			for _, r := range report.Results {
				if pmtu, link, ok := tcpcheck.CachedPMTU(r); ok {
					warnf(c, "%s %s: the kernel's cached path MTU toward this address was %d (link %d), learned from a frag-needed an earlier packet drew: connections advertised a smaller MSS, so a PMTU black hole toward the client would stay hidden; run again after the cache expires (net.ipv4.route.mtu_expires, 10 min)", r.Target, r.Address, pmtu, link)
				}
			}
		},
		outcome: func(_ context.Context, report tcpcheck.Report) error {
			failed := 0
			for _, r := range report.Results {
				// A data test whose download was an error page did not run either.
				// So did a test whose every AMQP login the broker refused.
				if r.Error != "" && (len(r.Connections) == 0 || (report.Test == "data" && r.Transfer == nil) || r.LoginRefused != nil) {
					failed++
				}
			}
			if failed == len(report.Results) && failed > 0 {
				return cantRunErr("no test could run: %s", report.Results[0].Error)
			}
			if len(report.Findings) > 0 {
				return findingsErr("findings")
			}
			return nil
		},
	}, nil
}
