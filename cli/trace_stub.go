//go:build !hopcheck_wip

package cli

import ucli "github.com/urfave/cli/v2"

func traceCommand() *ucli.Command { return &ucli.Command{Name: "trace"} }
