package report

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestNewIdleView(t *testing.T) {
	rec := func(idle float64, o tcpcheck.Outcome, uses int) tcpcheck.ConnRecord {
		return tcpcheck.ConnRecord{IdleS: idle, Outcome: o, Uses: uses}
	}
	for _, c := range []struct {
		name      string
		conns     []tcpcheck.ConnRecord
		bracket   [2]float64
		want      []rung
		survivals int
	}{
		{
			name:    "failures by behaviour, longest survived from the bracket",
			conns:   []tcpcheck.ConnRecord{rec(0, "ok", 3), rec(10.1, "reset", 0), rec(9, "timeout", 0), rec(12, "closed", 0), rec(0, "ok", 1)},
			bracket: [2]float64{7.9, 9},
			want: []rung{{IdleS: 7.9, Survived: true, Inferred: true}, {IdleS: 9, Behaviour: "drop"},
				{IdleS: 10.1, Behaviour: "reset"}, {IdleS: 12, Behaviour: "close"}},
			survivals: 4,
		},
		{
			name:      "a recorded survivor at the lower end needs no inferred point",
			conns:     []tcpcheck.ConnRecord{rec(7.9, "ok", 1), rec(8.5, "reset-in-handshake", 0)},
			bracket:   [2]float64{7.9, 8.5},
			want:      []rung{{IdleS: 7.9, Survived: true}, {IdleS: 8.5, Behaviour: "reset"}},
			survivals: 1,
		},
		{
			name:  "no timeout found: nothing failed, no bracket",
			conns: []tcpcheck.ConnRecord{rec(0, "ok", 5)},
			want:  nil, survivals: 5,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newIdleView(tcpcheck.Result{Connections: c.conns, Idle: &tcpcheck.IdleResult{BracketS: c.bracket}})
			if !reflect.DeepEqual(v.Rungs, c.want) {
				t.Errorf("rungs %+v, want %+v", v.Rungs, c.want)
			}
			if v.Survivals != c.survivals {
				t.Errorf("survivals %d, want %d", v.Survivals, c.survivals)
			}
		})
	}
}

func TestNiceAxis(t *testing.T) {
	for _, c := range []struct{ top, end, step float64 }{
		{11.6, 12, 2}, {0, 10, 2}, {0.7, 0.7, 0.1}, {69, 70, 10}, {600 * 1.15, 700, 100}, {3600 * 1.15, 5000, 1000},
	} {
		end, step := niceAxis(c.top)
		if end != c.end || step != c.step {
			t.Errorf("niceAxis(%v) = %v, %v; want %v, %v", c.top, end, step, c.end, c.step)
		}
	}
}

