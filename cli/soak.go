package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/metrics"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func soakCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "soak",
		Usage:     "send real requests for hours like a UOF client (keep-alive pool + fresh connections): failure rates by idle age, phase and reset origin",
		ArgsUsage: "TARGET...   (https://host[:port], amqps://host[:5671], tcp://host:port)",
		Flags: []ucli.Flag{
			&ucli.DurationFlag{Name: "duration", Value: time.Hour, Usage: "how long to soak (at least 10s), e.g. 6h"},
			&ucli.Float64Flag{Name: "rate", Value: soak.DefaultRate, Usage: "requests per second per address (at most 10 toward *.betradar.com)"},
			&ucli.Float64Flag{Name: "fresh-share", Value: soak.DefaultFreshShare, Usage: "share of requests over a new connection, 0..1"},
			&ucli.IntFlag{Name: "pool", Value: soak.DefaultPool, Usage: "pooled keep-alive connections per address (one hot, the rest resting to sample idle ages)"},
			&ucli.StringFlag{Name: "evidence", Usage: "write pcap files of failed flows into `DIR`"},
			&ucli.IntFlag{Name: "evidence-per-kind", Value: 5, Usage: "pcap files per failure kind and address at most"},
			&ucli.StringFlag{Name: "checkpoint", Usage: "rewrite the report so far to `FILE` every minute (default: the -o file)"},
			&ucli.DurationFlag{Name: "checkpoint-every", Value: time.Minute, Hidden: true, Usage: "checkpoint interval (tests)"},
			&ucli.IntFlag{Name: "minutes", Value: soak.DefaultMinuteRing, Usage: "minutes of per-minute time series kept in the report (the last ones)"},
			&ucli.StringFlag{Name: "history", Usage: "also save the report as timestamped JSON into `DIR`"},
			&ucli.IntFlag{Name: "keep", Usage: "with --history: keep the newest N soak reports (0: all)"},
			&ucli.DurationFlag{Name: "keep-age", Usage: "with --history: remove soak reports older than this"},
			&ucli.StringFlag{Name: "metrics-file", Usage: "write node_exporter textfile metrics to `FILE` (*.prom, atomically)"},
			&ucli.StringFlag{Name: "path", Value: "/v1/users/whoami.xml", Usage: "HTTP request path"},
			&ucli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates to trust instead of the system roots"},
			&ucli.BoolFlag{Name: "insecure", Usage: "do not verify the server certificate"},
			&ucli.StringFlag{Name: "tls-profile", Value: string(tcpcheck.DefaultTLSProfile), Usage: "TLS ClientHello to send: java (the UOF Java SDK's, a few hundred bytes), dotnet (the .NET SDK's, the same size), go (Go's own, about 1.5 KB with a post-quantum key share)"},
			&ucli.StringFlag{Name: "token-file", Usage: "file holding the x-access-token (else $UOF_ACCESS_TOKEN); never printed"},
			&ucli.StringFlag{Name: "amqp-vhost", Usage: "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/<bookmaker_id>); without it AMQP connections stop after Connection.Start"},
			&ucli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "IPv4 addresses only"},
			&ucli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "IPv6 addresses only"},
		},
		Action: runSoak,
	}
}

