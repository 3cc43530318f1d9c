package tcpcheck

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

func TestPathPrintsOf(t *testing.T) {
	te := func(ttl, reply int, from string) trace.Observation {
		return trace.Observation{TTL: ttl, Response: &probe.Response{From: netip.MustParseAddr(from), Kind: probe.KindTimeExceeded, ReplyTTL: reply, ReplyIPID: -1}}
	}
	obs := []trace.Observation{
		te(1, 64, "198.18.0.2"), te(2, 61, "198.19.251.1"), te(2, 61, "198.19.251.1"),
		{TTL: 3},
		{TTL: 4, Response: &probe.Response{From: netip.MustParseAddr("198.18.3.2"), Kind: probe.KindSynAck, ReplyTTL: 59}},
		{TTL: 5, Response: &probe.Response{From: netip.MustParseAddr("198.18.3.2"), Kind: probe.KindSynAck, ReplyTTL: 59}},
	}
	pp := pathPrintsOf(obs)
	if pp.ServerHop != 4 || len(pp.Hops) != 2 || pp.Hops[1].Hop != 2 || pp.Hops[1].TTL != 61 || pp.Hops[1].Address != "198.19.251.1" || pp.Hops[1].Samples != 2 {
		t.Errorf("got %+v", pp)
	}
}

func TestReattributionApply(t *testing.T) {
	f := Finding{Hop: 4, Origin: probe.OriginMiddlebox, Confidence: "high", HopAddress: "198.18.3.2"}
	ra := &reattribution{result: attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Candidates: []int{3}, Confidence: "high",
		Observations: []attrib.Observation{attrib.ObsAsymmetricReturn}, Evidence: []string{"fingerprint"}}, address: "198.18.2.2"}
	ra.apply(&f)
	if f.Hop != 3 || f.HopAddress != "198.18.2.2" || f.Confidence != "high" || f.HopCandidates != nil ||
		!slices.Equal(f.Observations, []string{"asymmetric-return"}) || len(f.Evidence) != 2 {
		t.Errorf("got %+v", f)
	}
	// Undecided: both candidates, and never more confident than before.
	f = Finding{Hop: 3, Origin: probe.OriginMiddlebox, Confidence: "medium"}
	(&reattribution{result: attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Candidates: []int{3, 4}, Confidence: "high"}}).apply(&f)
	if !slices.Equal(f.HopCandidates, []int{3, 4}) || f.Confidence != "medium" {
		t.Errorf("got %+v", f)
	}
	var none *reattribution
	none.apply(&f) // no lookup: unchanged

	// A correction line only when the count named another sender.
	for _, c := range []struct {
		origin     probe.Origin
		hop        int
		correction bool
	}{
		{probe.OriginMiddlebox, 5, true},  // another hop
		{probe.OriginServer, 0, true},     // the server
		{probe.OriginUnknown, 2, false},   // the same hop, the count unsure of the origin
		{probe.OriginMiddlebox, 2, false}, // the same hop
	} {
		f := Finding{Hop: c.hop, Origin: c.origin}
		(&reattribution{result: attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 2, Candidates: []int{2}, Confidence: "high"}}).apply(&f)
		got := slices.ContainsFunc(f.Evidence, func(e string) bool { return strings.Contains(e, "correct the TTL count") })
		if got != c.correction || f.Hop != 2 || f.Origin != probe.OriginMiddlebox {
			t.Errorf("count %s hop %d: correction %v (evidence %q), hop %d %s", c.origin, c.hop, got, f.Evidence, f.Hop, f.Origin)
		}
	}
}

func TestServerAnswerAfter(t *testing.T) {
	server, client := netip.MustParseAddr("198.18.5.2"), netip.MustParseAddr("198.18.0.1")
	pkt := func(t *testing.T, ttl int, flags probe.TCPFlags, payload int, out bool) probe.CapturedPacket {
		return capturedTCP(t, server, client, ttl, flags, payload, out)
	}
	req := pkt(t, 64, probe.FlagACK|probe.FlagPSH, 100, true)
	rst := pkt(t, 62, probe.FlagRST, 0, false)    // the box at hop 3
	data := pkt(t, 59, probe.FlagACK, 200, false) // the server, hop 6
	for _, tc := range []struct {
		name    string
		packets []probe.CapturedPacket
		rstTTL  int
		want    tri.State
	}{
		{"the server answers after the RST: on-path", []probe.CapturedPacket{req, rst, data}, 62, tri.Yes},
		{"nothing of the server after it: in-path", []probe.CapturedPacket{data, req, rst}, 62, tri.No},
		{"the RST is not in the history", []probe.CapturedPacket{req, data}, 62, tri.NotTested},
		{"the RST has the server's TTL", []probe.CapturedPacket{req, rst, data}, 59, tri.NotTested},
		{"our own packets do not count", []probe.CapturedPacket{req, rst, pkt(t, 59, probe.FlagACK, 0, true)}, 62, tri.No},
	} {
		c := &probe.FlowCapture{Packets: tc.packets}
		if got := serverAnswerAfter(c, tc.rstTTL, 59); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	if got := serverAnswerAfter(nil, 62, 59); got != tri.NotTested {
		t.Errorf("no history: %s", got)
	}
}

func TestAttribText(t *testing.T) {
	f := Finding{HopCandidates: []int{3, 4}, Observations: []string{"forged-ttl"}}
	if got, want := attribText(f), ", undecided between hops 3 and 4 [forged-ttl]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := attribText(Finding{HopCandidates: []int{3}}); got != "" {
		t.Errorf("decided: %q", got)
	}
}

