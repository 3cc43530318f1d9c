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
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "listen", Value: "127.0.0.1:9516", Usage: "listen on `ADDR` (host:port)"},
			&ucli.IntFlag{Name: "max-concurrent", Value: 2, Usage: "probes running at once (probes toward *.betradar.com run one at a time)"},
			&ucli.StringFlag{Name: "privilege", Value: "auto", Usage: "auto|raw|unprivileged"},
			&ucli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates to trust instead of the system roots"},
			&ucli.BoolFlag{Name: "insecure", Usage: "do not verify server certificates"},
			&ucli.StringFlag{Name: "token-file", Usage: "file holding the x-access-token (else $UOF_ACCESS_TOKEN); never printed"},
			&ucli.StringFlag{Name: "amqp-vhost", Usage: "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/<bookmaker_id>); default: virtual_host of whoami.xml from an https:// target; without it AMQP connections stop after Connection.Start"},
		},
		Action: runServe,
	}
}

func runServe(c *ucli.Context) error {
	if c.NArg() > 0 {
		return usageErr("serve takes no arguments (got %q)", c.Args().First())
	}
	addr := c.String("listen")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usageErr("--listen %q: want host:port", addr)
	}
	n := c.Int("max-concurrent")
	if n < 1 || n > 64 {
		return usageErr("--max-concurrent %d must be between 1 and 64", n)
	}
	privilege, err := privilegeFromFlags(c)
	if err != nil {
		return err
	}
	dial, err := soakDialConfig(c)
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
		if tcpcheck.IsBetradar(t.Spec.Host) {
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