type soakRequest struct {
	targets     []tcpcheck.Target
	family      int
	opt         soak.Options
	betradar    bool
	checkpoint  string
	historyDir  string
	metricsFile string
	keep        history.Retention
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
		req.betradar = req.betradar || tcpcheck.IsBetradar(t.Spec.Host)
		req.targets = append(req.targets, t)
	}
	o := soak.Options{Duration: c.Duration("duration"), Rate: c.Float64("rate"), FreshShare: c.Float64("fresh-share"),
		Pool: c.Int("pool"), MinuteRing: c.Int("minutes"), Observe: probe.HasRawAccess(), CheckpointEvery: c.Duration("checkpoint-every")}
	switch {
	case o.Duration < 10*time.Second:
		return req, usageErr("--duration %v is below 10s", o.Duration)
	case o.Rate <= 0 || o.Rate > 1000:
		return req, usageErr("--rate %v must be above 0 and at most 1000", o.Rate)
	case req.betradar && o.Rate > 10:
		return req, usageErr("--rate %v is too high toward *.betradar.com (at most 10/s per address)", o.Rate)
	case o.FreshShare < 0 || o.FreshShare > 1:
		return req, usageErr("--fresh-share %v must be between 0 and 1", o.FreshShare)
	case o.Pool < 1 || o.Pool > 200:
		return req, usageErr("--pool %d must be between 1 and 200", o.Pool)
	case req.betradar && o.Pool > tcpcheck.MaxBetradarConns-4:
		return req, usageErr("--pool %d: more than %d connections toward *.betradar.com get a client blocked", o.Pool, tcpcheck.MaxBetradarConns)
	case o.CheckpointEvery < time.Second:
		return req, usageErr("--checkpoint-every %v is below 1s", o.CheckpointEvery)
	case o.MinuteRing < 1 || o.MinuteRing > 10080:
		return req, usageErr("--minutes %d must be between 1 and 10080", o.MinuteRing)
	}
	req.perKind = c.Int("evidence-per-kind")
	if req.perKind < 1 || req.perKind > 1000 {
		return req, usageErr("--evidence-per-kind %d must be between 1 and 1000", req.perKind)
	}
	req.evidenceDir = c.String("evidence")
	if req.evidenceDir != "" {
		if st, err := os.Stat(req.evidenceDir); err == nil && !st.IsDir() {
			return req, usageErr("--evidence %q is not a directory", req.evidenceDir)
		}
	}
	req.historyDir = c.String("history")
	req.keep = history.Retention{Keep: c.Int("keep"), MaxAge: c.Duration("keep-age")}
	if req.keep.Keep < 0 {
		return req, usageErr("--keep %d must not be negative", req.keep.Keep)
	}
	if req.keep.MaxAge < 0 {
		return req, usageErr("--keep-age %v must not be negative", req.keep.MaxAge)
	}
	if (c.IsSet("keep") || c.IsSet("keep-age")) && req.historyDir == "" {
		return req, usageErr("--keep and --keep-age need --history DIR")
	}
	if f := c.String("metrics-file"); f != "" {
		if !strings.HasSuffix(f, ".prom") {
			return req, usageErr("--metrics-file %q must end in .prom (node_exporter's textfile collector reads only those)", f)
		}
		req.metricsFile = f
	}
	req.checkpoint = c.String("checkpoint")
	if req.checkpoint == "" {
		if p := flagString(c, "output"); p != "-" {
			req.checkpoint = p
		}
	}
	dial, err := soakDialConfig(c)
	if err != nil {
		return req, err
	}
	o.Dial = dial
	for _, t := range req.targets {
		if t.App == tcpcheck.AppAMQPS && (dial.Token == "" || dial.AMQPVHost == "") {
			// Pooled connections rest 30 s and more on purpose; a broker
			// closes one that never logged in after its handshake timeout,
			// which would read as an idle timeout.
			return req, usageErr("soak %s needs the access token and --amqp-vhost: without login a broker closes AMQP connections after its handshake timeout (RabbitMQ: 10 s)", t.Name())
		}
	}
	req.opt = o
	return req, nil
}

// soakDialConfig reads --path, --ca-file, --insecure and --token-file (or
// $UOF_ACCESS_TOKEN). The token's content is never echoed.
func soakDialConfig(c *ucli.Context) (tcpcheck.DialConfig, error) {
	d, err := dialConfigFromFlags(c)
	if err != nil {
		return d, err
	}
	if p := c.String("path"); p != "" { // serve has no --path
		d.Path = p
		if !strings.HasPrefix(d.Path, "/") || strings.ContainsAny(d.Path, " \r\n") {
			return d, usageErr("--path %q must start with / and contain no spaces", d.Path)
		}
	}
	return d, nil
}

