package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/metrics"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/report"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// uofEnvironments are the UOF endpoint sets (shared/reference/field-facts.md:
// the SDKs' EnvironmentManager).
var uofEnvironments = map[string][]string{
	"production":         {"https://api.betradar.com", "amqps://mq.betradar.com:5671"},
	"integration":        {"https://stgapi.betradar.com", "amqps://stgmq.betradar.com:5671"},
	"global":             {"https://global.api.betradar.com", "amqps://global.mq.betradar.com:5671"},
	"global-integration": {"https://global.stgapi.betradar.com", "amqps://global.stgmq.betradar.com:5671"},
	"replay":             {"https://api.betradar.com", "amqps://replaymq.betradar.com:5671"},
}

// defaultTargets: the UOF production hosts, regional and global.
var defaultTargets = []string{"https://api.betradar.com", "https://global.api.betradar.com",
	"amqps://mq.betradar.com:5671", "amqps://global.mq.betradar.com:5671"}

func envNames() string {
	var names []string
	for n := range uofEnvironments {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func runCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "run",
		Usage: "the whole diagnosis: traces, connection tests, idle ladder, localisation; findings and the hop report",
		Description: "Diagnoses every address of every target: which hop (or the server) resets or drops connections,\n" +
			"in which phase, after how long idle, with evidence and the setting that fixes it.\n" +
			"Default targets: the UOF production hosts (api, global.api, mq, global.mq .betradar.com).",
		Flags: []ucli.Flag{
			&ucli.StringSliceFlag{Name: "target", Aliases: []string{"t"}, Usage: "target (repeatable; replaces the UOF set): https://host, amqps://host:5671, tcp://host:port"},
			&ucli.StringFlag{Name: "env", Usage: "UOF endpoint set: " + envNames()},
			&ucli.StringFlag{Name: "profile", Value: "standard", Usage: "quick (about 2 min, idle up to 60 s), standard (idle up to 10 min), full (idle up to 60 min)"},
			&ucli.DurationFlag{Name: "idle-max", Usage: "override the profile's longest idle time (at least 1s)"},
			&ucli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "IPv4 addresses only"},
			&ucli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "IPv6 addresses only"},
			&ucli.StringFlag{Name: "privilege", Value: "auto", Usage: "auto|raw|unprivileged"},
			&ucli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates to trust instead of the system roots"},
			&ucli.BoolFlag{Name: "insecure", Usage: "do not verify server certificates"},
			&ucli.StringFlag{Name: "token-file", Usage: "file holding the x-access-token (else $UOF_ACCESS_TOKEN); never printed"},
			&ucli.StringFlag{Name: "amqp-vhost", Usage: "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/<bookmaker_id>); default: virtual_host of whoami.xml from an https:// target of the run; without it AMQP connections stop after Connection.Start"},
			&ucli.StringFlag{Name: "data-path", Value: tcpcheck.DefaultDataPath, Usage: "HTTP path the data test downloads (default: the market descriptions the UOF SDKs fetch at start-up; needs the token)"},
			&ucli.DurationFlag{Name: "in-flow-max", Value: diagnose.DefaultMaxInFlowWait, Usage: "longest idle the in-flow confirmation may hold a connection for (it takes that long again; 0: never)"},
			&ucli.StringFlag{Name: "peer-url", Usage: "HTTPS `URL` on the target that answers with our address as the server sees it (ip:port): locates NAT boxes"},
			&ucli.StringFlag{Name: "evidence", Usage: "write pcap files of the connections behind each finding into `DIR`"},
			&ucli.StringFlag{Name: "history", Usage: "also save the JSON report, timestamped, into `DIR` (for hopcheck diff --history)"},
			&ucli.IntFlag{Name: "keep", Usage: "with --history: keep the newest N run reports (0: all)"},
			&ucli.DurationFlag{Name: "keep-age", Usage: "with --history: remove run reports older than this"},
			&ucli.StringFlag{Name: "metrics-file", Usage: "write node_exporter textfile metrics to `FILE` (*.prom, atomically)"},
		},
		Action: runRun,
	}
}

// runRequest is the validated input of `hopcheck run`.
type runRequest struct {
	targets   []tcpcheck.Target
	family    int
	profile   diagnose.Profile
	privilege string
	tcp       tcpcheck.Options
	evidence  string
	peerURL   string
	inFlowMax time.Duration // < 0: never
	history   string
	keep      history.Retention
	metrics   string
}

