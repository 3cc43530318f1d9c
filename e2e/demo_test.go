package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab/labtest"
)

// labsOf lists the namespaces a hopcheck process with pid made.
func labsOf(t *testing.T, pid int) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var mine []string
	for _, line := range strings.Split(string(out), "\n") {
		name := strings.Fields(line + " x")[0]
		if strings.HasPrefix(name, "hc"+strconv.Itoa(pid)+"x") {
			mine = append(mine, name)
		}
	}
	return mine
}

// TestDemoEndToEnd runs the embedded demo as a user would: it builds its
// own lab (router 3 resets flows idle ≥ 8 s, the server caps connections at
// 12), diagnoses it with run --profile quick, and removes the lab.
func TestDemoEndToEnd(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	labtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "--format", "json", "demo")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if err != nil {
		// Findings are the point of a demo: it exits 0 once it ran as
		// designed (the report has them, checked below).
		t.Fatalf("demo: %v (want exit 0)\n%s", err, se.String())
	}
	if left := labsOf(t, cmd.Process.Pid); len(left) > 0 {
		t.Fatalf("demo left namespaces behind: %v", left)
	}
	rep := decodeJSON[diagnose.Report](t, result{stdout: so.String()})
	var idle, limit int
	for _, f := range rep.Findings {
		switch f.Kind {
		case "idle-reset":
			idle++
			if f.Hop != 3 || f.IdleTimeoutS < 7 || f.IdleTimeoutS > 9 {
				t.Errorf("idle-reset at hop %d after %.2fs; want hop 3, 8±1s", f.Hop, f.IdleTimeoutS)
			}
		case "concurrency-limit":
			limit++
			if f.Limit < 11 || f.Limit > 13 || string(f.Origin) != "server" {
				t.Errorf("concurrency-limit %d origin %s; want 12±1 server", f.Limit, f.Origin)
			}
		}
	}
	if idle == 0 || limit == 0 {
		t.Fatalf("demo findings %v; want idle-reset and concurrency-limit", kindsOf(rep))
	}
	for _, tg := range rep.Targets {
		if tg.Localisation == nil || tg.Localisation.InFlow == nil || tg.Localisation.InFlow.Hop != 3 {
			t.Errorf("%s %s: in-flow localisation %+v, want hop 3", tg.Target, tg.Address, tg.Localisation)
		}
	}
}

// TestDemoInterruptTearsDownLab: Ctrl-C during the demo removes its lab.
func TestDemoInterruptTearsDownLab(t *testing.T) {
	labtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "demo", "--scenario", "clean")
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(labsOf(t, cmd.Process.Pid)) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if len(labsOf(t, cmd.Process.Pid)) == 0 {
		t.Fatalf("the demo never built its lab:\n%s", se.String())
	}
	time.Sleep(3 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if left := labsOf(t, cmd.Process.Pid); len(left) > 0 {
		t.Fatalf("after SIGINT the demo left namespaces behind: %v\n%s", left, se.String())
	}
}
