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
		Name:  "hopcheck",
		Usage: "find the hop that resets or silently drops connections toward a service",
		Description: "hopcheck traces the hops toward the Sportradar UOF hosts (or any TCP service) and runs connect,\n" +
			"concurrency, data and idle tests to name the hop or box that resets or silently drops connections.\n\n" +
			"Exit status: 0 no findings, 1 findings (diff: a material change), 2 bad input, 3 could not run.\n\n" +
			"Files (Debian package): /usr/share/hopcheck/default, the default options of hopcheck.service\n" +
			"(started by hopcheck.timer once enabled), overridden by /etc/default/hopcheck if the admin creates it;\n" +
			"/etc/hopcheck/token, the access token it reads (created by the admin).",
		Version:              Version,
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: true, // --generate-bash-completion, used by `hopcheck completion`
		// Accepted before the command name too, as they always were;
		// commands that write no report refuse them (refuseOutputFlags).
		Flags: outputFlags(),
		Commands: []*ucli.Command{
			runCommand(),
			traceCommand(),
			tcpCommand(),
			demoCommand(),
			labServeCommand(),
			labInjectCommand(),
			serveCommand(),
			diffCommand(),
			soakCommand(),
			completionCommand(),
			manCommand(),
		},
		// Report unknown flags etc. as one line, not usage + error.
		OnUsageError:   oneLineUsageError,
		ExitErrHandler: func(*ucli.Context, error) {},
	}
	for _, cmd := range app.Commands {
		setupCommand(cmd)
	}
	return app
}

// writesReport names the commands that write a report: they, and only
// they, take --format and -o after their name.
var writesReport = map[string]bool{"run": true, "trace": true, "connect": true, "concurrency": true, "data": true,
	"idle": true, "soak": true, "diff": true, "demo": true}

// setupCommand gives cmd and its subcommands one-line usage errors and the
// output flags where a report is written.
func setupCommand(cmd *ucli.Command) {
	cmd.OnUsageError = oneLineUsageError
	for _, sub := range cmd.Subcommands {
		setupCommand(sub)
	}
	switch {
	case len(cmd.Subcommands) > 0:
	case writesReport[cmd.Name]:
		cmd.Flags = append(cmd.Flags, outputFlags()...)
	default:
		cmd.Before = refuseOutputFlags
	}
}

// refuseOutputFlags: --format or -o before the name of a command that
// writes no report is bad input, not silently ignored.
func refuseOutputFlags(c *ucli.Context) error {
	for _, ctx := range c.Lineage() {
		for _, name := range []string{"format", "output"} {
			if ctx.IsSet(name) {
				return usageErr("--%s: %s writes no report", name, c.Command.Name)
			}
		}
	}
	return nil
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
