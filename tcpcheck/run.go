package tcpcheck

import (
	"context"
	"fmt"
	"time"
)

// Run runs test (connect, concurrency, data, idle) against every job in
// turn and returns the report.
func Run(ctx context.Context, test string, opt Options, jobs []Job) Report {
	start := time.Now()
	r := Report{SchemaVersion: SchemaVersion, Test: test, StartedAt: start.UTC(), Evidence: "socket",
		TLSProfile: opt.Dial.TLSProfile.OrDefault(), Results: []Result{}, Findings: []Finding{}}
	if opt.Observe {
		r.Evidence = "packets"
	}
	for _, job := range jobs {
		if ctx.Err() != nil {
			r.Incomplete = true
			break
		}
		var res Result
		var fs []Finding
		switch test {
		case "idle":
			res, fs = RunIdle(ctx, opt, job, start)
		case "connect":
			res, fs = RunConnect(ctx, opt, job, start)
		case "concurrency":
			res, fs = RunConcurrency(ctx, opt, job, start)
		case "data":
			res, fs = RunData(ctx, opt, job, start)
		default:
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
	r.DurationS = seconds(time.Since(start))
	return r
}
