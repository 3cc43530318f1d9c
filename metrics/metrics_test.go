package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func report(incomplete bool) diagnose.Report {
	return diagnose.Report{SchemaVersion: 1, StartedAt: t0, DurationS: 90, Profile: "quick", Incomplete: incomplete,
		Targets: []diagnose.TargetReport{{Target: "https://lab", Address: "198.18.3.2", CulpritHop: 2,
			Traces: []trace.Trace{{Target: trace.Target{Protocol: "tcp"}, Reached: true, ReachedTTL: 4, Hops: []trace.Hop{
				{TTL: 1, Sent: 3, Received: 3, Responders: []trace.Responder{{Address: "198.18.0.2"}}, RTTms: trace.RTTStats{Avg: 1.5}},
				{TTL: 2, Sent: 3, Received: 0, LossPct: 100}}}},
			Tests: map[string]tcpcheck.Result{"idle": {ServerHop: 4, Idle: &tcpcheck.IdleResult{TimeoutS: 10},
				Connections: []tcpcheck.ConnRecord{{}, {}}, Counts: map[tcpcheck.Outcome]int{"ok": 1, "reset": 1}}}}},
		Findings: []diagnose.Finding{{Finding: tcpcheck.Finding{Kind: "idle-reset", Target: "https://lab", Address: "198.18.3.2", Hop: 2}}}}
}