func parseRunRequest(c *ucli.Context) (runRequest, error) {
	var req runRequest
	if c.NArg() > 0 {
		return req, usageErr("run takes no arguments (got %q): use --target", c.Args().First())
	}
	raw := c.StringSlice("target")
	if env := c.String("env"); env != "" {
		set, ok := uofEnvironments[env]
		if !ok {
			return req, usageErr("unknown --env %q (want one of %s)", env, envNames())
		}
		if len(raw) > 0 {
			return req, usageErr("--env %q and --target exclude each other", env)
		}
		raw = set
	}
	if len(raw) == 0 {
		raw = defaultTargets
	}
	for _, s := range raw {
		t, err := tcpcheck.ParseTarget(s)
		if err != nil {
			return req, usageErr("%v", err)
		}
		req.targets = append(req.targets, t)
	}
	p, ok := diagnose.Profiles[c.String("profile")]
	if !ok {
		return req, usageErr("unknown --profile %q (want quick, standard or full)", c.String("profile"))
	}
	if c.IsSet("idle-max") {
		d := c.Duration("idle-max")
		if d < time.Second {
			return req, usageErr("--idle-max %v is below 1s", d)
		}
		p.IdleMax = d
	}
	req.profile = p
	family, err := familyFromFlags(c)
	if err != nil {
		return req, err
	}
	req.family = family
	if req.privilege, err = privilegeFromFlags(c); err != nil {
		return req, err
	}
	if dir := c.String("evidence"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return req, usageErr("--evidence %q: %v", dir, unwrapPathErr(err))
		}
		req.evidence = dir
	}
	if dir := c.String("history"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return req, usageErr("--history %q: %v", dir, unwrapPathErr(err))
		}
		req.history = dir
	}
	req.keep = history.Retention{Keep: c.Int("keep"), MaxAge: c.Duration("keep-age")}
	if req.keep.Keep < 0 || req.keep.MaxAge < 0 {
		return req, usageErr("--keep %d / --keep-age %s must not be negative", req.keep.Keep, req.keep.MaxAge)
	}
	if (c.IsSet("keep") || c.IsSet("keep-age")) && req.history == "" {
		return req, usageErr("--keep and --keep-age need --history DIR")
	}
	if f := c.String("metrics-file"); f != "" {
		if !strings.HasSuffix(f, ".prom") {
			return req, usageErr("--metrics-file %q must end in .prom (node_exporter's textfile collector reads only those)", f)
		}
		if st, err := os.Stat(filepath.Dir(f)); err != nil || !st.IsDir() {
			return req, usageErr("--metrics-file %q: directory %q does not exist", f, filepath.Dir(f))
		}
		req.metrics = f
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return req, err
	}
	req.inFlowMax = c.Duration("in-flow-max")
	switch {
	case req.inFlowMax < 0:
		return req, usageErr("--in-flow-max %v must not be negative", req.inFlowMax)
	case req.inFlowMax == 0:
		req.inFlowMax = -1 // never
	}
	if u := c.String("peer-url"); u != "" {
		if !strings.HasPrefix(u, "https://") || strings.ContainsAny(u, " \r\n") {
			return req, usageErr("--peer-url %q must be an https:// URL", u)
		}
		req.peerURL = u
	}
	raw4 := probe.HasRawAccess() && req.privilege != "unprivileged"
	dataPath := c.String("data-path")
	if !strings.HasPrefix(dataPath, "/") || strings.ContainsAny(dataPath, " \r\n") {
		return req, usageErr("--data-path %q must start with / and contain no spaces", dataPath)
	}
	req.tcp = tcpcheck.Options{Dial: dial, Verify: true, Observe: raw4, DataPath: dataPath,
		StallAfter: 10 * time.Second}
	if raw4 {
		req.tcp.HopAddress = tcpcheck.HopAddress
	}
	return req, nil
}

// dialConfigFromFlags reads --ca-file, --insecure, --amqp-vhost and
// --token-file (or $UOF_ACCESS_TOKEN). The token's content is never
// echoed.
func dialConfigFromFlags(c *ucli.Context) (tcpcheck.DialConfig, error) {
	d := tcpcheck.DefaultDialConfig()
	d.Insecure = c.Bool("insecure")
	if c.IsSet("amqp-vhost") {
		d.AMQPVHost = c.String("amqp-vhost")
		if err := tcpcheck.CheckAMQPVHost(d.AMQPVHost); err != nil {
			return d, usageErr("--amqp-vhost %q: %v", d.AMQPVHost, err)
		}
	}
	if f := c.String("ca-file"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return d, usageErr("--ca-file %q: %v", f, unwrapPathErr(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return d, usageErr("--ca-file %q holds no PEM certificate", f)
		}
		d.RootCAs = pool
	}
	if f := c.String("token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return d, usageErr("--token-file %q: %v", f, unwrapPathErr(err))
		}
		d.Token = strings.TrimSpace(string(b))
		if d.Token == "" || strings.ContainsAny(d.Token, "\r\n") {
			return d, usageErr("--token-file %q must hold one non-empty line", f)
		}
		return d, nil
	}
	d.Token = strings.TrimSpace(os.Getenv("UOF_ACCESS_TOKEN"))
	if strings.ContainsAny(d.Token, "\r\n") {
		return d, usageErr("$UOF_ACCESS_TOKEN must be one line")
	}
	return d, nil
}