func runSoak(c *ucli.Context) error {
	req, err := parseSoakRequest(c)
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
	if err := soakLoginCheck(ctx, req.opt.Dial, jobs); err != nil {
		return err
	}
	req.opt.MaxConns = 1000
	if req.betradar {
		// Sportradar blocks clients with more than 40 connections: the
		// budget is shared by every address; requests beyond it are
		// skipped (and counted).
		req.opt.MaxConns = tcpcheck.MaxBetradarConns
		n := 0
		for _, j := range jobs {
			if tcpcheck.IsBetradar(j.Target.Spec.Host) {
				n++
			}
		}
		pool, err := betradarPool(req.opt.Pool, n, c.IsSet("pool"))
		if err != nil {
			return err
		}
		if pool != req.opt.Pool {
			warnf(c, "%d addresses toward *.betradar.com: --pool lowered from %d to %d per address to stay below %d connections", n, req.opt.Pool, pool, tcpcheck.MaxBetradarConns)
			req.opt.Pool = pool
		}
	}
	if req.evidenceDir != "" {
		ev, err := soak.NewEvidence(req.evidenceDir, req.perKind)
		if err != nil {
			return usageErr("--evidence %q: %v", req.evidenceDir, err)
		}
		req.opt.Evidence = ev
	}
	var warnings []string
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
	if isTerminal(c.App.ErrWriter) {
		req.opt.Log = func(format string, a ...any) { warnf(c, format, a...) }
		fmt.Fprintf(c.App.ErrWriter, "soak: %d address(es) for %v at %.1f req/s each...\n", len(jobs), req.opt.Duration, req.opt.Rate)
	}
	defer tuneSoakGC()()
	rep := soak.Run(ctx, req.opt, jobs)
	rep.Tool, rep.Warnings = "hopcheck "+Version, warnings
	if ev := req.opt.Evidence; ev != nil && ev.Err() != nil {
		warnf(c, "%v", ev.Err())
	}
	switch out.format {
	case "json":
		err = soak.WriteJSON(out.w, rep)
	default:
		err = soak.WriteText(out.w, rep)
	}
	if err != nil {
		return cantRunErr("write report: %v", err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	if req.checkpoint != "" && req.checkpoint != flagString(c, "output") {
		var buf bytes.Buffer
		if err := soak.WriteJSON(&buf, rep); err == nil {
			if err := history.WriteAtomic(req.checkpoint, buf.Bytes(), 0o644); err != nil {
				warnf(c, "checkpoint: %v", err)
			}
		}
	}
	if req.historyDir != "" {
		if _, err := history.Save(req.historyDir, "soak", rep, time.Now(), req.keep); err != nil {
			warnf(c, "%v", err)
		}
	}
	if req.metricsFile != "" {
		if err := metrics.WriteSoakFile(req.metricsFile, rep); err != nil {
			warnf(c, "--metrics-file: %v", err)
		}
	}
	total := 0
	for _, t := range rep.Targets {
		total += t.Requests
	}
	if total == 0 && ctx.Err() == nil {
		return cantRunErr("no request could be sent toward any address")
	}
	if len(rep.Findings) > 0 {
		return &exitError{code: ExitFindings, err: errors.New("findings")}
	}
	return nil
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

// betradarPool fits the pool per address to the connection budget toward
// *.betradar.com (4 slots kept for fresh connections). CDN names resolve
// to many addresses, so the default pool is shared out; a pool the user
// chose is never changed, only refused.
func betradarPool(pool, addrs int, explicit bool) (int, error) {
	budget := tcpcheck.MaxBetradarConns - 4
	if addrs*pool <= budget {
		return pool, nil
	}
	if fit := budget / max(addrs, 1); !explicit && fit >= 2 {
		return fit, nil
	}
	return 0, usageErr("--pool %d × %d addresses toward *.betradar.com exceeds %d connections; lower --pool or name fewer targets", pool, addrs, tcpcheck.MaxBetradarConns)
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
