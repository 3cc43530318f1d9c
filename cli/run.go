package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/diagnose"
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
	flags := []ucli.Flag{
		&ucli.StringSliceFlag{Name: "target", Aliases: []string{"t"}, Usage: "target (repeatable; replaces the UOF set): https://host, amqps://host:5671, tcp://host:port"},
		&ucli.StringFlag{Name: "env", Usage: "UOF endpoint set: " + envNames()},
		&ucli.StringFlag{Name: "profile", Value: "standard", Usage: "quick (about 2 min, idle up to 60 s), standard (idle up to 10 min), full (idle up to 60 min)"},
		&ucli.DurationFlag{Name: "idle-max", Usage: "override the profile's longest idle time (at least 1s)"},
	}
	flags = append(flags, familyFlags()...)
	flags = append(flags, privilegeFlag())
	flags = append(flags, dialFlags(vhostFromWhoami)...)
	flags = append(flags,
		&ucli.StringFlag{Name: "data-path", Value: tcpcheck.DefaultDataPath, Usage: "HTTP path the data test downloads (default: the market descriptions the UOF SDKs fetch at start-up; needs the token)"},
		&ucli.DurationFlag{Name: "in-flow-max", Value: diagnose.DefaultMaxInFlowWait, Usage: "longest idle the in-flow confirmation may hold a connection for (it takes that long again; 0: never)"},
		&ucli.StringFlag{Name: "peer-url", Usage: "HTTPS `URL` on the target that answers with our address as the server sees it (ip:port): locates NAT boxes"},
		&ucli.StringFlag{Name: "evidence", Usage: "write pcap files of the connections behind each finding into `DIR`"},
	)
	flags = append(flags, storeFlags("run")...)
	return &ucli.Command{
		Name:  "run",
		Usage: "the whole diagnosis: traces, connection tests, idle ladder, localisation; findings and the hop report",
		Description: "Diagnoses every address of every target: which hop (or the server) resets or drops connections,\n" +
			"in which phase, after how long idle, with evidence and the setting that fixes it.\n" +
			"Default targets: the UOF production hosts (api, global.api, mq, global.mq .betradar.com).",
		Flags:  flags,
		Action: func(c *ucli.Context) error { return runReport(c, parseRun) },
	}
}

// runOptions are the values of `hopcheck run` as given, checked by
// Validate.
type runOptions struct {
	Targets   []string
	Env       string
	Profile   string
	IdleMax   time.Duration // 0: the profile's
	InFlowMax time.Duration
	PeerURL   string
	DataPath  string
}

// Validate checks the options without touching the network or files.
func (o runOptions) Validate() error {
	if o.Env != "" {
		if _, ok := uofEnvironments[o.Env]; !ok {
			return usageErr("unknown --env %q (want one of %s)", o.Env, envNames())
		}
		if len(o.Targets) > 0 {
			return usageErr("--env %q and --target exclude each other", o.Env)
		}
	}
	for _, s := range o.targets() {
		if _, err := tcpcheck.ParseTarget(s); err != nil {
			return usageErr("%v", err)
		}
	}
	if _, ok := diagnose.Profiles[o.Profile]; !ok {
		return usageErr("unknown --profile %q (want quick, standard or full)", o.Profile)
	}
	if o.IdleMax != 0 && o.IdleMax < time.Second {
		return usageErr("--idle-max %v is below 1s", o.IdleMax)
	}
	if o.InFlowMax < 0 {
		return usageErr("--in-flow-max %v must not be negative", o.InFlowMax)
	}
	if o.PeerURL != "" && (!strings.HasPrefix(o.PeerURL, "https://") || strings.ContainsAny(o.PeerURL, " \r\n")) {
		return usageErr("--peer-url %q must be an https:// URL", o.PeerURL)
	}
	return checkHTTPPath("data-path", o.DataPath)
}

// targets are --target, else the --env set, else the UOF production hosts.
func (o runOptions) targets() []string {
	switch {
	case len(o.Targets) > 0:
		return o.Targets
	case o.Env != "":
		return uofEnvironments[o.Env]
	}
	return defaultTargets
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
	store     storeOptions
}

