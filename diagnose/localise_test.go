package diagnose

import (
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

func TestInFlowSkipped(t *testing.T) {
	for _, tc := range []struct {
		name       string
		idle, max  time.Duration
		run        bool
		wantReason string
	}{
		{name: "short idle, default limit", idle: 10 * time.Second, run: true},
		{name: "at the default limit", idle: DefaultMaxInFlowWait, run: true},
		{name: "hour-long idle, default limit", idle: 62 * time.Minute, wantReason: "idle 1h2m0s to expire, beyond --in-flow-max 15m0s"},
		{name: "hour-long idle, raised limit", idle: 62 * time.Minute, max: 2 * time.Hour, run: true},
		{name: "lowered limit", idle: 6 * time.Minute, max: 5 * time.Minute, wantReason: "beyond --in-flow-max 5m0s"},
		{name: "disabled", idle: 10 * time.Second, max: -1, wantReason: "disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := inFlowSkipped(tc.idle, tc.max)
			if tc.run {
				if got != nil {
					t.Fatalf("inFlowSkipped(%v, %v) = %+v, want it run", tc.idle, tc.max, got)
				}
				return
			}
			if got == nil || got.Behaviour != InFlowNotTested || !strings.Contains(got.Reason, tc.wantReason) {
				t.Fatalf("inFlowSkipped(%v, %v) = %+v, want not-tested with %q", tc.idle, tc.max, got, tc.wantReason)
			}
		})
	}
}

func TestReportMeasured(t *testing.T) {
	hop := trace.Trace{Hops: []trace.Hop{{TTL: 1}}}
	conn := tcpcheck.Result{Connections: []tcpcheck.ConnRecord{{}}}
	for _, c := range []struct {
		name string
		r    Report
		want bool
	}{
		{"no targets", Report{}, false},
		{"nothing answered", Report{Targets: []TargetReport{{Traces: []trace.Trace{{}}, Tests: map[string]tcpcheck.Result{"connect": {}}}}}, false},
		{"a hop answered", Report{Targets: []TargetReport{{}, {Traces: []trace.Trace{hop}}}}, true},
		{"a connection was made", Report{Targets: []TargetReport{{Tests: map[string]tcpcheck.Result{"idle": conn}}}}, true},
	} {
		if got := c.r.Measured(); got != c.want {
			t.Errorf("%s: Measured() = %v, want %v", c.name, got, c.want)
		}
	}
}
