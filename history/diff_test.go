package history

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

func hop(ttl int, addr string, avg, stdev float64, sent, recv int) trace.Hop {
	h := trace.Hop{TTL: ttl, Sent: sent, Received: recv, RTTms: trace.RTTStats{Avg: avg, Stdev: stdev}}
	if sent > 0 {
		h.LossPct = 100 * float64(sent-recv) / float64(sent)
	}
	if addr != "" {
		h.Responders = []trace.Responder{{Address: addr, Received: recv}}
	}
	return h
}

func idleFinding(kind string, hopN int, timeout float64) diagnose.Finding {
	return diagnose.Finding{Finding: tcpcheck.Finding{Kind: kind, Target: "https://lab", Address: "198.18.3.2", Hop: hopN,
		Origin: probe.OriginMiddlebox, IdleTimeoutS: timeout}}
}

func snap(paths map[PathKey][]trace.Hop, fs []diagnose.Finding, rates map[RateKey]tcpcheck.Rate) Snapshot {
	s := Snapshot{Kind: "run", Paths: paths, Findings: map[FindingKey]diagnose.Finding{}, Rates: rates}
	if s.Paths == nil {
		s.Paths = map[PathKey][]trace.Hop{}
	}
	if s.Rates == nil {
		s.Rates = map[RateKey]tcpcheck.Rate{}
	}
	for _, f := range fs {
		s.Findings[FindingKey{f.Kind, f.Target, f.Address}] = f
	}
	return s
}

func TestCompare(t *testing.T) {
	pk := PathKey{"https://lab", "198.18.3.2", "tcp"}
	base := []trace.Hop{hop(1, "198.18.0.2", 1, 0.2, 3, 3), hop(2, "198.18.1.2", 2, 0.3, 3, 3), hop(3, "198.18.3.2", 3, 0.3, 3, 3)}
	rk := RateKey{"https://lab", "198.18.3.2", "connect refused"}
	for _, c := range []struct {
		name     string
		old, new Snapshot
		material bool
		want     []string // substrings of the text diff
		not      []string
	}{
		{"identical", snap(map[PathKey][]trace.Hop{pk: base}, []diagnose.Finding{idleFinding("idle-reset", 2, 10)}, nil),
			snap(map[PathKey][]trace.Hop{pk: base}, []diagnose.Finding{idleFinding("idle-reset", 2, 10.4)}, nil),
			false, []string{"no material change"}, []string{"finding"}},
		{"idle timeout 10 s → 6 s", snap(nil, []diagnose.Finding{idleFinding("idle-reset", 2, 10.1)}, nil),
			snap(nil, []diagnose.Finding{idleFinding("idle-reset", 2, 6.05)}, nil),
			true, []string{"finding changed idle-reset", "idle timeout 10.1s → 6.1s"}, []string{"hop 2 →"}},
		{"finding appeared and cleared", snap(nil, []diagnose.Finding{idleFinding("idle-drop", 2, 8)}, nil),
			snap(nil, []diagnose.Finding{idleFinding("idle-reset", 3, 8)}, nil),
			true, []string{"finding appeared idle-reset", "finding cleared idle-drop", "(hop 3, origin middlebox, idle timeout 8s)"}, nil},
		{"hop changed and path longer", snap(map[PathKey][]trace.Hop{pk: base}, nil, nil),
			snap(map[PathKey][]trace.Hop{pk: {base[0], hop(2, "198.18.9.9", 2, 0.3, 3, 3), hop(3, "198.18.2.2", 3, 0.3, 3, 3), hop(4, "198.18.3.2", 4, 0.3, 3, 3)}}, nil, nil),
			true, []string{"hop 2 responder-changed: 198.18.1.2 → 198.18.9.9", "hop 4 hop-added"}, nil},
		{"silent hop is not material", snap(map[PathKey][]trace.Hop{pk: base}, nil, nil),
			snap(map[PathKey][]trace.Hop{pk: {base[0], hop(2, "", 0, 0, 3, 0), base[2]}}, nil, nil),
			false, []string{"went-silent", "(not material)"}, nil},
		{"rtt beyond noise", snap(map[PathKey][]trace.Hop{pk: base}, nil, nil),
			snap(map[PathKey][]trace.Hop{pk: {base[0], base[1], hop(3, "198.18.3.2", 40, 2, 3, 3)}}, nil, nil),
			true, []string{"hop 3 rtt-shift: 3.0 ms → 40.0 ms"}, nil},
		{"rtt jitter is noise", snap(map[PathKey][]trace.Hop{pk: base}, nil, nil),
			snap(map[PathKey][]trace.Hop{pk: {base[0], base[1], hop(3, "198.18.3.2", 9, 4, 3, 3)}}, nil, nil),
			false, nil, []string{"rtt-shift"}},
		{"loss beyond noise", snap(map[PathKey][]trace.Hop{pk: {hop(1, "a", 1, 0, 100, 100)}}, nil, nil),
			snap(map[PathKey][]trace.Hop{pk: {hop(1, "a", 1, 0, 100, 70)}}, nil, nil),
			true, []string{"loss-shift: 0 % → 30 %"}, nil},
		{"rate apart", snap(nil, nil, map[RateKey]tcpcheck.Rate{rk: tcpcheck.NewRate(2, 1000)}),
			snap(nil, nil, map[RateKey]tcpcheck.Rate{rk: tcpcheck.NewRate(30, 1000)}),
			true, []string{"rate https://lab 198.18.3.2 connect refused: 0.0020"}, nil},
		{"rate within noise", snap(nil, nil, map[RateKey]tcpcheck.Rate{rk: tcpcheck.NewRate(20, 1000)}),
			snap(nil, nil, map[RateKey]tcpcheck.Rate{rk: tcpcheck.NewRate(26, 1000)}),
			false, nil, []string{"rate https"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Compare(c.old, c.new)
			var b bytes.Buffer
			if err := WriteDiffText(&b, d); err != nil {
				t.Fatal(err)
			}
			if d.Material != c.material {
				t.Errorf("material %v, want %v\n%s", d.Material, c.material, b.String())
			}
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in\n%s", w, b.String())
				}
			}
			for _, w := range c.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("unexpected %q in\n%s", w, b.String())
				}
			}
		})
	}
}

