package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	ucli "github.com/urfave/cli/v2"
)

// reportRun is one run of a command that writes a report (run, trace, tcp,
// soak, diff), as the steps that differ between them. runReport does the
// steps they share, in one order: parse → output → signals → resolve →
// run → write → store (history, metrics) → exit code.
type reportRun[R any] struct {
	// formats are the --format values the command writes.
	formats []string
	// resolve turns targets into addresses once the output is open and
	// signals are caught (nil: nothing to resolve).
	resolve func(ctx context.Context) error
	// run does the work; an error is the command's exit (cantRunErr...).
	run func(ctx context.Context) (R, error)
	// write renders the report in out.format.
	write func(out *output, rep R) error
	// written runs after the report is committed (checkpoints, history,
	// metrics): it may only warn.
	written func(rep R)
	// outcome is the exit code of a report that was written: nil,
	// findingsErr, or cantRunErr when nothing could be measured.
	outcome func(ctx context.Context, rep R) error
}

// runReport runs a report command: parse validates every input before
// anything is opened, resolved or sent.
func runReport[R any](c *ucli.Context, parse func(c *ucli.Context) (*reportRun[R], error)) error {
	r, err := parse(c)
	if err != nil {
		return err
	}
	out, err := openOutput(c, r.formats...)
	if err != nil {
		return err
	}
	defer out.abort()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if r.resolve != nil {
		if err := r.resolve(ctx); err != nil {
			return err
		}
	}
	rep, err := r.run(ctx)
	if err != nil {
		return err
	}
	if err := r.write(out, rep); err != nil {
		return cantRunErr("write report: %v", err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	if r.written != nil {
		r.written(rep)
	}
	if r.outcome == nil {
		return nil
	}
	return r.outcome(ctx, rep)
}

// findingsErr is exit code 1: the command ran and has findings (for diff:
// a material change).
func findingsErr(what string) error {
	return &exitError{code: ExitFindings, err: errors.New(what)}
}

// jsonOrText is the write step of a command whose --format is text or
// json: one writer for each.
func jsonOrText[R any](writeJSON, writeText func(w io.Writer, rep R) error) func(out *output, rep R) error {
	return func(out *output, rep R) error {
		if out.format == "json" {
			return writeJSON(out.w, rep)
		}
		return writeText(out.w, rep)
	}
}

// progressOnTerminal routes a run's progress lines (*log) to stderr as
// warnings and prints its banner there, but only for a human at a
// terminal: pipes and cron get only the report.
func progressOnTerminal(c *ucli.Context, log *func(format string, a ...any), banner string, args ...any) {
	if !isTerminal(c.App.ErrWriter) {
		return
	}
	*log = func(format string, a ...any) { warnf(c, format, a...) }
	fmt.Fprintf(c.App.ErrWriter, banner, args...)
}
