package diagnose

import (
	"sort"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

func hop(ttl int, addr string, sent, recv int, lossKind string) trace.Hop {
	h := trace.Hop{TTL: ttl, Sent: sent, Received: recv, LossKind: lossKind}
	if sent > 0 {
		h.LossPct = 100 * float64(sent-recv) / float64(sent)
	}
	if addr != "" {
		h.Responders = []trace.Responder{{Address: addr, Received: recv}}
	}
	return h
}

func tr(proto string, reached bool, at int, hops ...trace.Hop) trace.Trace {
	return trace.Trace{Target: trace.Target{Protocol: proto, Address: "198.18.5.2", Port: 443}, Reached: reached, ReachedTTL: at, Hops: hops}
}

func target(traces ...trace.Trace) TargetReport {
	return TargetReport{Target: "https://lab", Host: "lab", Address: "198.18.5.2", Port: 443, App: "https", Traces: traces,
		Tests: map[string]tcpcheck.Result{}, TestFindings: map[string][]tcpcheck.Finding{}}
}

func kinds(fs []Finding) string {
	var k []string
	for _, f := range fs {
		k = append(k, f.Kind)
	}
	return strings.Join(k, ",")
}

func TestDiagnose(t *testing.T) {
	clean := []trace.Hop{hop(1, "198.18.0.2", 3, 3, ""), hop(2, "", 3, 0, ""), hop(3, "198.18.2.2", 3, 3, ""), hop(4, "198.18.3.2", 3, 3, "")}
	cases := []struct {
		name    string
		target  TargetReport
		want    string // finding kinds in order
		hop     int    // hop of the first finding
		hopAddr string
		culprit int
		check   func(t *testing.T, fs []Finding)
	}{
		{
			name:   "clean path with a silent router: no findings",
			target: target(tr("icmp", true, 4, clean...), tr("tcp", true, 4, clean...)),
			want:   "",
		},
		{
			name: "tcp filtered at hop 3 while icmp reaches",
			target: target(tr("icmp", true, 4, clean...),
				tr("tcp", false, 0, hop(1, "198.18.0.2", 3, 3, ""), hop(2, "198.18.1.2", 3, 3, ""), hop(3, "198.18.2.2", 3, 3, ""), hop(4, "", 3, 0, ""), hop(5, "", 3, 0, ""))),
			want: "tcp-filtered", hop: 3, hopAddr: "198.18.2.2", culprit: 3,
		},
		{
			name: "path loss from hop 3",
			target: target(tr("icmp", true, 4, hop(1, "198.18.0.2", 10, 10, ""), hop(2, "198.18.1.2", 10, 10, ""),
				hop(3, "198.18.2.2", 10, 6, trace.LossPath), hop(4, "198.18.3.2", 10, 6, ""))),
			want: "path-loss", hop: 3, hopAddr: "198.18.2.2",
		},
		{
			name: "idle reset localised in-flow corrects the TTL estimate",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 6, clean...))
				tg.TestFindings["idle"] = []tcpcheck.Finding{{Kind: tcpcheck.KindIdleReset, Target: "https://lab", Address: "198.18.5.2",
					Hop: 6, Origin: probe.OriginServer, Confidence: "medium", Evidence: []string{"RST TTL 59 = server's"}, IdleTimeoutS: 10}}
				tg.Localisation = &Localisation{InFlow: &InFlow{Hop: 3, HopAddress: "198.18.2.2", Behaviour: "reset"}}
				return tg
			}(),
			want: "idle-reset", hop: 3, hopAddr: "198.18.2.2", culprit: 3,
			check: func(t *testing.T, fs []Finding) {
				f := fs[0]
				if f.Origin != probe.OriginMiddlebox || f.Confidence != "high" || f.Phase != "idle" || f.Severity != "critical" {
					t.Errorf("got origin %s confidence %s phase %s severity %s", f.Origin, f.Confidence, f.Phase, f.Severity)
				}
				if len(f.Evidence) != 2 || !strings.Contains(f.Evidence[1], "TTL estimate said hop 6") {
					t.Errorf("evidence %q should keep the TTL evidence and add the in-flow correction", f.Evidence)
				}
			},
		},
		{
			name: "server idle close stays with the server",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.TestFindings["idle"] = []tcpcheck.Finding{{Kind: tcpcheck.KindIdleClose, Origin: probe.OriginServer, Hop: 4, IdleTimeoutS: 6}}
				return tg
			}(),
			want: "idle-close", hop: 4, culprit: 0,
		},
		{
			name: "MSS clamp and NAT from the quoted headers, most severe first",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.Localisation = &Localisation{Rewrites: []HopRewrite{
					{Hop: 1, Address: "198.18.0.2", Changes: []string{"src address 198.18.0.1→198.18.1.1"}},
					{Hop: 2, Address: "198.18.1.2", Changes: []string{"mss 1460→1200"}},
					{Hop: 3, Address: "198.18.2.2"},
				}}
				tg.TestFindings["data"] = []tcpcheck.Finding{{Kind: tcpcheck.KindDataStall, Origin: probe.OriginUnknown}}
				tg.Localisation.PMTU = &PMTU{MTU: 1280, BlackholeHop: 3, BlackholeHopAddress: "198.18.2.2"}
				return tg
			}(),
			want: "data-stall,pmtu-blackhole,nat,header-rewrite", hop: 3, hopAddr: "198.18.2.2", culprit: 3,
			check: func(t *testing.T, fs []Finding) {
				if fs[0].MTU != 1280 || fs[1].MTU != 1280 {
					t.Errorf("MTU not carried: %d %d", fs[0].MTU, fs[1].MTU)
				}
				if fs[2].Hop != 1 || fs[3].Hop != 2 {
					t.Errorf("nat at hop %d, rewrite at hop %d; want 1 and 2", fs[2].Hop, fs[3].Hop)
				}
			},
		},
		{
			name: "midstream close by the box at hop 2: critical, transfer, culprit",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.TestFindings["data"] = []tcpcheck.Finding{{Kind: tcpcheck.KindMidstreamClose, Origin: probe.OriginMiddlebox, Hop: 2,
					HopAddress: "198.18.1.2", Confidence: "high", Advice: "ask its operator", TransferBytes: 1 << 20, ExpectedBytes: 8 << 20}}
				tg.TestFindings["idle"] = []tcpcheck.Finding{{Kind: tcpcheck.KindIdleClose, Origin: probe.OriginServer, Hop: 4, IdleTimeoutS: 6}}
				return tg
			}(),
			want: "midstream-close,idle-close", hop: 2, hopAddr: "198.18.1.2", culprit: 2,
			check: func(t *testing.T, fs []Finding) {
				f := fs[0]
				if f.Severity != "critical" || f.Phase != "transfer" || f.TransferBytes != 1<<20 || f.ExpectedBytes != 8<<20 {
					t.Errorf("severity %s phase %s bytes %d of %d; want critical, transfer, %d of %d", f.Severity, f.Phase,
						f.TransferBytes, f.ExpectedBytes, 1<<20, 8<<20)
				}
			},
		},
		{
			name: "midstream close by the server names no box on the path",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.TestFindings["data"] = []tcpcheck.Finding{{Kind: tcpcheck.KindMidstreamClose, Origin: probe.OriginServer, Hop: 4,
					Confidence: "high", Advice: "graceful restart"}}
				return tg
			}(),
			want: "midstream-close", hop: 4, culprit: 0,
			check: func(t *testing.T, fs []Finding) {
				if fs[0].Severity != "critical" || fs[0].Phase != "transfer" {
					t.Errorf("severity %s phase %s; want critical, transfer", fs[0].Severity, fs[0].Phase)
				}
			},
		},
		{
			name: "NAT from the server's view, located at hop 1",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.Localisation = &Localisation{NAT: &NAT{Translated: "yes", Sent: "198.18.0.1:40000", Seen: "198.18.1.1:40000",
					Changes: []string{"src address 198.18.0.1→198.18.1.1"}, Hop: 1, HopAddress: "198.18.0.2"}}
				return tg
			}(),
			want: "nat", hop: 1, hopAddr: "198.18.0.2", culprit: 1,
		},
		{
			name: "no NAT when the server saw our own address",
			target: func() TargetReport {
				tg := target(tr("tcp", true, 4, clean...))
				tg.Localisation = &Localisation{NAT: &NAT{Translated: "no", Sent: "198.18.0.1:40000", Seen: "198.18.0.1:40000"}}
				return tg
			}(),
			want: "",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			targets := []TargetReport{c.target}
			fs := Diagnose(targets)
			if got := kinds(fs); got != c.want {
				t.Fatalf("kinds %q, want %q", got, c.want)
			}
			if fs == nil {
				t.Fatal("findings must be an empty slice, not nil")
			}
			if len(fs) > 0 && (fs[0].Hop != c.hop || (c.hopAddr != "" && fs[0].HopAddress != c.hopAddr)) {
				t.Errorf("first finding at hop %d (%s), want %d (%s)", fs[0].Hop, fs[0].HopAddress, c.hop, c.hopAddr)
			}
			if targets[0].CulpritHop != c.culprit {
				t.Errorf("culprit hop %d, want %d", targets[0].CulpritHop, c.culprit)
			}
			for _, f := range fs {
				if f.Advice == "" && f.Kind != tcpcheck.KindIdleReset && f.Kind != tcpcheck.KindIdleClose && f.Kind != tcpcheck.KindDataStall {
					t.Errorf("%s has no advice", f.Kind)
				}
			}
			if c.check != nil {
				c.check(t, fs)
			}
		})
	}
}

