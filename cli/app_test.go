package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var so, se bytes.Buffer
	code = Main(append([]string{"hopcheck"}, args...), &so, &se)
	return code, so.String(), se.String()
}

// leaves walks the command tree: the commands that run (no subcommands).
func leaves(cmds []*ucli.Command, fn func(path string, c *ucli.Command)) {
	for _, c := range cmds {
		if len(c.Subcommands) > 0 {
			leaves(c.Subcommands, func(p string, sub *ucli.Command) { fn(c.Name+" "+p, sub) })
			continue
		}
		fn(c.Name, c)
	}
}

// The output flags are on every command that writes a report, and only
// there.
func TestOutputFlagsOnReportCommandsOnly(t *testing.T) {
	want := map[string]bool{"run": true, "trace": true, "tcp connect": true, "tcp concurrency": true, "tcp data": true,
		"tcp idle": true, "soak": true, "diff": true, "demo": true}
	seen := 0
	leaves(newApp(nil, nil).Commands, func(path string, c *ucli.Command) {
		has := map[string]bool{}
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				has[n] = true
			}
		}
		if want[path] {
			seen++
		}
		if has["format"] != want[path] || has["output"] != want[path] || has["o"] != want[path] {
			t.Errorf("%s: --format %v, --output %v, -o %v; want %v", path, has["format"], has["output"], has["o"], want[path])
		}
	})
	if seen != len(want) {
		t.Errorf("found %d of the %d report commands", seen, len(want))
	}
}

func TestOutputFlagsRefusedWhereNoReport(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--format", "json"},
		{"serve", "-o", "x.json"},
		{"--format", "json", "serve"},
		{"-o", "x", "completion", "bash"},
		{"man", "--format", "json"},
	} {
		code, so, se := runMain(t, args...)
		if code != ExitUsage || so != "" || strings.Count(strings.TrimSpace(se), "\n") != 0 || !strings.Contains(se, "-") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, code, so, se)
		}
	}
}

// `tcp TEST --format json -o FILE` after the test's name: bad input is
// still reported for the right flag (the output flags parsed), and a
// connect test toward a loopback listener writes its JSON report.
func TestTCPOutputFlagsAfterTest(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	code, _, se := runMain(t, "tcp", "idle", "--format", "json", "-o", out, "--idle-max", "500ms", "tcp://127.0.0.1:7")
	if code != ExitUsage || !strings.Contains(se, "500ms") {
		t.Fatalf("exit %d stderr %q; want exit 2 naming --idle-max 500ms", code, se)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	code, so, se := runMain(t, "tcp", "connect", "--format", "json", "-o", out, "--count", "2", "--rate", "50", "tcp://"+ln.Addr().String())
	if code != ExitOK || so != "" {
		t.Fatalf("exit %d stdout %q stderr %q; want exit 0 and the report in %s", code, so, se, out)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Test    string `json:"test"`
		Results []struct {
			Counts map[string]int `json:"counts"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &rep); err != nil || rep.Test != "connect" || len(rep.Results) != 1 || rep.Results[0].Counts["ok"] != 2 {
		t.Fatalf("report %s (%v); want a connect report with 2 ok connections", data, err)
	}
}

func TestVersion(t *testing.T) {
	code, so, _ := runMain(t, "--version")
	lines := strings.Split(strings.TrimSpace(so), "\n")
	if code != ExitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "hopcheck ") || !strings.HasPrefix(lines[1], "commit ") || !strings.HasPrefix(lines[2], "go1.") {
		t.Fatalf("--version: exit %d, %q; want version, commit and Go version lines", code, so)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		in, want buildInfo
	}{
		{buildInfo{Version: "dev"}, buildInfo{Version: "v1.2.3", Commit: "0123456789ab-dirty", GoVersion: "go1.99.1"}},
		{buildInfo{Version: "v2.0.0", Commit: "feedbeef"}, buildInfo{Version: "v2.0.0", Commit: "feedbeef", GoVersion: "go1.99.1"}},
	} {
		if got := fillFromBuildInfo(tc.in, bi); got != tc.want {
			t.Errorf("fillFromBuildInfo(%+v) = %+v; want %+v", tc.in, got, tc.want)
		}
	}
	if got := fillFromBuildInfo(buildInfo{Version: "dev"}, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}); got.Version != "dev" || got.Commit != "unknown" {
		t.Errorf("no VCS stamp: %+v; want version dev, commit unknown", got)
	}
}

func TestCompletionAndMan(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -o bashdefault -o default -F _hopcheck hopcheck", "zsh": "#compdef hopcheck"} {
		code, so, _ := runMain(t, "completion", shell)
		if code != ExitOK || !strings.Contains(so, want) || !strings.Contains(so, "--generate-bash-completion") {
			t.Errorf("completion %s: exit %d, %q", shell, code, so)
		}
	}
	if code, _, se := runMain(t, "completion", "fish"); code != ExitUsage || !strings.Contains(se, "fish") {
		t.Errorf("completion fish: exit %d, %q; want exit 2 naming fish", code, se)
	}
	// What the scripts ask the binary for (urfave/cli reads the words
	// from os.Args).
	saved := os.Args
	os.Args = []string{"hopcheck", "--generate-bash-completion"}
	code, so, _ := runMain(t, os.Args[1:]...)
	os.Args = []string{"hopcheck", "tcp", "idle", "--tok", "--generate-bash-completion"}
	_, flags, _ := runMain(t, os.Args[1:]...)
	os.Args = saved
	if strings.TrimSpace(flags) != "--token-file" {
		t.Errorf("completion of tcp idle --tok: %q; want --token-file", flags)
	}
	for _, cmd := range []string{"run", "trace", "tcp", "soak", "diff", "completion", "man"} {
		if code != ExitOK || !strings.Contains("\n"+so, "\n"+cmd+"\n") {
			t.Errorf("completion words %q (exit %d): want %s", so, code, cmd)
		}
	}
	if strings.Contains(so, "lab-serve") {
		t.Errorf("completion offers the hidden lab-serve")
	}
	code, so, _ = runMain(t, "man")
	for _, want := range []string{".TH hopcheck 1", "tcp", "soak", "--token-file", "--metrics-file"} {
		if code != ExitOK || !strings.Contains(so, want) {
			t.Errorf("man: exit %d, page lacks %q", code, want)
		}
	}
	if strings.Contains(so, "lab-serve") {
		t.Errorf("man page documents the hidden lab-serve")
	}
}