func parseRunRequest(c *ucli.Context) (runRequest, error) {
	var req runRequest
	if c.NArg() > 0 {
		return req, usageErr("run takes no arguments (got %q): use --target", c.Args().First())
	}
	o := runOptions{Targets: c.StringSlice("target"), Env: c.String("env"), Profile: c.String("profile"),
		InFlowMax: c.Duration("in-flow-max"), PeerURL: c.String("peer-url"), DataPath: c.String("data-path")}
	if c.IsSet("idle-max") {
		o.IdleMax = c.Duration("idle-max")
		if o.IdleMax == 0 {
			return req, usageErr("--idle-max %v is below 1s", o.IdleMax)
		}
	}
	if err := o.Validate(); err != nil {
		return req, err
	}
	for _, s := range o.targets() {
		t, _ := tcpcheck.ParseTarget(s) // checked by Validate
		req.targets = append(req.targets, t)
	}
	req.profile = diagnose.Profiles[o.Profile]
	if o.IdleMax > 0 {
		req.profile.IdleMax = o.IdleMax
	}
	family, err := familyFromFlags(c)
	if err != nil {
		return req, err
	}
	req.family = family
	if req.privilege, err = privilegeFromFlags(c); err != nil {
		return req, err
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return req, err
	}
	req.peerURL, req.inFlowMax = o.PeerURL, o.InFlowMax
	if req.inFlowMax == 0 {
		req.inFlowMax = -1 // never
	}
	raw4 := probe.HasRawAccess() && req.privilege != "unprivileged"
	req.tcp = tcpcheck.Options{Dial: dial, Verify: true, Observe: raw4, DataPath: o.DataPath,
		StallAfter: 10 * time.Second}
	if raw4 {
		req.tcp.HopAddress = tcpcheck.HopAddress
	}
	// Directories last: bad input leaves nothing behind.
	if req.store, err = storeFromFlags(c); err != nil {
		return req, err
	}
	if dir := c.String("evidence"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return req, usageErr("--evidence %q: %v", dir, unwrapPathErr(err))
		}
		req.evidence = dir
	}
	return req, nil
}

func parseRun(c *ucli.Context) (*reportRun[diagnose.Report], error) {
	req, err := parseRunRequest(c)
	if err != nil {
		return nil, err
	}
	var jobs []tcpcheck.Job
	return &reportRun[diagnose.Report]{
		formats: []string{"text", "json", "markdown", "html"},
		resolve: resolveTCPJobsInto(&jobs, req.targets, req.family),
		run:     func(ctx context.Context) (diagnose.Report, error) { return diagnoseRun(ctx, c, req, jobs) },
		write: func(out *output, rep diagnose.Report) error {
			switch out.format {
			case "json":
				return report.WriteJSON(out.w, rep)
			case "markdown":
				return report.WriteMarkdown(out.w, rep)
			case "html":
				return report.WriteHTML(out.w, rep)
			}
			return report.WriteText(out.w, rep, report.TextOptions{Color: out.tty})
		},
		written: func(rep diagnose.Report) {
			req.store.save(c, "run", rep, func(path string) error { return metrics.WriteRunFile(path, rep) })
		},
		outcome: func(_ context.Context, rep diagnose.Report) error {
			if !rep.Measured() {
				for _, t := range rep.Targets {
					if r := t.LoginRefused(); r != nil {
						return cantRunErr("nothing could be measured: %s", r.Explain())
					}
				}
				return cantRunErr("nothing could be measured toward any address (no network, or no privileges at all)")
			}
			if len(rep.Findings) > 0 {
				return findingsErr("findings")
			}
			return nil
		},
	}, nil
}

// diagnoseRun is the run step of `hopcheck run`.
func diagnoseRun(ctx context.Context, c *ucli.Context, req runRequest, jobs []tcpcheck.Job) (diagnose.Report, error) {
	if req.privilege == "raw" && !probe.HasRawAccess() {
		return diagnose.Report{}, cantRunErr("--privilege raw: %v", probe.ErrNoRawAccess)
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
		if w := diagnose.CaptureWarning(req.evidence, rep); w != "" {
			rep.Warnings = append(rep.Warnings, w)
		}
		if _, err := diagnose.WriteEvidence(req.evidence, &rep, sourceToward); err != nil {
			rep.Warnings = append(rep.Warnings, err.Error())
		}
	}
	return rep, nil
}

// estimateRun is a rough wall-time budget for the progress line: the idle
// ladder dominates (about twice the longest idle tried).
func estimateRun(p diagnose.Profile) time.Duration {
	return 2*p.IdleMax + time.Duration(float64(p.ConnectCount)/p.ConnectRate*float64(time.Second)) + 30*time.Second
}

// resolveTCPJobsInto is the resolve step of the tcp, soak and run
// commands: resolveTCPJobs into *jobs.
func resolveTCPJobsInto(jobs *[]tcpcheck.Job, targets []tcpcheck.Target, family int) func(ctx context.Context) error {
	return func(ctx context.Context) (err error) {
		*jobs, err = resolveTCPJobs(ctx, targets, family)
		return err
	}
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
