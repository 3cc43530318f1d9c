package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/trace"
)

// restTime lets the routers' ICMP budgets (burst 6, 1/s) refill between
// benchmarked runs, so that each starts from a rested path as a user's
// first trace does.
const restTime = 7 * time.Second

// BenchmarkLabTraceVsTraceroute compares the wall time of `hopcheck trace`
// with traceroute's for the same probe count (3 per hop, up to the
// destination) on the foundation lab path: six routers, routers 2 and 4
// silent, the kernel's default ICMP limits. Every run starts from a rested
// path and must get every hop right; it reports the median of 5 runs of
// each, alternating between the two, and their ratio (target ≤ 1.0).
// Needs root and traceroute.
func BenchmarkLabTraceVsTraceroute(b *testing.B) {
	if _, err := exec.LookPath("traceroute"); err != nil {
		b.Skip("traceroute not installed (apt-get install traceroute)")
	}
	l := buildLab(b, silentChain())
	dst := l.Server4.String()
	silent := map[int]bool{2: true, 4: true}
	pairs := []struct {
		name      string
		hopcheck  []string
		reference []string
	}{
		{"udp", []string{binary, "trace", "-n", "--format", "json", "--protocol", "udp", "--queries", "3", dst},
			[]string{"traceroute", "-n", "-q", "3", dst}},
		{"tcp443", []string{binary, "trace", "-n", "--format", "json", "--protocol", "tcp", "--queries", "3", dst + ":443"},
			[]string{"traceroute", "-n", "-q", "3", "-T", "-p", "443", dst}},
		{"icmp", []string{binary, "trace", "-n", "--format", "json", "--protocol", "icmp", "--queries", "3", dst},
			[]string{"traceroute", "-n", "-q", "3", "-I", dst}},
	}
	for i := 0; i < b.N; i++ {
		// Process start alone (a Go binary starts slower than a C one):
		// what of a wall-time difference is start-up, not tracing.
		hcStart := medianStart(b, l, []string{binary, "--version"})
		refStart := medianStart(b, l, []string{"traceroute", "-V"})
		b.ReportMetric(float64(hcStart.Microseconds())/1000, "hopcheck-start-ms")
		b.ReportMetric(float64(refStart.Microseconds())/1000, "traceroute-start-ms")
		fmt.Printf("start-up alone: hopcheck --version %.1f ms, traceroute -V %.1f ms\n",
			float64(hcStart.Microseconds())/1000, float64(refStart.Microseconds())/1000)
		for _, p := range pairs {
			hc, hcOut, ref, refOut := medianWallPair(b, l, p.hopcheck, p.reference, 5)
			hcRight := hopcheckHopsRight(hcOut, l.Router4, silent, l.Server4)
			refRight := tracerouteHopsRight(refOut, l.Router4, silent, l.Server4)
			ratio := hc.Seconds() / ref.Seconds()
			b.ReportMetric(ratio, "ratio-"+p.name)
			b.ReportMetric(float64(hc.Milliseconds()), "hopcheck-ms-"+p.name)
			b.ReportMetric(float64(ref.Milliseconds()), "traceroute-ms-"+p.name)
			net := (hc - hcStart).Seconds() / (ref - refStart).Seconds()
			b.ReportMetric(net, "ratio-after-start-"+p.name)
			fmt.Printf("%-7s hopcheck %6.0f ms (every hop right: %v)  traceroute %6.0f ms (every hop right: %v)  ratio %.2f (target <= 1.0), %.2f without start-up\n",
				p.name, float64(hc.Microseconds())/1000, hcRight, float64(ref.Microseconds())/1000, refRight, ratio, net)
			missedTarget(b, hcRight && refRight, "%s: a run got a hop wrong (hopcheck right: %v, traceroute right: %v)", p.name, hcRight, refRight)
			missedTarget(b, ratio <= 1.0, "%s: hopcheck took %.2f× traceroute's time (target <= 1.0)", p.name, ratio)
		}
	}
}

// hopcheckHopsRight: every run's JSON lists each router at its hop (silent
// ones silent), the server at the end, every probe of an answering hop
// answered.
func hopcheckHopsRight(outs []string, routers []netip.Addr, silent map[int]bool, server netip.Addr) bool {
	for _, out := range outs {
		var rep trace.Report
		if json.Unmarshal([]byte(out), &rep) != nil || len(rep.Traces) != 1 {
			return false
		}
		tr := rep.Traces[0]
		if !tr.Reached || len(tr.Hops) != len(routers)+1 {
			return false
		}
		for i, h := range tr.Hops {
			want := server
			if i < len(routers) {
				want = routers[i]
			}
			if silent[h.TTL] != (h.Received == 0) || (!silent[h.TTL] && (h.Responders[0].Address != want.String() || h.Received != tr.Queries)) {
				return false
			}
		}
	}
	return true
}

var tracerouteHop = regexp.MustCompile(`^\s*(\d+)\s+(.*)$`)

