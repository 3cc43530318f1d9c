package cli

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/lab"
)

// labServeCommand runs the lab server inside a lab's server namespace. It
// is hidden: lab.Build starts it. The token comes from a file so that it
// never appears in a process listing.
func labServeCommand() *ucli.Command {
	return &ucli.Command{
		Name:   "lab-serve",
		Usage:  "run the lab server (started by the lab; not for direct use)",
		Hidden: true,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "cert", Usage: "server certificate PEM `FILE`", Required: true},
			&ucli.StringFlag{Name: "key", Usage: "server key PEM `FILE`", Required: true},
			&ucli.StringFlag{Name: "token-file", Usage: "`FILE` holding the valid x-access-token", Required: true},
			&ucli.IntFlag{Name: "https-port", Value: lab.DefaultHTTPSPort, Usage: "TLS HTTP `PORT`"},
			&ucli.IntFlag{Name: "amqp-port", Value: lab.DefaultAMQPPort, Usage: "TLS AMQP responder `PORT`"},
			&ucli.IntFlag{Name: "echo-port", Value: lab.DefaultEchoPort, Usage: "plain TCP echo `PORT`"},
			&ucli.DurationFlag{Name: "idle-close", Value: lab.DefaultIdleClose, Usage: "close connections idle this long"},
			&ucli.DurationFlag{Name: "handshake-timeout", Value: lab.DefaultHandshakeTimeout, Usage: "AMQP: close connections not logged in by then (RabbitMQ handshake_timeout)"},
			&ucli.IntFlag{Name: "max-conns", Usage: "reset connections beyond this many open (0 = no cap)"},
			&ucli.IntFlag{Name: "large-size", Value: lab.DefaultLargeSize, Usage: "bytes of GET /large"},
			&ucli.StringFlag{Name: "listen4", Value: "0.0.0.0", Usage: "IPv4 listen address (- = none)"},
			&ucli.StringFlag{Name: "listen6", Value: "::", Usage: "IPv6 listen address (- = none)"},
		},
		Action: runLabServe,
	}
}

func runLabServe(c *ucli.Context) error {
	for _, p := range []string{"https-port", "amqp-port", "echo-port"} {
		if v := c.Int(p); v < 1 || v > 65535 {
			return usageErr("--%s %d: not a port (1-65535)", p, v)
		}
	}
	if d := c.Duration("idle-close"); d <= 0 {
		return usageErr("--idle-close %v: must be positive", d)
	}
	if d := c.Duration("handshake-timeout"); d <= 0 {
		return usageErr("--handshake-timeout %v: must be positive", d)
	}
	if v := c.Int("max-conns"); v < 0 {
		return usageErr("--max-conns %d: must not be negative", v)
	}
	if v := c.Int("large-size"); v < 1 {
		return usageErr("--large-size %d: must be positive", v)
	}
	tokenBytes, err := os.ReadFile(c.String("token-file"))
	if err != nil {
		return usageErr("--token-file: %v", err)
	}
	token := strings.TrimRight(string(tokenBytes), "\r\n")
	if token == "" {
		return usageErr("--token-file %s: empty", c.String("token-file"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = lab.Serve(ctx, lab.ServeConfig{
		Server: lab.Server{
			HTTPSPort:        c.Int("https-port"),
			AMQPPort:         c.Int("amqp-port"),
			EchoPort:         c.Int("echo-port"),
			IdleClose:        c.Duration("idle-close"),
			HandshakeTimeout: c.Duration("handshake-timeout"),
			MaxConns:         c.Int("max-conns"),
			LargeSize:        c.Int("large-size"),
			Token:            token,
		},
		CertFile: c.String("cert"),
		KeyFile:  c.String("key"),
		Listen4:  c.String("listen4"),
		Listen6:  c.String("listen6"),
		Ready:    c.App.Writer,
		Log:      c.App.ErrWriter,
	})
	if err != nil {
		return cantRunErr("%v", err)
	}
	return nil
}
