package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/metrics"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func serveCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "serve",
		Usage: "Prometheus exporter (blackbox style): /metrics for itself, /probe?target=...&profile=quick runs a bounded diagnosis",
		Flags: append([]ucli.Flag{
			&ucli.StringFlag{Name: "listen", Value: "127.0.0.1:9516", Usage: "listen on `ADDR` (host:port)"},
			&ucli.IntFlag{Name: "max-concurrent", Value: 2, Usage: "probes running at once (probes toward *.betradar.com run one at a time)"},
			privilegeFlag(),
		}, dialFlags(vhostFromWhoami)...),
		Action: runServe,
	}
}

// serveOptions are the values of `hopcheck serve` as given, checked by
// Validate.
type serveOptions struct {
	Listen        string
	MaxConcurrent int
}

// Validate checks the options without opening anything.
func (o serveOptions) Validate() error {
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return usageErr("--listen %q: want host:port", o.Listen)
	}
	if o.MaxConcurrent < 1 || o.MaxConcurrent > 64 {
		return usageErr("--max-concurrent %d must be between 1 and 64", o.MaxConcurrent)
	}
	return nil
}

func runServe(c *ucli.Context) error {
	if c.NArg() > 0 {
		return usageErr("serve takes no arguments (got %q)", c.Args().First())
	}
	o := serveOptions{Listen: c.String("listen"), MaxConcurrent: c.Int("max-concurrent")}
	if err := o.Validate(); err != nil {
		return err
	}
	addr, n := o.Listen, o.MaxConcurrent
	privilege, err := privilegeFromFlags(c)
	if err != nil {
		return err
	}
	dial, err := dialConfigFromFlags(c)
	if err != nil {
		return err
	}
	raw := probe.HasRawAccess() && privilege != "unprivileged"
	if privilege == "raw" && !probe.HasRawAccess() {
		return cantRunErr("--privilege raw: %v", probe.ErrNoRawAccess)
	}
	if !raw {
		warnf(c, "no CAP_NET_RAW: unprivileged probes, reset origins stay unknown. Grant it with: sudo setcap cap_net_raw+ep %s", exePath())
	}
	betradar := make(chan struct{}, 1) // Sportradar's 40-connection limit: one diagnosis toward it at a time
	probeFn := func(ctx context.Context, req metrics.ProbeRequest) (diagnose.Report, error) {
		t, err := tcpcheck.ParseTarget(req.Target)
		if err != nil {
			return diagnose.Report{}, fmt.Errorf("%w: %v", metrics.ErrBadTarget, err)
		}
		jobs, err := resolveTCPJobs(ctx, []tcpcheck.Target{t}, 0)
		if err != nil {
			return diagnose.Report{}, fmt.Errorf("%w: %v", metrics.ErrBadTarget, err)
		}
		if tcpcheck.PolicyFor([]tcpcheck.Target{t}).OneRunAtATime {
			select {
			case betradar <- struct{}{}:
				defer func() { <-betradar }()
			case <-ctx.Done():
				return diagnose.Report{}, fmt.Errorf("another probe toward *.betradar.com is running: %w", ctx.Err())
			}
		}
		opt := diagnose.Options{Profile: req.Profile, Privilege: privilege, NewProber: probe.NewProber,
			TCP: tcpcheck.Options{Dial: dial, Verify: true, Observe: raw, DataPath: tcpcheck.DefaultDataPath, StallAfter: 10 * time.Second}}
		if raw {
			opt.TCP.HopAddress = tcpcheck.HopAddress
		}
		rep := diagnose.Run(ctx, opt, jobs)
		rep.Tool = "hopcheck " + Version
		return rep, nil
	}
	exp := metrics.NewExporter(probeFn, n)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return cantRunErr("listen %s: %v", addr, err)
	}
	srv := &http.Server{Handler: exp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(c.App.ErrWriter, "hopcheck serve: listening on %s\n", ln.Addr())
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return cantRunErr("serve: %v", err)
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return nil
}