// tracerouteHopsRight: every run's text output answers 3 of 3 at each
// answering hop from the right address, * * * at the silent ones.
func tracerouteHopsRight(outs []string, routers []netip.Addr, silent map[int]bool, server netip.Addr) bool {
	for _, out := range outs {
		seen := 0
		for _, line := range strings.Split(out, "\n") {
			m := tracerouteHop.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			var ttl int
			fmt.Sscan(m[1], &ttl)
			seen++
			stars := strings.Count(m[2], "*")
			want := server
			if ttl <= len(routers) {
				want = routers[ttl-1]
			}
			switch {
			case silent[ttl] && stars != 3:
				return false
			case !silent[ttl] && (stars != 0 || !strings.HasPrefix(strings.TrimSpace(m[2]), want.String())):
				return false
			}
		}
		if seen != len(routers)+1 {
			return false
		}
	}
	return true
}

// medianWallPair runs a and b n times each in the client namespace,
// alternating (so that a change in the machine's load meets both alike),
// each run after a rest, and returns each one's median wall time and
// outputs.
func medianWallPair(tb *testing.B, l *lab.Lab, a, b []string, n int) (time.Duration, []string, time.Duration, []string) {
	tb.Helper()
	var da, db []time.Duration
	var outA, outB []string
	for i := 0; i < n; i++ {
		for _, x := range []struct {
			argv []string
			ds   *[]time.Duration
			outs *[]string
		}{{a, &da, &outA}, {b, &db, &outB}} {
			time.Sleep(restTime)
			d, out, _ := timedRun(tb, l, x.argv)
			*x.ds = append(*x.ds, d)
			*x.outs = append(*x.outs, out)
		}
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	return median(da), outA, median(db), outB
}

// medianStart is the median wall time of 7 runs of a command that only
// starts and exits.
func medianStart(b *testing.B, l *lab.Lab, argv []string) time.Duration {
	b.Helper()
	var ds []time.Duration
	for i := 0; i < 7; i++ {
		d, _, _ := timedRun(b, l, argv)
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// timedTrace runs `trace -P protocol` toward port 443 of every address,
// timed as timedRun, and decodes its JSON report.
func timedTrace(b *testing.B, l *lab.Lab, protocol string, addrs []netip.Addr) (time.Duration, trace.Report, float64) {
	b.Helper()
	argv := []string{binary, "--format", "json", "trace", "-n", "--protocol", protocol}
	for _, a := range addrs {
		argv = append(argv, netip.AddrPortFrom(a, 443).String())
	}
	d, out, rss := timedRun(b, l, argv)
	var rep trace.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		b.Fatalf("not JSON: %v", err)
	}
	return d, rep, rss
}

// timedRun runs argv once in the client namespace: wall time, stdout and
// the peak RSS in MB.
func timedRun(b *testing.B, l *lab.Lab, argv []string) (time.Duration, string, float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, l.ClientNS, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%v: %v\n%s", argv, err, stderr.String())
	}
	var rssMB float64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rssMB = float64(ru.Maxrss) / 1024 // ip netns exec execs the command: its own peak
	}
	return d, string(out), rssMB
}

// BenchmarkLabTraceManyAddresses: cells found and wall time of `trace -P
// tcp` to 1 and to 48 addresses of one server behind the same four
// routers, from a rested path (target: ≥ 95 % of the cells in ≤ 3 s).
func BenchmarkLabTraceManyAddresses(b *testing.B) {
	l, addrs := manyAddressLab(b, 48)
	for i := 0; i < b.N; i++ {
		for _, n := range []int{1, len(addrs)} {
			time.Sleep(restTime)
			d, rep, _ := timedTrace(b, l, "tcp", addrs[:n])
			found, want := answeredCells(rep, 5)
			b.ReportMetric(float64(found)/float64(want)*100, fmt.Sprintf("cells-pct-%d", n))
			b.ReportMetric(d.Seconds(), fmt.Sprintf("wall-s-%d", n))
			fmt.Printf("trace -P tcp to %2d addresses: %d of %d (address, hop) cells (%.1f %%) in %.2f s (target >= 95 %% in <= 3 s)\n",
				n, found, want, float64(found)/float64(want)*100, d.Seconds())
			missedTarget(b, float64(found) >= 0.95*float64(want) && d <= 3*time.Second,
				"%d addresses: %d of %d cells in %.2f s (target >= 95 %% in <= 3 s)", n, found, want, d.Seconds())
		}
	}
}

// BenchmarkLabTraceRSS: peak RSS of `trace -P all` to 64 addresses (192
// traces) behind the same routers (target ≤ 40 MB; it was about 62 MB).
func BenchmarkLabTraceRSS(b *testing.B) {
	l, addrs := manyAddressLab(b, 64)
	for i := 0; i < b.N; i++ {
		time.Sleep(restTime)
		d, rep, rss := timedTrace(b, l, "all", addrs)
		found, want := answeredCells(rep, 5)
		b.ReportMetric(rss, "peak-rss-MB")
		fmt.Printf("trace -P all to %d addresses (%d traces): peak RSS %.1f MB (target <= 40 MB), %d of %d cells, %.2f s\n",
			len(addrs), len(rep.Traces), rss, found, want, d.Seconds())
		missedTarget(b, rss <= 40, "peak RSS %.1f MB (target <= 40 MB)", rss)
	}
}

// missedTarget fails the benchmark (after it has printed its figures)
// when a speed or memory target is not met: `make bench` is the check of
// these targets.
func missedTarget(b *testing.B, met bool, format string, args ...any) {
	b.Helper()
	if !met {
		b.Errorf("target missed: "+format, args...)
	}
}
