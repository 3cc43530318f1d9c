package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Two real idle reports of the same path, once with router 2's idle
// timeout at 10 s and once at 6 s (`hopcheck run` is not in yet, so the
// reports are `hopcheck tcp idle`'s): diff reports exactly that change,
// exit 1; the same report against itself is no change, exit 0.
func TestDiffIdleTimeoutChange(t *testing.T) {
	t.Parallel() // it mostly waits
	var labs [2]*lab.Lab
	for i, timeout := range []time.Duration{10 * time.Second, 6 * time.Second} {
		rs := make([]lab.Router, 3)
		rs[1].IdleTimeout, rs[1].IdleAction = timeout, lab.IdleActionReset
		labs[i] = buildLab(t, lab.Scenario{Name: "diff-idle", Routers: rs})
	}
	dir := t.TempDir()
	files := [2]string{filepath.Join(dir, "old.json"), filepath.Join(dir, "new.json")}
	var wg sync.WaitGroup
	var reports [2]tcpcheck.Report
	for i := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := labs[i]
			r := runIn(t, l, l.ClientNS, nil, "--format", "json", "tcp", "idle", "-4", "--idle-max", "20s", "--no-verify",
				"--ca-file", l.CAFile, "https://"+lab.ServerName)
			if r.code != 1 {
				t.Errorf("idle run %d: exit %d\n%s", i, r.code, r.stderr)
				return
			}
			if err := json.Unmarshal([]byte(r.stdout), &reports[i]); err != nil {
				t.Errorf("idle run %d: %v", i, err)
			}
			os.WriteFile(files[i], []byte(r.stdout), 0o644)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r := runLocal(t, dir, "--format", "json", "diff", files[0], files[1])
	if r.code != 1 {
		t.Fatalf("diff exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	d := decodeJSON[history.Diff](t, r)
	if !d.Material || len(d.Findings) != 1 || len(d.Paths) != 0 || len(d.Rates) != 0 {
		t.Fatalf("diff %+v", d)
	}
	f := d.Findings[0]
	if f.Change != "changed" || f.Kind != tcpcheck.KindIdleReset || len(f.Details) != 1 || !strings.HasPrefix(f.Details[0], "idle timeout ") ||
		f.Old == nil || f.New == nil || f.Old.IdleTimeoutS < 9 || f.Old.IdleTimeoutS > 11 || f.New.IdleTimeoutS < 5 || f.New.IdleTimeoutS > 7 {
		t.Errorf("finding change %+v", f)
	}
	// The same through the history directory, in text.
	hist := filepath.Join(dir, "hist")
	for i, rep := range reports {
		if _, err := history.Save(hist, "tcp", rep, time.Now().Add(time.Duration(i)*time.Hour), history.Retention{Keep: 5}); err != nil {
			t.Fatal(err)
		}
	}
	r = runLocal(t, dir, "diff", "--history", hist, "--last", "2")
	if r.code != 1 || !strings.Contains(r.stdout, "finding changed idle-reset") || !strings.Contains(r.stdout, "idle timeout") {
		t.Errorf("history diff exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("diff:\n%s", r.stdout)
	r = runLocal(t, dir, "diff", files[0], files[0])
	if r.code != 0 || !strings.Contains(r.stdout, "no material change") {
		t.Errorf("self diff exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runLocal(t, dir, "diff", files[0])
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("one argument: exit %d, stderr %q", r.code, r.stderr)
	}
}
