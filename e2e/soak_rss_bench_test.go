package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
)

// BenchmarkLabSoakRSS runs a real 11-minute soak in the lab at 10
// requests/s and reads the soak process's resident memory at minute 1 and
// minute 10: memory must stay flat (issue: ±10 %). It takes 11 minutes, so
// it runs only with HOPCHECK_BENCH_SOAK=1 (make bench-soak).
func BenchmarkLabSoakRSS(b *testing.B) {
	if os.Getenv("HOPCHECK_BENCH_SOAK") != "1" {
		b.Skip("11-minute benchmark: set HOPCHECK_BENCH_SOAK=1 (make bench-soak)")
	}
	l := buildLab(b, lab.Scenario{Name: "soak-rss", Routers: make([]lab.Router, 2)})
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		// ip netns exec execs the command: the pid is the soak's own.
		cmd := l.Command(ctx, l.ClientNS, binary, "--format", "json", "-o", os.DevNull, "soak", "--duration", "11m",
			"--rate", "10", "-4", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), "https://"+lab.ServerName)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var samples []int
		for minute := 1; minute <= 10; minute++ {
			time.Sleep(time.Minute)
			samples = append(samples, rssKiB(b, cmd.Process.Pid))
		}
		fmt.Printf("soak RSS by minute (KiB): %v\n", samples)
		rss1, rss10 := samples[0], samples[9]
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		cancel()
		growth := float64(rss10-rss1) / float64(rss1)
		b.ReportMetric(float64(rss1), "rss-kib-minute1")
		b.ReportMetric(float64(rss10), "rss-kib-minute10")
		b.ReportMetric(growth*100, "rss-growth-%")
		fmt.Printf("soak RSS: minute 1 %d KiB, minute 10 %d KiB, growth %+.1f %% (target within ±10 %%)\n", rss1, rss10, growth*100)
		if growth > 0.10 || growth < -0.10 {
			b.Errorf("RSS changed by %+.1f %% between minute 1 and minute 10", growth*100)
		}
	}
}

// rssKiB reads VmRSS of a process.
func rssKiB(b *testing.B, pid int) int {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("soak process: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.Fields(rest)[0])
			if err == nil {
				return n
			}
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
