package cli

import ucli "github.com/urfave/cli/v2"

// labServeCommand is replaced by the lab implementation.
func labServeCommand() *ucli.Command {
	return &ucli.Command{Name: "lab-serve", Hidden: true}
}