func value(t *testing.T, text, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := parseText(t, []byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	f := fams[name]
	if f == nil {
		t.Fatalf("no %s in\n%s", name, text)
	}
next:
	for _, m := range f.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				found = found || (lp.GetName() == k && lp.GetValue() == v)
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("no %s%v in\n%s", name, labels, text)
	return 0
}

func TestWriteRunFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hopcheck.prom")
	if err := WriteRunFile(path, report(false)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	text := string(b)
	addr := map[string]string{"target": "https://lab", "address": "198.18.3.2"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hopcheck_run_complete", nil, 1},
		{"hopcheck_run_duration_seconds", nil, 90},
		{LastSuccessName, nil, float64(t0.Unix()) + 90},
		{"hopcheck_findings", map[string]string{"kind": "idle-reset"}, 1},
		{"hopcheck_findings", map[string]string{"kind": "nat"}, 0},
		{"hopcheck_findings", map[string]string{"kind": "midstream-close"}, 0},
		{"hopcheck_findings", map[string]string{"kind": "server-restart"}, 0},
		{"hopcheck_idle_timeout_seconds", addr, 10},
		{"hopcheck_server_hop", addr, 4},
		{"hopcheck_culprit_hop", addr, 2},
		{"hopcheck_path_hops", map[string]string{"protocol": "tcp"}, 4},
		{"hopcheck_hop_loss_ratio", map[string]string{"hop": "2", "responder": "*"}, 1},
		{"hopcheck_hop_rtt_seconds", map[string]string{"hop": "1", "responder": "198.18.0.2"}, 0.0015},
		{"hopcheck_connection_failure_ratio", map[string]string{"test": "idle", "outcome": "reset"}, 0.5},
	} {
		if got := value(t, text, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// An interrupted run keeps the last success of the earlier file.
	later := report(true)
	later.StartedAt = t0.Add(time.Hour)
	if err := WriteRunFile(path, later); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if got := value(t, string(b), LastSuccessName, nil); got != float64(t0.Unix())+90 {
		t.Errorf("last success after an interrupted run %v", got)
	}
	if got := value(t, string(b), "hopcheck_run_complete", nil); got != 0 {
		t.Errorf("complete %v", got)
	}
	if err := WriteRunFile(filepath.Join(t.TempDir(), "x.txt"), report(false)); err == nil || !strings.Contains(err.Error(), ".prom") {
		t.Errorf("non-.prom file: %v", err)
	}
}

func TestParseProbeRequest(t *testing.T) {
	for _, c := range []struct {
		q    string
		want string // error substring, "" ok
	}{
		{"target=https://lab", ""},
		{"target=https://lab&profile=standard&idle_max=30s", ""},
		{"", "missing parameter target"},
		{"target=https://lab&profile=slow", `unknown profile "slow"`},
		{"target=https://lab&idle_max=500ms", `idle_max "500ms"`},
		{"target=https://lab&target=https://b", `"target" given 2 times`},
		{"target=https://lab&module=x", `unknown parameter "module"`},
	} {
		r := httptest.NewRequest("GET", "/probe?"+c.q, nil)
		_, err := ParseProbeRequest(r.URL.Query())
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: %v, want %q", c.q, err, c.want)
		}
	}
}

func TestScrapeTimeout(t *testing.T) {
	for _, c := range []struct {
		h    string
		want time.Duration
		err  bool
	}{
		{"", 2 * time.Minute, false}, {"10", 9500 * time.Millisecond, false}, {"0.2", time.Second, false},
		{"100000", 10 * time.Minute, false}, {"abc", 0, true}, {"-1", 0, true},
	} {
		got, err := ScrapeTimeout(c.h, 2*time.Minute, 10*time.Minute, 500*time.Millisecond)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%q: %v %v", c.h, got, err)
		}
	}
}

func TestExporter(t *testing.T) {
	var mu sync.Mutex
	running, peak := 0, 0
	var deadlines []time.Duration
	probe := func(ctx context.Context, req ProbeRequest) (diagnose.Report, error) {
		if req.Target == "ftp://x" {
			return diagnose.Report{}, fmt.Errorf("%w: scheme ftp", ErrBadTarget)
		}
		if req.Target == "https://broken" {
			return diagnose.Report{}, errors.New("internal\nsecond line")
		}
		dl, _ := ctx.Deadline()
		mu.Lock()
		running++
		peak = max(peak, running)
		deadlines = append(deadlines, time.Until(dl))
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
		return report(false), nil
	}
	e := NewExporter(probe, 2)
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	get := func(path string, hdr string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if hdr != "" {
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := get("/probe?target=https://lab&profile=quick", "15")
			if code != 200 || value(t, body, "hopcheck_probe_success", nil) != 1 || value(t, body, "hopcheck_findings", map[string]string{"kind": "idle-reset"}) != 1 {
				t.Errorf("probe %d:\n%s", code, body)
			}
		}()
	}
	wg.Wait()
	if peak != 2 {
		t.Errorf("peak concurrency %d, want 2", peak)
	}
	for _, d := range deadlines {
		if d > 14500*time.Millisecond || d < 13*time.Second {
			t.Errorf("probe deadline %v, want about 14.5s", d)
		}
	}
	for _, c := range []struct{ path, hdr, want string }{
		{"/probe?target=ftp://x", "", "bad target: scheme ftp"},
		{"/probe?profile=quick", "", "missing parameter target"},
		{"/probe?target=https://lab", "soon", "X-Prometheus-Scrape-Timeout-Seconds"},
	} {
		code, body := get(c.path, c.hdr)
		if code != 400 || !strings.Contains(body, c.want) || strings.Count(body, "\n") != 1 {
			t.Errorf("%s: %d %q", c.path, code, body)
		}
	}
	if code, body := get("/probe?target=https://broken", ""); code != 500 || strings.Contains(body, "second") {
		t.Errorf("broken: %d %q", code, body)
	}
	code, body := get("/metrics", "")
	if code != 200 || value(t, body, "hopcheck_serve_probes_total", map[string]string{"result": "findings"}) != 5 ||
		value(t, body, "hopcheck_serve_probes_total", map[string]string{"result": "bad-request"}) != 3 {
		t.Errorf("/metrics %d\n%s", code, body)
	}
}

// Closes with a cause (the AMQP handshake timeout) are no idle timeout:
// no hopcheck_idle_timeout_seconds series for that address.
func TestIdleTimeoutNotExportedWithCause(t *testing.T) {
	r := report(false)
	res := r.Targets[0].Tests["idle"]
	res.Idle = &tcpcheck.IdleResult{TimeoutS: 9.8, Cause: tcpcheck.IdleCauseAMQPHandshake}
	r.Targets[0].Tests["idle"] = res
	path := filepath.Join(t.TempDir(), "hopcheck.prom")
	if err := WriteRunFile(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fams, err := parseText(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if f := fams["hopcheck_idle_timeout_seconds"]; f != nil && len(f.Metric) > 0 {
		t.Errorf("idle timeout exported for a handshake-timeout close: %v", f.Metric)
	}
}