func TestParseKinds(t *testing.T) {
	enc := func(v any) []byte {
		b, _ := json.Marshal(v)
		return b
	}
	run := diagnose.Report{SchemaVersion: 1, Profile: "quick", Targets: []diagnose.TargetReport{{Target: "https://lab", Address: "198.18.3.2",
		Traces: []trace.Trace{{Target: trace.Target{Protocol: "tcp"}, Hops: []trace.Hop{hop(1, "a", 1, 0, 3, 3)}}}}},
		Findings: []diagnose.Finding{idleFinding("idle-reset", 2, 10)}}
	tcp := tcpcheck.Report{SchemaVersion: 1, Test: "idle", Findings: []tcpcheck.Finding{idleFinding("idle-reset", 2, 10).Finding}}
	sk := soak.Report{SchemaVersion: 1, Kind: "soak", Targets: []soak.TargetReport{{Target: "t", Address: "a", Failures: tcpcheck.NewRate(1, 10)}}}
	tr := trace.Report{SchemaVersion: 1, Traces: []trace.Trace{{Target: trace.Target{Host: "h", Address: "a", Protocol: "icmp"}}}}
	for _, c := range []struct {
		data               []byte
		kind               string
		paths, finds, rate int
	}{
		{enc(run), "run", 1, 1, 0}, {enc(tcp), "tcp", 0, 1, 0}, {enc(sk), "soak", 0, 0, 1}, {enc(tr), "trace", 1, 0, 0},
	} {
		s, err := Parse(c.data)
		if err != nil || s.Kind != c.kind || len(s.Paths) != c.paths || len(s.Findings) != c.finds || len(s.Rates) != c.rate {
			t.Errorf("%s: %+v %v", c.kind, s, err)
		}
	}
	for _, bad := range []string{`{`, `{"schema_version":2,"test":"idle"}`, `{"schema_version":1}`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}
