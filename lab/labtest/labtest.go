// Package labtest lets tests use the namespace lab: Require skips (or, with
// HOPCHECK_LAB=required, fails) where a lab cannot be built, and Build
// builds one that is torn down with the test.
package labtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
)

// RequiredEnv set to "required" turns a missing lab into a test failure.
const RequiredEnv = "HOPCHECK_LAB"

// Missing returns why a lab cannot be built here, or "" if it can.
func Missing() string { return lab.Missing() }

// Require skips t when a lab cannot be built here, with the reason; with
// HOPCHECK_LAB=required it fails t instead.
func Require(t testing.TB) {
	t.Helper()
	why := Missing()
	if why == "" {
		return
	}
	if os.Getenv(RequiredEnv) == "required" {
		t.Fatalf("%s (%s=required)", why, RequiredEnv)
	}
	t.Skipf("%s; set %s=required to fail instead", why, RequiredEnv)
}

// Build requires a lab, builds sc with t's logging and registers Close as
// a cleanup (and on SIGINT/SIGTERM). If opt.Binary is empty it is
// Binary(t).
func Build(t testing.TB, sc lab.Scenario, opt lab.Options) *lab.Lab {
	t.Helper()
	Require(t)
	if opt.Log == nil {
		opt.Log = t.Logf
	}
	if opt.Binary == "" {
		opt.Binary = Binary(t)
	}
	l, err := lab.Build(context.Background(), sc, opt)
	if err != nil {
		t.Fatalf("building lab: %v", err)
	}
	l.CloseOnSignal()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab %s server log:\n%s", l.ID, l.ServerLog())
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	return l
}

// BinaryEnv names a prebuilt hopcheck binary for lab tests.
const BinaryEnv = "HOPCHECK_BIN"

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// Binary returns the hopcheck binary for lab tests: $HOPCHECK_BIN if set,
// else one `go build` of the module's main package per test process (into
// a temp dir that a later process removes once this one is gone).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	buildOnce.Do(func() { builtPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("building hopcheck for the lab: %v", buildErr)
	}
	return builtPath
}

const binDirPrefix = "hopcheck-labtest-"

func build() (string, error) {
	removeStaleBinaries()
	dir := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "hopcheck")
	cmd := exec.Command("go", "build", "-o", out, "github.com/hopcheck/hopcheck")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, strings.TrimSpace(string(msg)))
	}
	return out, nil
}

// removeStaleBinaries removes build dirs of test processes that are gone.
func removeStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), binDirPrefix))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// requireProgram skips t, with the reason why, when a real server program
// the test needs cannot run here (why empty: it can); with
// HOPCHECK_LAB=required it fails t instead (.ci/run installs the
// packages).
func requireProgram(t testing.TB, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if os.Getenv(RequiredEnv) == "required" {
		t.Fatalf("%s (%s=required)", why, RequiredEnv)
	}
	t.Skipf("%s; set %s=required to fail instead", why, RequiredEnv)
}
