package cli

import (
	"context"
	"os/signal"
	"syscall"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/injector"
)

// labInjectCommand runs the on-path RST injector of lab.Router.InjectRST
// (package lab/injector) inside a lab router's namespace. It is hidden: lab.Build starts it.
func labInjectCommand() *ucli.Command {
	return &ucli.Command{
		Name:   lab.InjectCommand,
		Usage:  "run a lab router's on-path RST injector (started by the lab; not for direct use)",
		Hidden: true,
		Flags: []ucli.Flag{
			&ucli.IntFlag{Name: "after-bytes", Usage: "reset a flow once its client has sent more than `N` payload bytes"},
			&ucli.IntFlag{Name: "port", Usage: "only flows toward this server `PORT` (0 = every TCP flow)"},
			&ucli.IntFlag{Name: "ttl", Value: 64, Usage: "initial `TTL` / hop limit of the injected resets"},
			&ucli.StringFlag{Name: "client-interface", Value: "toclient", Usage: "the router's `INTERFACE` toward the client"},
		},
		Action: runLabInject,
	}
}

func runLabInject(c *ucli.Context) error {
	if v := c.Int("after-bytes"); v < 0 {
		return usageErr("--after-bytes %d: must not be negative", v)
	}
	if v := c.Int("port"); v < 0 || v > 65535 {
		return usageErr("--port %d: not a port (0-65535)", v)
	}
	if v := c.Int("ttl"); v < 1 || v > 255 {
		return usageErr("--ttl %d: outside 1-255", v)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := injector.Run(ctx, injector.Config{
		AfterClientBytes: c.Int("after-bytes"),
		Port:             uint16(c.Int("port")),
		ClientInterface:  c.String("client-interface"),
		TTL:              c.Int("ttl"),
		Ready:            c.App.Writer,
		Log:              c.App.ErrWriter,
	})
	if err != nil {
		return cantRunErr("%v", err)
	}
	return nil
}