func runRun(c *ucli.Context) error {
	req, err := parseRunRequest(c)
	if err != nil {
		return err
	}
	out, err := openOutput(c, "text", "json", "markdown", "html")
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
	if req.privilege == "raw" && !probe.HasRawAccess() {
		return cantRunErr("--privilege raw: %v", probe.ErrNoRawAccess)
	}
	var warnings []string
	if !probe.HasRawAccess() {
		w := "no CAP_NET_RAW: unprivileged probes, no packet capture (reset origins stay unknown), no localisation. Grant it with: sudo setcap cap_net_raw+ep " + exePath()
		warnf(c, "%s", w)
		warnings = append(warnings, w)
	}
	opt := diagnose.Options{Profile: req.profile, Privilege: req.privilege, TCP: req.tcp, NewProber: probe.NewProber}
	if probe.HasRawAccess() && req.privilege != "unprivileged" {
		opt.Localise = diagnose.NewLocaliser(diagnose.LocaliseConfig{PeerURL: req.peerURL, Dial: req.tcp.Dial, MaxInFlowWait: req.inFlowMax})
	}
	started := time.Now()
	{
		// Progress with the time left, as timestamped lines on stderr (the
		// idle phase is long; cron keeps them in its mail or journal).
		budget := estimateRun(req.profile)
		opt.Log = func(format string, a ...any) {
			left := budget - time.Since(started)
			if left < 0 {
				left = 0
			}
			fmt.Fprintf(c.App.ErrWriter, "%s %s (about %s left)\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...), left.Round(time.Second))
		}
		fmt.Fprintf(c.App.ErrWriter, "hopcheck run: %d address(es), profile %s (idle up to %s)\n", len(jobs), req.profile.Name, req.profile.IdleMax)
	}
	rep := diagnose.Run(ctx, opt, jobs)
	rep.Tool = "hopcheck " + Version
	rep.Warnings = append(rep.Warnings, warnings...)
	if req.evidence != "" {
		local := func(a netip.Addr) netip.Addr { src, _ := probe.SourceFor(a); return src }
		if _, err := diagnose.WriteEvidence(req.evidence, &rep, local); err != nil {
			rep.Warnings = append(rep.Warnings, err.Error())
		}
	}
	switch out.format {
	case "json":
		err = report.WriteJSON(out.w, rep)
	case "markdown":
		err = report.WriteMarkdown(out.w, rep)
	case "html":
		err = report.WriteHTML(out.w, rep)
	default:
		err = report.WriteText(out.w, rep, report.TextOptions{Color: out.tty})
	}
	if err != nil {
		return cantRunErr("write report: %v", err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	if req.history != "" {
		if _, err := history.Save(req.history, "run", rep, time.Now(), req.keep); err != nil {
			warnf(c, "--history: %v", err)
		}
	}
	if req.metrics != "" {
		if err := metrics.WriteRunFile(req.metrics, rep); err != nil {
			warnf(c, "--metrics-file: %v", err)
		}
	}
	if !rep.Measured() {
		return cantRunErr("nothing could be measured toward any address (no network, or no privileges at all)")
	}
	if len(rep.Findings) > 0 {
		return &exitError{code: ExitFindings, err: errors.New("findings")}
	}
	return nil
}

// estimateRun is a rough wall-time budget for the progress line: the idle
// ladder dominates (about twice the longest idle tried).
func estimateRun(p diagnose.Profile) time.Duration {
	return 2*p.IdleMax + time.Duration(float64(p.ConnectCount)/p.ConnectRate*float64(time.Second)) + 30*time.Second
}

// resolveTCPJobs resolves every target to all its addresses.
func resolveTCPJobs(ctx context.Context, targets []tcpcheck.Target, family int) ([]tcpcheck.Job, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var jobs []tcpcheck.Job
	for _, t := range targets {
		begin := time.Now()
		addrs, err := trace.ResolveAll(rctx, net.DefaultResolver, t.Spec, family)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		dns := time.Since(begin)
		if t.Spec.Addr.IsValid() {
			dns = 0
		}
		for _, a := range addrs {
			jobs = append(jobs, tcpcheck.Job{Target: t, Addr: a, DNS: dns})
		}
	}
	return jobs, nil
}
