// Package e2e runs the built hopcheck binary inside namespace labs and
// asserts on its JSON output. Every test here needs root (it builds
// network namespaces); without it the tests skip, or fail when
// HOPCHECK_LAB=required.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
)

// binary is the hopcheck binary built once for all tests.
var binary string

func TestMain(m *testing.M) {
	if prebuilt := os.Getenv(labtest.BinaryEnv); prebuilt != "" {
		binary = prebuilt
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "hopcheck-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hopcheck")
	build := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", binary, "..") // as make build
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hopcheck: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildLab builds a scenario and tears it down when the test ends (or on
// SIGINT/SIGTERM).
func buildLab(t testing.TB, sc lab.Scenario) *lab.Lab {
	t.Helper()
	return labtest.Build(t, sc, lab.Options{Binary: binary})
}

// labHost is the lab server's name; it resolves (inside the client
// namespace only, see lab.Lab.isolateDNS) to the server's IPv4 and IPv6
// addresses.
const labHost = lab.ServerName

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// runIn runs hopcheck with args inside namespace ns. prefix, when set, is
// prepended to the command (e.g. setpriv to drop privileges).
func runIn(t *testing.T, l *lab.Lab, ns string, prefix []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	argv := append(append(append([]string{}, prefix...), binary), args...)
	return runCmd(t, l.Command(ctx, ns, argv[0], argv[1:]...))
}

// runLocal runs hopcheck in the test's own namespace (only for input
// validation that must fail before anything is sent).
func runLocal(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	return runCmd(t, cmd)
}

// runCmd runs cmd and returns its output and exit code; only a failure to
// start (not a non-zero exit) fails the test.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %v: %v", cmd.Args, err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: so.String(), stderr: se.String(), code: code}
}

func decodeJSON[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode JSON (exit %d): %v\nstdout:\n%s\nstderr:\n%s", r.code, err, r.stdout, r.stderr)
	}
	return v
}