func TestCountMethod(t *testing.T) {
	server := probe.Fingerprint{TTL: 59} // hop 6
	for _, tc := range []struct {
		name string
		attr *probe.Attribution
		want string
	}{
		{"no packet attributed", nil, ""},
		{"the server's TTL", ptr(probe.Attribute(probe.Segment{TTL: 59}, server)), "server"},
		{"a nearer sender, counted", ptr(probe.Attribute(probe.Segment{TTL: 62}, server)), "ttl-count"},
		{"another initial TTL, counted", ptr(probe.Attribute(probe.Segment{TTL: 250}, server)), "ttl-count"},
		{"counted but no server to compare with", ptr(probe.Attribute(probe.Segment{TTL: 62}, probe.Fingerprint{})), "ttl-count"},
		{"TTL unknown", ptr(probe.Attribute(probe.Segment{TTL: 0}, server)), "none"},
	} {
		if got := countMethod(tc.attr); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// The method of a finding: the reattribution's when it placed the sender,
// the count's otherwise.
func TestReattributionApplyMethod(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before string // the count's method
		result attrib.Result
		want   string
	}{
		{"fingerprint corrects the count", "ttl-count",
			attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Confidence: "high", Method: attrib.MethodFingerprint}, "fingerprint"},
		{"bracket", "ttl-count",
			attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 3, Candidates: []int{3, 4}, Confidence: "medium", Method: attrib.MethodBracket}, "bracket"},
		{"the server", "ttl-count",
			attrib.Result{Origin: attrib.OriginServer, Hop: 6, Confidence: "medium", Method: attrib.MethodServer}, "server"},
		{"nothing matched, only the count again", "ttl-count",
			attrib.Result{Origin: attrib.OriginMiddlebox, Hop: 4, Confidence: "low", Method: attrib.MethodTTLCount}, "ttl-count"},
		{"unknown: the count's stays", "server",
			attrib.Result{Origin: attrib.OriginUnknown, Confidence: "low", Method: attrib.MethodTTLCount}, "server"},
	} {
		f := Finding{Hop: 4, Origin: probe.OriginMiddlebox, Confidence: "high", Method: tc.before}
		(&reattribution{result: tc.result}).apply(&f)
		if f.Method != tc.want {
			t.Errorf("%s: method %q, want %q", tc.name, f.Method, tc.want)
		}
	}
	f := Finding{Method: "ttl-count"}
	var none *reattribution
	none.apply(&f)
	if f.Method != "ttl-count" {
		t.Errorf("no reattribution: method %q", f.Method)
	}
}

// Findings whose sender only the symmetric count placed (no capture to
// reattribute from) say so; without an attributed packet they name no
// method.
func TestCountFindingsMethod(t *testing.T) {
	server := probe.Fingerprint{TTL: 59}
	box, srv := probe.Attribute(probe.Segment{TTL: 62}, server), probe.Attribute(probe.Segment{TTL: 59}, server)
	s := &session{attr: &Attributor{}, res: Result{Target: "t", Address: "198.18.5.2"}}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		attrs []probe.Attribution
		want  string
	}{
		{"box by count", []probe.Attribution{box, box}, "ttl-count"},
		{"server", []probe.Attribution{srv}, "server"},
		{"nothing captured", nil, ""},
	} {
		if got := s.rateFinding(ctx, KindConnectReset, 2, 10, tc.attrs).Method; got != tc.want {
			t.Errorf("rate finding, %s: method %q, want %q", tc.name, got, tc.want)
		}
	}
	idle := &IdleResult{TimeoutS: 10, BracketS: [2]float64{8, 12}, Behaviour: behaviourReset}
	l := &Ladder{Lo: 8 * time.Second, Hi: 12 * time.Second}
	for _, tc := range []struct {
		name string
		fs   []idleFailure
		want string
	}{
		{"box by count", []idleFailure{{behaviour: behaviourReset, attr: &box}}, "ttl-count"},
		{"server", []idleFailure{{behaviour: behaviourReset, attr: &srv}}, "server"},
		{"no packet", []idleFailure{{behaviour: behaviourReset}}, ""},
	} {
		if got := s.idleFinding(ctx, l, idle, tc.fs).Method; got != tc.want {
			t.Errorf("idle finding, %s: method %q, want %q", tc.name, got, tc.want)
		}
	}
}

// capturedTCP is a captured IPv4 TCP packet of the flow client:40000 ↔
// server:443 (out: from the client), as the flow observer keeps it.
func capturedTCP(t *testing.T, server, client netip.Addr, ttl int, flags probe.TCPFlags, payload int, out bool) probe.CapturedPacket {
	t.Helper()
	src, dst := server, client
	if out {
		src, dst = client, server
	}
	seg, err := probe.BuildTCPSegment(src, dst, 443, 40000, 1, 1, flags, 1000, make([]byte, payload))
	if err != nil {
		t.Fatal(err)
	}
	ip, err := probe.BuildIPv4(src, dst, 6, ttl, 0, true, seg)
	if err != nil {
		t.Fatal(err)
	}
	return probe.CapturedPacket{Out: out, Data: ip, Length: len(ip)}
}
