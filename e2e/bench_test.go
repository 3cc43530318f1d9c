package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
)

// BenchmarkLabTraceVsTraceroute compares the wall time of `hopcheck trace`
// with traceroute's for the same probe count (3 per hop, up to the
// destination) on the foundation lab path: six routers, routers 2 and 4
// silent. It reports the median of 7 runs of each and their ratio
// (target ≤ 1.0). Needs root and traceroute.
func BenchmarkLabTraceVsTraceroute(b *testing.B) {
	if _, err := exec.LookPath("traceroute"); err != nil {
		b.Skip("traceroute not installed (apt-get install traceroute)")
	}
	l := buildLab(b, silentChain())
	dst := l.Server4.String()
	pairs := []struct {
		name      string
		hopcheck  []string
		reference []string
	}{
		{"udp", []string{binary, "trace", "-n", "--format", "json", "--protocol", "udp", "--queries", "3", dst},
			[]string{"traceroute", "-n", "-q", "3", dst}},
		{"tcp443", []string{binary, "trace", "-n", "--format", "json", "--protocol", "tcp", "--queries", "3", dst + ":443"},
			[]string{"traceroute", "-n", "-q", "3", "-T", "-p", "443", dst}},
	}
	for i := 0; i < b.N; i++ {
		for _, p := range pairs {
			hc := medianWall(b, l, p.hopcheck, 7)
			ref := medianWall(b, l, p.reference, 7)
			ratio := hc.Seconds() / ref.Seconds()
			b.ReportMetric(ratio, "ratio-"+p.name)
			b.ReportMetric(float64(hc.Milliseconds()), "hopcheck-ms-"+p.name)
			b.ReportMetric(float64(ref.Milliseconds()), "traceroute-ms-"+p.name)
			fmt.Printf("%-7s hopcheck %6.0f ms  traceroute %6.0f ms  ratio %.2f (target <= 1.0)\n",
				p.name, float64(hc.Microseconds())/1000, float64(ref.Microseconds())/1000, ratio)
		}
	}
}

// medianWall runs argv n times in the client namespace and returns the
// median wall time.
func medianWall(b *testing.B, l *lab.Lab, argv []string, n int) time.Duration {
	b.Helper()
	var ds []time.Duration
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := l.Command(ctx, l.ClientNS, argv[0], argv[1:]...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		cancel()
		if err != nil {
			b.Fatalf("%v: %v\n%s", argv, err, out)
		}
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}