// The connect test's pmtu-blackhole toward the client is placed by the
// forward DF search: the hop that reports the small link.
func TestRefinePMTUBlackholeTowardClient(t *testing.T) {
	toward := tcpcheck.Finding{Kind: tcpcheck.KindPMTUBlackhole, Target: "https://x", Address: "198.18.9.2", Origin: probe.OriginMiddlebox,
		Direction: "toward-client", MTUBracket: []int{1394, 1401}, Evidence: []string{"stalled"}}
	tests := []struct {
		name    string
		pmtu    *PMTU
		f       tcpcheck.Finding
		wantHop int
		wantMTU int
	}{
		{"frag-needed from hop 2", &PMTU{MTU: 1400, FragNeededHop: 2, FragNeededHopAddress: "198.18.1.1", FragNeededSeen: true}, toward, 2, 1400},
		{"forward black hole at hop 3", &PMTU{MTU: 1280, BlackholeHop: 3, BlackholeHopAddress: "198.18.2.1"}, toward, 3, 1280},
		{"no bottleneck found", &PMTU{MTU: 1500}, toward, 0, 0},
		{"no localisation", nil, toward, 0, 0},
	}
	for _, tc := range tests {
		tg := target()
		tg.TestFindings = map[string][]tcpcheck.Finding{"connect": {tc.f}}
		if tc.pmtu != nil {
			tg.Localisation = &Localisation{PMTU: tc.pmtu}
		}
		var got *Finding
		for _, f := range Diagnose([]TargetReport{tg}) {
			if f.Kind == tcpcheck.KindPMTUBlackhole && f.Direction == "toward-client" {
				got = &f
			}
		}
		if got == nil || got.Hop != tc.wantHop || got.MTU != tc.wantMTU || len(got.MTUBracket) != 2 {
			t.Errorf("%s: %+v; want hop %d mtu %d toward-client", tc.name, got, tc.wantHop, tc.wantMTU)
		}
	}
}

