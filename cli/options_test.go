package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// validated checks that err is nil (want "") or a usage error (exit 2)
// whose one line contains want.
func validated(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("Validate() = %v; want nil", err)
		}
		return
	}
	var ee *exitError
	if err == nil || !errors.As(err, &ee) || ee.code != ExitUsage || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Validate() = %v; want a one-line usage error containing %q", err, want)
	}
}

var (
	sportradar = tcpcheck.PolicyFor([]tcpcheck.Target{{Spec: trace.Spec{Host: "api.betradar.com"}}})
	anywhere   = tcpcheck.PolicyFor(nil)
)

func TestTCPOptionsValidate(t *testing.T) {
	ok := tcpOptions{Test: "connect", Count: 50, Rate: 5, IdleMax: 15 * time.Minute, Stall: 10 * time.Second, Path: "/v1/users/whoami.xml", Policy: anywhere}
	for _, tc := range []struct {
		name string
		edit func(o *tcpOptions)
		want string
	}{
		{"defaults", func(o *tcpOptions) {}, ""},
		{"count 0", func(o *tcpOptions) { o.Count = 0 }, "--count 0"},
		{"rate 0", func(o *tcpOptions) { o.Rate = 0 }, "--rate 0"},
		{"rate 50 anywhere", func(o *tcpOptions) { o.Rate = 50 }, ""},
		{"rate 21 toward betradar", func(o *tcpOptions) { o.Rate, o.Policy = 21, sportradar }, "at most 20/s"},
		{"rate 21 toward betradar, not connect", func(o *tcpOptions) { o.Test, o.Rate, o.Policy = "data", 21, sportradar }, ""},
		{"idle-max 500ms", func(o *tcpOptions) { o.IdleMax = 500 * time.Millisecond }, "500ms"},
		{"stall 50ms", func(o *tcpOptions) { o.Stall = 50 * time.Millisecond }, "50ms"},
		{"conns 0", func(o *tcpOptions) { o.Conns, o.ConnsSet = 0, true }, "--conns 0"},
		{"conns 41 toward betradar", func(o *tcpOptions) { o.Conns, o.ConnsSet, o.Policy = 41, true, sportradar }, "--conns 41"},
		{"conns 40 toward betradar", func(o *tcpOptions) { o.Conns, o.ConnsSet, o.Policy = 40, true, sportradar }, ""},
		{"idle ladder 41", func(o *tcpOptions) { o.Test, o.Conns, o.ConnsSet = "idle", 41, true }, "at most 40"},
		{"conns 1001", func(o *tcpOptions) { o.Conns, o.ConnsSet = 1001, true }, "above 1000"},
		{"path without slash", func(o *tcpOptions) { o.Path = "whoami.xml" }, `"whoami.xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			validated(t, o.Validate(), tc.want)
		})
	}
	if w := (tcpOptions{Test: "idle"}).width(); w != 12 {
		t.Errorf("idle default width %d, want 12", w)
	}
	if w := (tcpOptions{Test: "concurrency"}).width(); w != 32 {
		t.Errorf("concurrency default width %d, want 32", w)
	}
}

func TestSoakOptionsValidate(t *testing.T) {
	ok := soakOptions{Duration: time.Hour, Rate: 1, FreshShare: 0.1, Pool: 8, CheckpointEvery: time.Minute, MinuteRing: 60, PerKind: 5,
		Path: "/v1/users/whoami.xml", Policy: anywhere}
	for _, tc := range []struct {
		name string
		edit func(o *soakOptions)
		want string
	}{
		{"defaults", func(o *soakOptions) {}, ""},
		{"duration 5s", func(o *soakOptions) { o.Duration = 5 * time.Second }, "5s"},
		{"rate 0", func(o *soakOptions) { o.Rate = 0 }, "--rate 0"},
		{"rate 1001", func(o *soakOptions) { o.Rate = 1001 }, "--rate 1001"},
		{"rate 11 toward betradar", func(o *soakOptions) { o.Rate, o.Policy = 11, sportradar }, "at most 10/s per address"},
		{"rate 11 anywhere", func(o *soakOptions) { o.Rate = 11 }, ""},
		{"fresh-share 1.5", func(o *soakOptions) { o.FreshShare = 1.5 }, "1.5"},
		{"pool 0", func(o *soakOptions) { o.Pool = 0 }, "--pool 0"},
		{"pool 40 toward betradar", func(o *soakOptions) { o.Pool, o.Policy = 40, sportradar }, "--pool 40"},
		{"pool 36 toward betradar", func(o *soakOptions) { o.Pool, o.Policy = 36, sportradar }, ""},
		{"pool 40 anywhere", func(o *soakOptions) { o.Pool = 40 }, ""},
		{"checkpoint-every 10ms", func(o *soakOptions) { o.CheckpointEvery = 10 * time.Millisecond }, "10ms"},
		{"minutes 0", func(o *soakOptions) { o.MinuteRing = 0 }, "--minutes 0"},
		{"evidence-per-kind 0", func(o *soakOptions) { o.PerKind = 0 }, "--evidence-per-kind 0"},
		{"path with space", func(o *soakOptions) { o.Path = "/a b" }, `"/a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			validated(t, o.Validate(), tc.want)
		})
	}
}

