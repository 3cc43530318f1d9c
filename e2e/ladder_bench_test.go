package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// ladderCase is one idle box of the ladder benchmark: router 2 of 3
// forgets flows idle T and resets or drops their next packet.
type ladderCase struct {
	T      time.Duration
	action string // lab.IdleActionReset or lab.IdleActionDrop
}

// ladderRun is what one `tcp idle` found against a ladderCase.
type ladderRun struct {
	estimate time.Duration
	wall     time.Duration
	conns    int
	bracket  []float64
	kind     string
}

// runLadder builds the box and runs `tcp idle` once; it reports problems
// with Errorf (it may run in its own goroutine).
func runLadder(tb testing.TB, c ladderCase, idleMax time.Duration) ladderRun {
	tb.Helper()
	rs := make([]lab.Router, 3)
	rs[1].IdleTimeout, rs[1].IdleAction = c.T, c.action
	l := buildLab(tb, lab.Scenario{Name: fmt.Sprintf("ladder-%s-%.0f", c.action, c.T.Seconds()), Routers: rs})
	ctx, cancel := context.WithTimeout(context.Background(), 3*idleMax+time.Minute)
	defer cancel()
	cmd := l.Command(ctx, l.ClientNS, binary, "--format", "json", "tcp", "idle", "--idle-max", idleMax.String(), "--ca-file", l.CAFile,
		fmt.Sprintf("https://%s", l.Server4))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		tb.Errorf("tcp idle %v %s: %v\n%s", c.T, c.action, err, stderr.String())
		return ladderRun{wall: wall}
	}
	var rep tcpcheck.Report
	dec := json.NewDecoder(strings.NewReader(stdout.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		tb.Errorf("tcp idle %v %s: decode JSON: %v\n%s", c.T, c.action, err, stdout.String())
		return ladderRun{wall: wall}
	}
	run := ladderRun{wall: wall}
	if len(rep.Results) == 1 {
		run.conns = len(rep.Results[0].Connections)
	}
	if len(rep.Findings) == 1 {
		f := rep.Findings[0]
		run.estimate = time.Duration(f.IdleTimeoutS * float64(time.Second))
		run.bracket, run.kind = f.IdleBracketS, f.Kind
	}
	return run
}

// BenchmarkLabIdleLadderGoals measures the idle ladder against boxes of
// 6, 20 and 60 s that reset or silently drop: the estimate and its error
// (goal ±5 % or ±0.3 s), wall time / T (goal 1.5; drops: + 2 s to see
// the loss) and the connections used (goal at most 16). The boxes run at
// once: the ladder mostly waits.
func BenchmarkLabIdleLadderGoals(b *testing.B) {
	var cases []ladderCase
	for _, T := range []time.Duration{6 * time.Second, 20 * time.Second, 60 * time.Second} {
		for _, a := range []string{lab.IdleActionReset, lab.IdleActionDrop} {
			cases = append(cases, ladderCase{T, a})
		}
	}
	for i := 0; i < b.N; i++ {
		runs := make([]ladderRun, len(cases))
		var wg sync.WaitGroup
		for j, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[j] = runLadder(b, c, 120*time.Second)
			}()
		}
		wg.Wait()
		for j, c := range cases {
			r := runs[j]
			T := c.T.Seconds()
			errS := r.estimate.Seconds() - T
			wallGoal := 1.5 * T
			if c.action == lab.IdleActionDrop {
				wallGoal += 2
			}
			ok := math.Abs(errS) <= max(0.05*T, 0.3) && r.wall.Seconds() <= wallGoal && r.conns <= 16
			fmt.Printf("idle ladder %-5s T=%3.0fs: estimate %6.2fs error %+5.2fs (%+5.1f %%) wall %6.1fs = %.2f T (goal %.1fs) connections %2d %s %v\n",
				c.action, T, r.estimate.Seconds(), errS, 100*errS/T, r.wall.Seconds(), r.wall.Seconds()/T, wallGoal, r.conns,
				map[bool]string{true: "ok", false: "MISSED"}[ok], r.bracket)
			b.ReportMetric(r.wall.Seconds()/T, fmt.Sprintf("wall/T-%s-%.0fs", c.action, T))
		}
	}
}
