package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func tcpFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.IntFlag{Name: "count", Value: 50, Usage: "connect: connections to open"},
		&ucli.Float64Flag{Name: "rate", Value: 5, Usage: "connect: connections per second"},
		&ucli.IntFlag{Name: "conns", Usage: "simultaneous connections: concurrency cap (default 32), idle ladder width (default 12); at most 40 toward *.betradar.com"},
		&ucli.DurationFlag{Name: "idle-max", Value: 15 * time.Minute, Usage: "idle: longest idle time tried (at least 1s)"},
		&ucli.BoolFlag{Name: "no-verify", Usage: "idle: skip holding one connection past the timeout with TCP keepalive"},
		&ucli.StringFlag{Name: "path", Value: "/v1/users/whoami.xml", Usage: "HTTP request path (data: the large object, default the UOF market descriptions, " + tcpcheck.DefaultDataPath + ")"},
		&ucli.DurationFlag{Name: "stall", Value: 10 * time.Second, Usage: "data: no progress this long is a stall"},
		&ucli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates to trust instead of the system roots"},
		&ucli.BoolFlag{Name: "insecure", Usage: "do not verify the server certificate"},
		&ucli.StringFlag{Name: "token-file", Usage: "file holding the x-access-token (else $UOF_ACCESS_TOKEN); never printed"},
		&ucli.StringFlag{Name: "amqp-vhost", Usage: "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/<bookmaker_id>); without it AMQP connections stop after Connection.Start"},
		&ucli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "IPv4 addresses only"},
		&ucli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "IPv6 addresses only"},
	}
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
			Action:    func(c *ucli.Context) error { return runTCP(c, name) },
		})
	}
	return cmd
}

// tcpRequest is the validated input of `hopcheck tcp`.
type tcpRequest struct {
	test    string
	targets []tcpcheck.Target
	family  int
	opt     tcpcheck.Options
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
	betradar := false
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
		betradar = betradar || tcpcheck.IsBetradar(t.Spec.Host)
		req.targets = append(req.targets, t)
	}
	opt := tcpcheck.Options{Dial: tcpcheck.DefaultDialConfig(), Verify: !c.Bool("no-verify"), Observe: probe.HasRawAccess(),
		HopAddress: tcpcheck.HopAddress}
	opt.Count, opt.Rate = c.Int("count"), c.Float64("rate")
	if opt.Count < 1 {
		return req, usageErr("--count %d must be at least 1", opt.Count)
	}
	if opt.Rate <= 0 {
		return req, usageErr("--rate %v must be positive", opt.Rate)
	}
	if test == "connect" && betradar && opt.Rate > 20 {
		return req, usageErr("--rate %v is too high toward *.betradar.com (at most 20/s)", opt.Rate)
	}
	opt.IdleMax = c.Duration("idle-max")
	if opt.IdleMax < time.Second {
		return req, usageErr("--idle-max %v is below 1s", opt.IdleMax)
	}
	opt.StallAfter = c.Duration("stall")
	if opt.StallAfter < 100*time.Millisecond {
		return req, usageErr("--stall %v is below 100ms", opt.StallAfter)
	}
	opt.Width = c.Int("conns")
	if c.IsSet("conns") && opt.Width < 1 {
		return req, usageErr("--conns %d must be at least 1", opt.Width)
	}
	if !c.IsSet("conns") {
		opt.Width = 32
		if test == "idle" {
			opt.Width = 12
		}
	}
	if betradar && opt.Width > tcpcheck.MaxBetradarConns {
		return req, usageErr("--conns %d: more than %d connections toward *.betradar.com get a client blocked", opt.Width, tcpcheck.MaxBetradarConns)
	}
	if test == "idle" && opt.Width > 40 {
		return req, usageErr("--conns %d: the idle ladder uses at most 40 connections", opt.Width)
	}
	if opt.Width > 1000 {
		return req, usageErr("--conns %d is above 1000", opt.Width)
	}
	path := c.String("path")
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n") {
		return req, usageErr("--path %q must start with / and contain no spaces", path)
	}
	opt.Dial.Path, opt.DataPath = path, tcpcheck.DefaultDataPath
	if test == "data" && c.IsSet("path") {
		opt.Dial.Path, opt.DataPath = "/v1/users/whoami.xml", path
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return req, err
	}
	opt.Dial.Insecure, opt.Dial.RootCAs, opt.Dial.Token, opt.Dial.AMQPVHost = dial.Insecure, dial.RootCAs, dial.Token, dial.AMQPVHost
	req.opt = opt
	return req, nil
}

func runTCP(c *ucli.Context, test string) error {
	req, err := parseTCPRequest(c, test)
	if err != nil {
		return err
	}
	out, err := openOutput(c, "text", "json")
	if err != nil {
		return err
	}
	defer out.abort()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	jobs, err := resolveTCPJobs(ctx, req.targets, req.family)
	if err != nil {
		return err
	}
	if !req.opt.Observe {
		warnf(c, "no CAP_NET_RAW: no packet capture, so the origin of resets stays unknown (weaker evidence). Grant it with: sudo setcap cap_net_raw+ep %s", exePath())
	}
	if isTerminal(c.App.ErrWriter) {
		req.opt.Log = func(format string, a ...any) { warnf(c, format, a...) }
		fmt.Fprintf(c.App.ErrWriter, "tcp %s: %d address(es)...\n", test, len(jobs))
	}
	report := tcpcheck.Run(ctx, test, req.opt, jobs)
	report.Tool = "hopcheck " + Version
	switch out.format {
	case "json":
		err = tcpcheck.WriteJSON(out.w, report)
	default:
		err = tcpcheck.WriteText(out.w, report)
	}
	if err != nil {
		return cantRunErr("write report: %v", err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	failed := 0
	for _, r := range report.Results {
		// A data test whose download was an error page did not run either.
		if r.Error != "" && (len(r.Connections) == 0 || (report.Test == "data" && r.Transfer == nil)) {
			failed++
		}
	}
	if failed == len(report.Results) && failed > 0 {
		return cantRunErr("no test could run: %s", report.Results[0].Error)
	}
	if len(report.Findings) > 0 {
		return &exitError{code: ExitFindings, err: errors.New("findings")}
	}
	return nil
}
