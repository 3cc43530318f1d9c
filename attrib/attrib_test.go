package attrib

import (
	"slices"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/internal/tri"
)

// path builds the hop fingerprints of a chain of n routers whose ICMP
// starts at initial[h] (64 when absent) and comes back over return[h]
// routers (h−1 when absent: symmetric); silent hops send nothing.
type path struct {
	n       int
	initial map[int]int
	ret     map[int]int
	silent  map[int]bool
}

func (p path) returnOf(h int) int {
	if r, ok := p.ret[h]; ok {
		return r
	}
	return h - 1
}

func (p path) initialOf(h int) int {
	if i, ok := p.initial[h]; ok {
		return i
	}
	return 64
}

// received is the TTL at the client of a packet hop h sends.
func (p path) received(h int) int { return p.initialOf(h) - p.returnOf(h) }

func (p path) hops() []HopPrint {
	var out []HopPrint
	for h := 1; h <= p.n; h++ {
		if p.silent[h] {
			continue
		}
		out = append(out, HopPrint{Hop: h, TTL: p.received(h), IPIDZero: tri.No, Samples: 2})
	}
	return out
}

// detour returns the return distances of a path whose routers from
// `from` on come back over extra more routers.
func detour(n, from, extra int) map[int]int {
	m := map[int]int{}
	for h := from; h <= n+1; h++ {
		m[h] = h - 1 + extra
	}
	return m
}

func TestAttribute(t *testing.T) {
	const n = 5 // routers; the server is hop 6
	// A Linux box at hop 3 resetting expired flows: time-exceeded up to
	// TTL 3, RST from TTL 4.
	linuxAt3 := &Bracket{LastForwarded: 3, FirstBlocked: 4}
	tests := []struct {
		name       string
		p          path
		sender     int  // hop that sends the RST (n+1: server)
		forge      bool // the RST carries the server's TTL
		bracket    *Bracket
		answer     tri.State
		wantOrigin string
		wantHop    int
		wantCands  []int
		wantConf   []string // allowed
		wantObs    []Observation
		noObs      []Observation
		wantText   string
	}{
		{name: "symmetric, fingerprint", p: path{n: n}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, noObs: []Observation{ObsAsymmetricReturn}},
		{name: "symmetric, no bracket", p: path{n: n}, sender: 3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}},
		{name: "detour +1 before the culprit (at hop 2)", p: path{n: n, ret: detour(n, 2, 1)}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, wantObs: []Observation{ObsAsymmetricReturn}, wantText: "would have named hop 4"},
		{name: "detour +2 at the culprit, no bracket (tcp idle)", p: path{n: n, ret: detour(n, 3, 2)}, sender: 3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, wantObs: []Observation{ObsAsymmetricReturn}, wantText: "would have named hop 5"},
		{name: "detour +2 before the culprit", p: path{n: n, ret: detour(n, 1, 2)}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, wantObs: []Observation{ObsAsymmetricReturn}},
		{name: "detour +1 after the culprit", p: path{n: n, ret: detour(n, 4, 1)}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, noObs: []Observation{ObsAsymmetricReturn}},
		{name: "detour +2 after the culprit, no bracket", p: path{n: n, ret: detour(n, 4, 2)}, sender: 3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}},
		{name: "filter-first box at hop 4 (k+1)", p: path{n: n}, sender: 4, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 4, wantCands: []int{4}, wantConf: []string{"high"}},
		{name: "filter-first box at hop 4, detour +1 at hop 4: the count says 5", p: path{n: n, ret: detour(n, 4, 1)}, sender: 4, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 4, wantCands: []int{4}, wantConf: []string{"high"}, wantObs: []Observation{ObsAsymmetricReturn}},
		{name: "box at initial TTL 255", p: path{n: n, initial: map[int]int{3: 255}}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}},
		{name: "box at initial TTL 128, no bracket", p: path{n: n, initial: map[int]int{3: 128}}, sender: 3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}},
		{name: "box at 255 with a detour +1 before it", p: path{n: n, initial: map[int]int{3: 255}, ret: detour(n, 2, 1)}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3}, wantConf: []string{"high"}, wantObs: []Observation{ObsAsymmetricReturn}},
		{name: "forged server TTL, in-flow bracket", p: path{n: n}, sender: 3, forge: true, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3, 4}, wantConf: []string{"medium", "low"}, wantObs: []Observation{ObsForgedTTL}, wantText: "forged"},
		{name: "server TTL without bracket is the server", p: path{n: n}, sender: n + 1,
			wantOrigin: OriginServer, wantHop: n + 1, wantConf: []string{"medium"}},
		{name: "server reset reached by in-flow probes", p: path{n: n}, sender: n + 1, bracket: &Bracket{LastForwarded: n, FirstBlocked: n + 1},
			wantOrigin: OriginServer, wantHop: n + 1, wantConf: []string{"high"}, noObs: []Observation{ObsForgedTTL}},
		{name: "no ICMP at hop 3: both candidates", p: path{n: n, silent: map[int]bool{3: true}}, sender: 3, bracket: &Bracket{LastForwarded: 2, FirstBlocked: 4},
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3, 4}, wantConf: []string{"medium", "low"}, wantText: "sends no ICMP"},
		{name: "no ICMP at hop 3, no bracket: the count, low", p: path{n: n, silent: map[int]bool{3: true}}, sender: 3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantConf: []string{"low"}, wantText: "assumes a return path"},
		{name: "on-path injector", p: path{n: n}, sender: 3, bracket: linuxAt3, answer: tri.Yes,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantConf: []string{"high"}, wantObs: []Observation{ObsOnPathInjection}, noObs: []Observation{ObsInPathBlocking}},
		{name: "in-path blocker", p: path{n: n}, sender: 3, bracket: linuxAt3, answer: tri.No,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantConf: []string{"high"}, wantObs: []Observation{ObsInPathBlocking}, noObs: []Observation{ObsOnPathInjection}},
		{name: "a box at the server's position with another initial TTL", p: path{n: n, initial: map[int]int{n + 1: 64, 99: 255}, ret: map[int]int{99: n}}, sender: 99,
			bracket:    &Bracket{LastForwarded: n, FirstBlocked: n + 1},
			wantOrigin: OriginMiddlebox, wantHop: n + 1, wantCands: []int{n + 1}, wantConf: []string{"medium"}, wantText: "server's position"},
		{name: "two hops alike inside the bracket: undecided", p: path{n: n, ret: map[int]int{3: 3, 4: 3}}, sender: 3, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantCands: []int{3, 4}, wantConf: []string{"medium"}},
		{name: "fingerprint outside the bracket: the bracket wins", p: path{n: n, ret: map[int]int{1: 2}, silent: map[int]bool{3: true, 4: true}}, sender: 1, bracket: linuxAt3,
			wantOrigin: OriginMiddlebox, wantHop: 3, wantCands: []int{3, 4}, wantConf: []string{"medium"}, wantText: "forward evidence wins"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server := Fingerprint{TTL: tc.p.received(n + 1), IPID: 0, DF: true}
			pkt := Fingerprint{TTL: tc.p.received(tc.sender), IPID: 0, DF: true}
			if tc.forge {
				pkt.TTL = server.TTL
			}
			in := Input{Packet: pkt, Server: server, ServerHop: n + 1, Hops: tc.p.hops(), Bracket: tc.bracket, ServerAnswerAfter: tc.answer}
			if in.ServerAnswerAfter == "" {
				in.ServerAnswerAfter = tri.NotTested
			}
			r := Attribute(in)
			text := strings.Join(r.Evidence, " | ")
			if r.Origin != tc.wantOrigin {
				t.Fatalf("origin %s, want %s; %s", r.Origin, tc.wantOrigin, text)
			}
			if tc.wantHop != 0 && r.Hop != tc.wantHop {
				t.Errorf("hop %d, want %d; %s", r.Hop, tc.wantHop, text)
			}
			if tc.wantCands != nil && !slices.Equal(r.Candidates, tc.wantCands) {
				t.Errorf("candidates %v, want %v; %s", r.Candidates, tc.wantCands, text)
			}
			if len(tc.wantCands) > 1 && r.Decided() {
				t.Errorf("decided with candidates %v", r.Candidates)
			}
			if !slices.Contains(tc.wantConf, r.Confidence) {
				t.Errorf("confidence %s, want one of %v; %s", r.Confidence, tc.wantConf, text)
			}
			for _, o := range tc.wantObs {
				if !slices.Contains(r.Observations, o) {
					t.Errorf("observations %v lack %s; %s", r.Observations, o, text)
				}
			}
			for _, o := range tc.noObs {
				if slices.Contains(r.Observations, o) {
					t.Errorf("observations %v have %s; %s", r.Observations, o, text)
				}
			}
			if tc.wantText != "" && !strings.Contains(text, tc.wantText) {
				t.Errorf("evidence %q lacks %q", text, tc.wantText)
			}
			if len(r.Evidence) == 0 {
				t.Errorf("no evidence")
			}
		})
	}
}

