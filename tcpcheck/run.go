package tcpcheck

import (
	"context"
	"fmt"
	"time"
)

// Test is one kind of test `hopcheck tcp` and `hopcheck run` can run.
type Test struct {
	Name  string
	Usage string // one line for the command's help
	Run   func(ctx context.Context, opt Options, job Job, start time.Time) (Result, []Finding)
}

// Tests is every test, in the order reports list them (the registry: the
// CLI's subcommands, the report's sections and run's phases read it).
var Tests = []Test{
	{"connect", "open N connections at a rate: failure rates with 95 % intervals, resets by origin", RunConnect},
	{"concurrency", "ramp simultaneously open connections up to --conns: where are new or open ones refused or reset", RunConcurrency},
	{"data", "a large transfer: mid-stream resets, stalls (PMTU black hole), retransmissions and MSS", RunData},
	{"idle", "find the idle timeout of the path or server: how long a pooled connection may idle, who kills it, how", RunIdle},
}

// TestNames are the names of Tests, in order.
func TestNames() []string {
	names := make([]string, len(Tests))
	for i, t := range Tests {
		names[i] = t.Name
	}
	return names
}

// LookupTest finds a test by name.
func LookupTest(name string) (Test, bool) {
	for _, t := range Tests {
		if t.Name == name {
			return t, true
		}
	}
	return Test{}, false
}

// Run runs test (see Tests) against every job in turn and returns the
// report.
func Run(ctx context.Context, test string, opt Options, jobs []Job) Report {
	start := opt.Dial.now()
	r := Report{SchemaVersion: SchemaVersion, Test: test, StartedAt: start.UTC(), Evidence: "socket", Results: []Result{}, Findings: []Finding{}}
	if opt.Observe {
		r.Evidence = "packets"
	}
	t, known := LookupTest(test)
	for _, job := range jobs {
		if ctx.Err() != nil {
			r.Incomplete = true
			break
		}
		var res Result
		var fs []Finding
		if known {
			res, fs = t.Run(ctx, opt, job, start)
		} else {
			res = Result{Target: job.Target.Name(), Address: job.Addr.String(), Error: fmt.Sprintf("unknown test %q", test)}
		}
		for o, n := range res.Counts {
			if n == 0 {
				delete(res.Counts, o)
			}
		}
		res.PhaseStats = phaseStats(res.Connections)
		r.Results = append(r.Results, res)
		r.Findings = append(r.Findings, fs...)
	}
	if ctx.Err() != nil {
		r.Incomplete = true
	}
	r.DurationS = seconds(opt.Dial.now().Sub(start))
	return r
}
