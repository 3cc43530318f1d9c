package diagnose

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// labPath models 5 routers and the server (hop 6): ret[h] is how many
// routers hop h's packets cross back (h−1 when absent), initial[h] its
// initial TTL (64 when absent); silent hops send no ICMP.
type labPath struct {
	ret, initial map[int]int
	silent       map[int]bool
}

func (p labPath) received(h int) int {
	r, ok := p.ret[h]
	if !ok {
		r = h - 1
	}
	i, ok := p.initial[h]
	if !ok {
		i = 64
	}
	return i - r
}

// target builds what `run` measured: a TCP trace, an idle-reset finding
// from the test's TTL count, and in-flow probes of a box at hop box that
// checks the TTL first (time-exceeded up to box, RSTs beyond); rstTTL is
// the RSTs' received TTL.
func (p labPath) target(box, rstTTL int) TargetReport {
	var hops []trace.Hop
	for h := 1; h <= 6; h++ {
		if p.silent[h] {
			hops = append(hops, trace.Hop{TTL: h, Sent: 3, ReplyTTL: -1, Responders: []trace.Responder{}})
			continue
		}
		kind := "time-exceeded"
		if h == 6 {
			kind = "syn-ack"
		}
		hops = append(hops, trace.Hop{TTL: h, Sent: 3, Received: 3, ReplyTTL: p.received(h),
			Responders: []trace.Responder{{Address: fmt.Sprintf("198.18.%d.2", h-1), Received: 3, Kinds: []string{kind}}}})
	}
	tg := TargetReport{Target: "https://lab", Address: "198.18.5.2", Port: 443, App: "https",
		Traces:       []trace.Trace{{Target: trace.Target{Protocol: "tcp"}, Reached: true, ReachedTTL: 6, Hops: hops}},
		Tests:        map[string]tcpcheck.Result{"idle": {ServerTTL: p.received(6)}},
		TestFindings: map[string][]tcpcheck.Finding{},
	}
	count := probe.SenderHop(rstTTL)
	tg.TestFindings["idle"] = []tcpcheck.Finding{{Kind: tcpcheck.KindIdleReset, Target: "https://lab", Address: "198.18.5.2",
		Hop: count, Origin: probe.OriginMiddlebox, Confidence: "high", Method: "ttl-count", Evidence: []string{"TTL count"}, IdleTimeoutS: 10}}
	in := &InFlow{Behaviour: "reset", Hop: count}
	for ttl := 1; ttl <= 6; ttl++ {
		h := InFlowAnswer{TTL: ttl, Kind: "time-exceeded", From: fmt.Sprintf("198.18.%d.2", ttl-1), ReplyTTL: p.received(ttl)}
		if ttl == 6 {
			h.Kind, h.SenderHop = "ack", 6
		}
		if p.silent[ttl] {
			h = InFlowAnswer{TTL: ttl, Kind: "none"}
		}
		in.Healthy = append(in.Healthy, h)
		e := h
		if ttl > box {
			e = InFlowAnswer{TTL: ttl, Kind: "rst", From: "198.18.5.2", ReplyTTL: rstTTL}
		}
		in.Expired = append(in.Expired, e)
	}
	tg.Localisation = &Localisation{InFlow: in}
	return tg
}