// An unplaced data-stall beside the connect test's black hole toward the
// client is the same fault: one finding, which says the data test
// stalled too. A stall the DF search placed, or one without such a black
// hole, stays.
func TestDataStallFoldsIntoBlackholeTowardClient(t *testing.T) {
	hole := tcpcheck.Finding{Kind: tcpcheck.KindPMTUBlackhole, Target: "https://x", Address: "198.18.9.2", Origin: probe.OriginMiddlebox,
		Direction: "toward-client", MTUBracket: []int{1394, 1401}, Evidence: []string{"stalled"}}
	stall := tcpcheck.Finding{Kind: tcpcheck.KindDataStall, Target: "https://x", Address: "198.18.9.2", Origin: probe.OriginUnknown,
		Evidence: []string{"no progress"}}
	// The data test's download, cured by a clamped MSS (tcpcheck/datacure.go).
	dataHole := tcpcheck.Finding{Kind: tcpcheck.KindPMTUBlackhole, Target: "https://x", Address: "198.18.9.2", Origin: probe.OriginMiddlebox,
		Direction: "toward-client", MTUBracket: []int{1240, 1499}, Evidence: []string{"download stalled"}}
	tests := []struct {
		name      string
		findings  map[string][]tcpcheck.Finding
		pmtu      *PMTU
		wantKinds []string
		wantNote  bool
	}{
		{"stall folded", map[string][]tcpcheck.Finding{"connect": {hole}, "data": {stall}}, &PMTU{MTU: 1400, FragNeededHop: 2}, []string{"pmtu-blackhole"}, true},
		{"data's black hole folded into connect's", map[string][]tcpcheck.Finding{"connect": {hole}, "data": {dataHole}}, &PMTU{MTU: 1400, FragNeededHop: 2}, []string{"pmtu-blackhole"}, true},
		{"data's black hole alone stays", map[string][]tcpcheck.Finding{"data": {dataHole}}, &PMTU{MTU: 1400, FragNeededHop: 2}, []string{"pmtu-blackhole"}, false},
		{"no black hole: stall stays", map[string][]tcpcheck.Finding{"data": {stall}}, nil, []string{"data-stall"}, false},
		{"stall placed by the DF search stays", map[string][]tcpcheck.Finding{"connect": {hole}, "data": {stall}},
			&PMTU{MTU: 1280, BlackholeHop: 3}, []string{"pmtu-blackhole", "pmtu-blackhole", "data-stall"}, false}, // the forward one from the DF search too
	}
	for _, tc := range tests {
		tg := target()
		tg.TestFindings = tc.findings
		if tc.pmtu != nil {
			tg.Localisation = &Localisation{PMTU: tc.pmtu}
		}
		var kinds []string
		note := false
		for _, f := range Diagnose([]TargetReport{tg}) {
			if f.Kind == tcpcheck.KindPMTUBlackhole || f.Kind == tcpcheck.KindDataStall {
				kinds = append(kinds, f.Kind)
			}
			for _, e := range f.Evidence {
				note = note || strings.Contains(e, "data test stalled too")
			}
		}
		sort.Strings(kinds)
		want := append([]string(nil), tc.wantKinds...)
		sort.Strings(want)
		if strings.Join(kinds, ",") != strings.Join(want, ",") || note != tc.wantNote {
			t.Errorf("%s: kinds %v note %v; want %v note %v", tc.name, kinds, note, want, tc.wantNote)
		}
	}
}