// The symmetric count is what the old attribution did: the asymmetric
// cases above must differ from it, or they would test nothing.
func TestAsymmetricCasesDefeatTheCount(t *testing.T) {
	p := path{n: 5, ret: detour(5, 2, 1)}
	pkt := Fingerprint{TTL: p.received(3)}
	if got := pkt.Return() + 1; got != 4 {
		t.Fatalf("the symmetric count says hop %d, want the wrong hop 4", got)
	}
}

func TestUnknownPacketTTL(t *testing.T) {
	r := Attribute(Input{Packet: Fingerprint{TTL: -1}})
	if r.Origin != OriginUnknown || r.Confidence != ConfidenceLow || len(r.Evidence) == 0 {
		t.Errorf("%+v", r)
	}
	r = Attribute(Input{Packet: Fingerprint{TTL: -1}, Bracket: &Bracket{LastForwarded: 2, FirstBlocked: 3}})
	if r.Origin != OriginMiddlebox || !slices.Equal(r.Candidates, []int{2, 3}) || r.Confidence == ConfidenceHigh {
		t.Errorf("%+v", r)
	}
}

func TestLowerConfidence(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{ConfidenceHigh, ConfidenceLow, ConfidenceLow},
		{ConfidenceLow, ConfidenceHigh, ConfidenceLow},
		{ConfidenceMedium, ConfidenceHigh, ConfidenceMedium},
		{"", ConfidenceMedium, ConfidenceMedium},
		{ConfidenceHigh, "", ConfidenceHigh},
		{"", "", ""},
	} {
		if got := LowerConfidence(c.a, c.b); got != c.want {
			t.Errorf("LowerConfidence(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}
