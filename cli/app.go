// Package cli is the thin command-line layer of hopcheck: it parses flags,
// validates input (exit code 2 with one clear line), calls the library
// packages and writes reports.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Exit codes, documented in README.md.
const (
	ExitOK       = 0 // ran, no findings
	ExitFindings = 1 // ran, findings (or a material change for diff)
	ExitUsage    = 2 // bad input
	ExitCantRun  = 3 // could not run (no network, no privileges at all)
)

// exitError carries an exit code up to Main without calling os.Exit in
// library code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr reports bad input: one line, exit code 2.
func usageErr(format string, a ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, a...)}
}

// cantRunErr reports that the tool could not run: exit code 3.
func cantRunErr(format string, a ...any) error {
	return &exitError{code: ExitCantRun, err: fmt.Errorf(format, a...)}
}

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "dev"

// Main runs the app and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(args)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.code != ExitOK && ee.code != ExitFindings {
			fmt.Fprintf(stderr, "hopcheck: %s\n", oneLine(ee.err.Error()))
		}
		return ee.code
	}
	// Errors from flag parsing in urfave/cli are usage errors.
	fmt.Fprintf(stderr, "hopcheck: %s\n", oneLine(err.Error()))
	return ExitUsage
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func newApp(stdout, stderr io.Writer) *ucli.App {
	app := &ucli.App{
		Name:            "hopcheck",
		Usage:           "find the hop that resets or silently drops connections toward a service",
		Version:         Version,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Flags:           outputFlags(),
		Commands: []*ucli.Command{
			runCommand(),
			traceCommand(),
			tcpCommand(),
			demoCommand(),
			labServeCommand(),
			serveCommand(),
			diffCommand(),
			soakCommand(),
		},
		// Report unknown flags etc. as one line, not usage + error.
		OnUsageError:   oneLineUsageError,
		ExitErrHandler: func(*ucli.Context, error) {},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = oneLineUsageError
		if !cmd.Hidden {
			// Accept --format and -o after the command name too.
			cmd.Flags = append(cmd.Flags, outputFlags()...)
		}
	}
	return app
}

// outputFlags are accepted both before and after the command name.
func outputFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "format", Value: "auto", Usage: "output format: text|json; run and demo also markdown|html (auto: text)"},
		&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the report to `FILE` (atomically)"},
	}
}

// flagString returns the value of a flag defined both globally and per
// command: the innermost context where it was set wins.
func flagString(c *ucli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) {
			return ctx.String(name)
		}
	}
	return c.String(name)
}

// oneLineUsageError turns urfave/cli's flag errors (which would print the
// whole help) into one line and exit code 2.
func oneLineUsageError(_ *ucli.Context, err error, _ bool) error {
	return usageErr("%v", err)
}