func TestDiagnoseAttributesResets(t *testing.T) {
	detour := func(from, extra int) map[int]int {
		m := map[int]int{}
		for h := from; h <= 6; h++ {
			m[h] = h - 1 + extra
		}
		return m
	}
	tests := []struct {
		name     string
		p        labPath
		box      int
		forge    bool
		wantHop  int
		wantCand []int
		wantConf []string
		wantObs  string
		wantAddr string
		wantMeth string
	}{
		{name: "detour +1 at the culprit", p: labPath{ret: detour(3, 1)}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantObs: "asymmetric-return", wantAddr: "198.18.2.2", wantMeth: "fingerprint"},
		{name: "detour +2 before the culprit", p: labPath{ret: detour(2, 2)}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantObs: "asymmetric-return", wantMeth: "fingerprint"},
		{name: "detour +1 after the culprit", p: labPath{ret: detour(4, 1)}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantMeth: "fingerprint"},
		{name: "detour +2 after the culprit", p: labPath{ret: detour(4, 2)}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantMeth: "fingerprint"},
		{name: "box at 255", p: labPath{initial: map[int]int{3: 255}}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantMeth: "fingerprint"},
		{name: "box at 128", p: labPath{initial: map[int]int{3: 128}}, box: 3, wantHop: 3, wantConf: []string{"high"}, wantMeth: "fingerprint"},
		{name: "forged server TTL", p: labPath{}, box: 3, forge: true, wantHop: 3, wantCand: []int{3, 4}, wantConf: []string{"medium", "low"}, wantObs: "forged-ttl", wantMeth: "bracket"},
		{name: "no ICMP from the box", p: labPath{silent: map[int]bool{3: true}}, box: 3, wantHop: 3, wantCand: []int{3, 4}, wantConf: []string{"medium", "low"}, wantMeth: "bracket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rst := tc.p.received(tc.box)
			if tc.forge {
				rst = tc.p.received(6)
			}
			tg := tc.p.target(tc.box, rst)
			if tc.p.silent[tc.box] {
				// Its TTL expiry is silent too: nothing at TTL box in either run.
				tg.Localisation.InFlow.Expired[tc.box-1] = InFlowAnswer{TTL: tc.box, Kind: "none"}
			}
			targets := []TargetReport{tg}
			fs := Diagnose(targets)
			var f *Finding
			for i := range fs {
				if fs[i].Kind == tcpcheck.KindIdleReset {
					f = &fs[i]
				}
			}
			if f == nil {
				t.Fatalf("no idle-reset finding in %+v", fs)
			}
			ev := strings.Join(f.Evidence, " | ")
			if f.Hop != tc.wantHop || f.Origin != probe.OriginMiddlebox {
				t.Errorf("hop %d origin %s, want hop %d middlebox; %s", f.Hop, f.Origin, tc.wantHop, ev)
			}
			if !slices.Equal(f.HopCandidates, tc.wantCand) {
				t.Errorf("candidates %v, want %v", f.HopCandidates, tc.wantCand)
			}
			if !slices.Contains(tc.wantConf, f.Confidence) {
				t.Errorf("confidence %s, want %v; %s", f.Confidence, tc.wantConf, ev)
			}
			if tc.wantObs != "" && !slices.Contains(f.Observations, tc.wantObs) {
				t.Errorf("observations %v lack %s; %s", f.Observations, tc.wantObs, ev)
			}
			if f.Method != tc.wantMeth {
				t.Errorf("method %q, want %q (the test's count said ttl-count); %s", f.Method, tc.wantMeth, ev)
			}
			if tc.wantAddr != "" && f.HopAddress != tc.wantAddr {
				t.Errorf("hop address %q, want %s", f.HopAddress, tc.wantAddr)
			}
			if targets[0].CulpritHop != tc.wantHop {
				t.Errorf("culprit hop %d, want %d", targets[0].CulpritHop, tc.wantHop)
			}
		})
	}
}

// What the connection test's capture said of the server after the RST
// (on-path / in-path) survives the in-flow attribution; its other
// observations are decided again.
func TestDiagnoseKeepsCaptureObservations(t *testing.T) {
	p := labPath{}
	tg := p.target(3, p.received(3))
	tg.TestFindings["idle"][0].Observations = []string{"asymmetric-return", "in-path-blocking"}
	fs := Diagnose([]TargetReport{tg})
	for _, f := range fs {
		if f.Kind != tcpcheck.KindIdleReset {
			continue
		}
		if !slices.Equal(f.Observations, []string{"in-path-blocking"}) {
			t.Errorf("observations %v, want [in-path-blocking] (the path is symmetric)", f.Observations)
		}
		return
	}
	t.Fatalf("no idle-reset finding")
}

// The method of a connection finding after refine: the in-flow
// attribution's, the forward bracket's where the in-flow probes alone
// moved the hop, the test's where nothing moved it, none where no packet
// was attributed.
func TestRefineMethod(t *testing.T) {
	p := labPath{}
	for _, tc := range []struct {
		name      string
		kind      string
		method    string // the test's
		behaviour string // the in-flow probes' ("" not run)
		want      string
	}{
		{"in-flow reset: fingerprint", tcpcheck.KindIdleReset, "ttl-count", "reset", "fingerprint"},
		{"in-flow reject: the bracket moved the hop", tcpcheck.KindIdleReset, "ttl-count", "reject", "bracket"},
		{"in-flow drop after a reset: the bracket", tcpcheck.KindIdleReset, "server", "drop", "bracket"},
		{"in-flow server-reset: the test's", tcpcheck.KindIdleReset, "server", "server-reset", "server"},
		{"no in-flow probes: the test's", tcpcheck.KindIdleReset, "ttl-count", "", "ttl-count"},
		{"a drop: no packet", tcpcheck.KindIdleDrop, "", "drop", ""},
	} {
		tg := p.target(3, p.received(3))
		f := &tg.TestFindings["idle"][0]
		f.Kind, f.Method = tc.kind, tc.method
		switch tc.behaviour {
		case "":
			tg.Localisation = nil
		case "reset":
		default:
			in := tg.Localisation.InFlow
			in.Behaviour = tc.behaviour
			for i := range in.Expired {
				if in.Expired[i].Kind == "rst" {
					in.Expired[i] = InFlowAnswer{TTL: in.Expired[i].TTL, Kind: "none"}
				}
			}
		}
		got := refine(Finding{Finding: *f}, tg)
		if got.Method != tc.want {
			t.Errorf("%s: method %q, want %q", tc.name, got.Method, tc.want)
		}
	}
}