func TestFindingsSplitByTarget(t *testing.T) {
	r := pathReport()
	v := newReportView(r)
	var got [][]int
	for _, tv := range v.Targets {
		var ns []int
		for _, f := range tv.Findings {
			ns = append(ns, f.N)
		}
		got = append(got, ns)
	}
	if want := [][]int{{1, 2}, {3, 4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("findings by target %v, want %v", got, want)
	}
	if len(v.Unmatched) != 1 || v.Unmatched[0].N != 5 || v.Unmatched[0].Kind != diagnose.KindNotReachable {
		t.Errorf("unmatched %+v, want finding 5 (not-reachable)", v.Unmatched)
	}
	if k := v.Targets[0].CulpritKinds; !reflect.DeepEqual(k, []string{"idle-reset"}) {
		t.Errorf("culprit kinds %v", k)
	}
	if k := v.Targets[0].ServerKinds; !reflect.DeepEqual(k, []string{"concurrency-limit"}) {
		t.Errorf("server kinds %v", k)
	}
}

func TestPathViewOrdersProtocols(t *testing.T) {
	p := newPathView(demoReport().Targets[0].Traces) // icmp, udp, tcp as run
	if want := []string{"tcp/443", "icmp", "udp/443"}; !reflect.DeepEqual(p.Labels, want) {
		t.Errorf("labels %v, want %v", p.Labels, want)
	}
	if len(p.Rows) != 6 || p.DestinationTTL() != 6 {
		t.Errorf("%d rows, destination %d; want 6, 6", len(p.Rows), p.DestinationTTL())
	}
	for _, row := range p.Rows {
		for i, h := range row.Hops {
			if h == nil || h.TTL != row.TTL {
				t.Errorf("row %d, trace %d: hop %+v", row.TTL, i, h)
			}
		}
	}
}

// edgeReport has what a cut-short or unlucky run leaves: a target that
// failed before tracing, a trace that did not reach the server, a hop
// answering without an address, an idle test that found no timeout.
func edgeReport() diagnose.Report {
	r := demoReport()
	r.Incomplete = true
	r.Warnings = []string{"no CAP_NET_RAW: origins are estimates"}
	r.Privilege = "unprivileged"
	api := &r.Targets[0]
	tcp := &api.Traces[2]
	tcp.Reached, tcp.ReachedTTL, tcp.Error = false, 0, "trace interrupted: context canceled"
	tcp.Hops = tcp.Hops[:4]
	tcp.Hops[1].Responders = nil
	idle := api.Tests["idle"]
	idle.Idle = &tcpcheck.IdleResult{MaxS: 60, Verified: "not-tested"}
	idle.Connections = nil
	api.Tests["idle"] = idle
	api.Localisation = &diagnose.Localisation{
		Rewrites: []diagnose.HopRewrite{{Hop: 2, Address: routerAddr(2), Changes: []string{"mss 1460→1200"}}},
		PMTU:     &diagnose.PMTU{MTU: 1400, BlackholeHop: 4, BlackholeHopAddress: routerAddr(4)},
	}
	r.Targets = append(r.Targets, diagnose.TargetReport{Target: "tcp://gone.example:443", Address: "198.18.9.9", Port: 443,
		Error: "interrupted"}, diagnose.TargetReport{})
	return r
}

func TestWritersHandleEdgeCases(t *testing.T) {
	for name, r := range map[string]diagnose.Report{"zero": {}, "edge": edgeReport()} {
		var text, mdoc, page, js bytes.Buffer
		for format, err := range map[string]error{
			"text":     WriteText(&text, r, TextOptions{Color: true}),
			"markdown": WriteMarkdown(&mdoc, r),
			"html":     WriteHTML(&page, r),
			"json":     WriteJSON(&js, r),
		} {
			if err != nil {
				t.Errorf("%s %s: %v", name, format, err)
			}
		}
		if name != "edge" {
			continue
		}
		for _, want := range []string{"report incomplete", "warning: no CAP_NET_RAW", "tcp/443: destination not reached",
			"no idle timeout up to 60 s", "hop 2 (198.18.1.2) rewrites the TCP SYN: mss 1460->1200",
			"path MTU 1400; larger packets vanish beyond hop 4 (198.18.3.2)", "error: interrupted", "no traces"} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("edge text lacks %q", want)
			}
		}
		if !strings.Contains(page.String(), `class="endpoint server unreached flagged"`) {
			t.Error("edge HTML: the unreached server is not drawn as such")
		}
		if !strings.Contains(page.String(), "No idle timeout up to 60 s.") {
			t.Error("edge HTML: the ladder caption does not say no timeout was found")
		}
	}
}

func TestWriteErrors(t *testing.T) {
	for name, write := range map[string]func(io.Writer) error{
		"text":     func(w io.Writer) error { return WriteText(w, demoReport(), TextOptions{}) },
		"markdown": func(w io.Writer) error { return WriteMarkdown(w, demoReport()) },
		"html":     func(w io.Writer) error { return WriteHTML(w, demoReport()) },
		"json":     func(w io.Writer) error { return WriteJSON(w, demoReport()) },
	} {
		if err := write(failingWriter{}); !errors.Is(err, errDiskFull) {
			t.Errorf("%s: error %v, want the writer's", name, err)
		}
	}
}

var errDiskFull = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestLocalisationLinesInFlow(t *testing.T) {
	for _, c := range []struct {
		name string
		in   diagnose.InFlow
		want string
	}{
		{"hop found", diagnose.InFlow{Flow: "a > b", Behaviour: "reset", Hop: 3, HopAddress: "198.18.2.2"},
			"in-flow probes of a > b: hop 3 (198.18.2.2) lost the flow's state (reset)"},
		{"not run", diagnose.InFlow{Behaviour: diagnose.InFlowNotTested, Reason: "the flow must idle 1h2m0s to expire, beyond --in-flow-max 15m0s"},
			"in-flow probes: not run: the flow must idle 1h2m0s to expire, beyond --in-flow-max 15m0s"},
		{"undetermined with a reason", diagnose.InFlow{Behaviour: "undetermined", Reason: "the flow observer saw no SYN-ACK"},
			"in-flow probes: no hop found that lost the flow's state (the flow observer saw no SYN-ACK)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			got := localisationLines(&diagnose.Localisation{InFlow: &in})
			if len(got) != 1 || got[0] != c.want {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestTestSummaryIdleCause(t *testing.T) {
	res := tcpcheck.Result{Idle: &tcpcheck.IdleResult{TimeoutS: 9.8, BracketS: [2]float64{3, 10.1}, Cause: tcpcheck.IdleCauseAMQPHandshake,
		Note: "the broker closes connections that have not logged in"}}
	got := testSummary("idle", res)
	if strings.Contains(got, "idle timeout") || !strings.Contains(got, "amqp-handshake-timeout") || !strings.Contains(got, "have not logged in") {
		t.Errorf("summary %q: want the cause and note, not an idle timeout", got)
	}
}