func TestRunOptionsValidate(t *testing.T) {
	ok := runOptions{Profile: "standard", InFlowMax: time.Minute, DataPath: tcpcheck.DefaultDataPath}
	for _, tc := range []struct {
		name string
		edit func(o *runOptions)
		want string
	}{
		{"defaults", func(o *runOptions) {}, ""},
		{"env", func(o *runOptions) { o.Env = "integration" }, ""},
		{"unknown env", func(o *runOptions) { o.Env = "moon" }, "moon"},
		{"env and target", func(o *runOptions) { o.Env, o.Targets = "replay", []string{"https://198.18.0.1"} }, "exclude"},
		{"bad target", func(o *runOptions) { o.Targets = []string{"ftp://198.18.0.1"} }, "ftp"},
		{"unknown profile", func(o *runOptions) { o.Profile = "slow" }, "slow"},
		{"idle-max 500ms", func(o *runOptions) { o.IdleMax = 500 * time.Millisecond }, "500ms"},
		{"in-flow-max negative", func(o *runOptions) { o.InFlowMax = -5 * time.Minute }, "-5m"},
		{"peer-url http", func(o *runOptions) { o.PeerURL = "http://198.18.0.1/peer" }, "http://198.18.0.1/peer"},
		{"data-path relative", func(o *runOptions) { o.DataPath = "markets.xml" }, "markets.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			validated(t, o.Validate(), tc.want)
		})
	}
	if got := (runOptions{}).targets(); len(got) != len(defaultTargets) {
		t.Errorf("no --target, no --env: %v; want the UOF production set", got)
	}
	if got := (runOptions{Env: "integration"}).targets(); got[0] != "https://stgapi.betradar.com" {
		t.Errorf("--env integration: %v", got)
	}
}

func TestStoreOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    storeOptions
		want string
	}{
		{"none", storeOptions{}, ""},
		{"history with retention", storeOptions{History: "h", Keep: history.Retention{Keep: 5, MaxAge: time.Hour}, KeepSet: true}, ""},
		{"keep negative", storeOptions{History: "h", Keep: history.Retention{Keep: -1}, KeepSet: true}, "--keep -1"},
		{"keep-age negative", storeOptions{History: "h", Keep: history.Retention{MaxAge: -time.Hour}, KeepSet: true}, "--keep-age -1h"},
		{"keep without history", storeOptions{Keep: history.Retention{Keep: 5}, KeepSet: true}, "need --history"},
		{"metrics not .prom", storeOptions{MetricsFile: "run.txt"}, "run.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) { validated(t, tc.s.Validate(), tc.want) })
	}
}

func TestServeOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    serveOptions
		want string
	}{
		{serveOptions{Listen: "127.0.0.1:9516", MaxConcurrent: 2}, ""},
		{serveOptions{Listen: ":9516", MaxConcurrent: 64}, ""},
		{serveOptions{Listen: "9516", MaxConcurrent: 2}, `"9516"`},
		{serveOptions{Listen: "127.0.0.1:9516", MaxConcurrent: 0}, "--max-concurrent 0"},
		{serveOptions{Listen: "127.0.0.1:9516", MaxConcurrent: 65}, "--max-concurrent 65"},
	} {
		validated(t, tc.o.Validate(), tc.want)
	}
}
