package soak

import (
	"bytes"
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Paths of three routers and the server at hop 4, as the hops' ICMP
// answers fingerprint them.
var (
	// symmetricPath: every answer crosses hop−1 routers back; the
	// server's SYN-ACK arrives with 61.
	symmetricPath = tcpcheck.PathPrints{ServerHop: 4, Hops: []attrib.HopPrint{
		{Hop: 1, Address: "198.18.0.1", TTL: 64}, {Hop: 2, Address: "198.18.1.2", TTL: 63}, {Hop: 3, Address: "198.18.2.2", TTL: 62}}}
	// detourPath: router 3 sends back over two extra routers (a
	// longer return path): its answers and RSTs arrive with 60, as if
	// from hop 5 by a count; the server's SYN-ACK with 59.
	detourPath = tcpcheck.PathPrints{ServerHop: 4, Hops: []attrib.HopPrint{
		{Hop: 1, Address: "198.18.0.1", TTL: 64}, {Hop: 2, Address: "198.18.1.2", TTL: 63}, {Hop: 3, Address: "198.19.251.1", TTL: 60}}}
)

func rst(ttl int) probe.Segment {
	return probe.Segment{TTL: ttl, IPID: 0, DF: true, Flags: probe.FlagRST | probe.FlagACK}
}

func TestPlaceReset(t *testing.T) {
	for _, c := range []struct {
		name        string
		seg         probe.Segment
		serverTTL   int
		pp          tcpcheck.PathPrints
		answerAfter tri.State
		origin      probe.Origin
		hop         int
		method      string
		confidence  string
		address     string
		countHop    int
		obs         []string
		evidence    string
	}{
		{name: "symmetric path: the fingerprint agrees with the count", seg: rst(62), serverTTL: 61, pp: symmetricPath,
			origin: probe.OriginMiddlebox, hop: 3, method: "fingerprint", confidence: "high", address: "198.18.2.2", countHop: 3,
			evidence: "hop 3 (198.18.2.2)'s time-exceeded answers match its TTL (TTL 62)"},
		{name: "asymmetric return: a count says hop 5, the fingerprint hop 3", seg: rst(60), serverTTL: 59, pp: detourPath,
			origin: probe.OriginMiddlebox, hop: 3, method: "fingerprint", confidence: "high", address: "198.19.251.1", countHop: 5,
			obs: []string{"asymmetric-return"}, evidence: "counting the RST's TTL would have named hop 5"},
		{name: "asymmetric return, in-path box: nothing of the server followed", seg: rst(60), serverTTL: 59, pp: detourPath,
			answerAfter: tri.No, origin: probe.OriginMiddlebox, hop: 3, method: "fingerprint", confidence: "high",
			address: "198.19.251.1", countHop: 5, obs: []string{"asymmetric-return", "in-path-blocking"}},
		{name: "asymmetric return without fingerprints: the count, low confidence", seg: rst(60), serverTTL: 59,
			origin: probe.OriginMiddlebox, hop: 5, method: "ttl-count", confidence: "low", countHop: 5,
			evidence: "no hop fingerprints to compare with"},
		{name: "the server's RST: its SYN-ACK's TTL", seg: rst(59), serverTTL: 59, pp: detourPath,
			origin: probe.OriginServer, hop: 6, method: "server", confidence: "medium", countHop: 6,
			evidence: "as the server's SYN-ACK does"},
		{name: "a FIN is named a FIN", seg: probe.Segment{TTL: 60, IPID: -1, Flags: probe.FlagFIN | probe.FlagACK}, serverTTL: 59,
			pp: detourPath, origin: probe.OriginMiddlebox, hop: 3, method: "fingerprint", confidence: "high", address: "198.19.251.1",
			countHop: 5, obs: []string{"asymmetric-return"}, evidence: "the FIN arrives with TTL 60"},
		{name: "TTL unknown", seg: rst(-1), serverTTL: 59, pp: detourPath, origin: probe.OriginUnknown, method: "none", confidence: "low"},
	} {
		t.Run(c.name, func(t *testing.T) {
			server := probe.Fingerprint{TTL: c.serverTTL}
			at := c.answerAfter
			if at == "" {
				at = tri.NotTested
			}
			origin, hop, pl := placeReset(c.seg, server, probe.Attribute(c.seg, server), c.pp, at)
			ev := strings.Join(pl.Evidence, "\n")
			if origin != c.origin || hop != c.hop || pl.Method != c.method || pl.Confidence != c.confidence || pl.HopAddress != c.address ||
				pl.CountHop != c.countHop || !slices.Equal(pl.Observations, c.obs) || !strings.Contains(ev, c.evidence) {
				t.Errorf("got %s hop %d %+v\nwant %s hop %d method %s confidence %s address %q count hop %d observations %v evidence with %q",
					origin, hop, pl, c.origin, c.hop, c.method, c.confidence, c.address, c.countHop, c.obs, c.evidence)
			}
		})
	}
}

// Resets are grouped by the hop they were placed at; each entry carries
// its commonest method's details and every observation.
func TestResetsByHopGroupsByPlacedHop(t *testing.T) {
	a := NewAggregator(3)
	server := probe.Fingerprint{TTL: 59}
	add := func(seg probe.Segment, pp tcpcheck.PathPrints, answerAfter tri.State) {
		o, h, pl := placeReset(seg, server, probe.Attribute(seg, server), pp, answerAfter)
		a.Add(Sample{At: t0, IdleAge: 45 * time.Second, Outcome: tcpcheck.OutcomeReset, Phase: PhaseRead, Origin: o, Hop: h, Place: pl})
	}
	add(rst(60), detourPath, tri.NotTested)
	add(rst(60), detourPath, tri.No)
	add(rst(60), detourPath, tri.NotTested)
	add(rst(60), tcpcheck.PathPrints{}, tri.NotTested) // before any fingerprints: counted, hop 5
	add(rst(59), detourPath, tri.NotTested)            // the server
	s := a.Summarize()
	if len(s.ResetsByHop) != 3 {
		t.Fatalf("resets by hop %+v", s.ResetsByHop)
	}
	h := s.ResetsByHop[0]
	if h.Origin != probe.OriginMiddlebox || h.Hop != 3 || h.Count != 3 || h.Method != "fingerprint" || h.Confidence != "high" ||
		h.HopAddress != "198.19.251.1" || h.TTLCountHop != 5 || !slices.Equal(h.Observations, []string{"asymmetric-return", "in-path-blocking"}) ||
		h.Methods["fingerprint"] != 3 || len(h.Evidence) == 0 {
		t.Errorf("hop 3 entry %+v", h)
	}
	byHop := map[int]HopCount{}
	for _, x := range s.ResetsByHop[1:] {
		byHop[x.Hop] = x
	}
	if x := byHop[5]; x.Origin != probe.OriginMiddlebox || x.Count != 1 || x.Method != "ttl-count" || x.Confidence != "low" {
		t.Errorf("hop 5 entry %+v", x)
	}
	if x := byHop[6]; x.Origin != probe.OriginServer || x.Count != 1 || x.Method != "server" {
		t.Errorf("server entry %+v", x)
	}
	// One hop, two methods: the commonest names the entry, the other is
	// counted; the confidence is the lowest of the commonest method's.
	b := NewAggregator(3)
	for i, pl := range []Placement{
		{Method: "fingerprint", Confidence: "high", HopAddress: "198.18.2.2", CountHop: 3},
		{Method: "fingerprint", Confidence: "medium", CountHop: 3},
		{Method: "ttl-count", Confidence: "low", CountHop: 3},
	} {
		b.Add(Sample{At: t0.Add(time.Duration(i) * time.Second), Fresh: true, Outcome: tcpcheck.OutcomeResetInHandshake,
			Origin: probe.OriginMiddlebox, Hop: 3, Place: pl})
	}
	if hs := b.Summarize().ResetsByHop; len(hs) != 1 || hs[0].Method != "fingerprint" || hs[0].Confidence != "medium" ||
		hs[0].HopAddress != "198.18.2.2" || hs[0].Methods["fingerprint"] != 2 || hs[0].Methods["ttl-count"] != 1 {
		t.Errorf("mixed entry %+v", hs)
	}
}

// The finding built from a placed entry says what `tcp idle` says of a
// reattributed one: the hop, its address, the correction of the count,
// the observations, a confidence no higher than the placement's.
func TestFindingsCarryPlacement(t *testing.T) {
	bands := []BandReport{
		{Band: "fresh", Requests: 20, Failures: tcpcheck.NewRate(0, 20), Resets: tcpcheck.NewRate(0, 20)},
		{Band: "<30s", Requests: 160, Failures: tcpcheck.NewRate(20, 160), Resets: tcpcheck.NewRate(20, 160)},
	}
	placed := HopCount{Origin: probe.OriginMiddlebox, Hop: 3, Count: 20, Method: "fingerprint", Methods: map[string]int{"fingerprint": 20},
		Confidence: "high", Observations: []string{"asymmetric-return"}, HopAddress: "198.19.251.1", TTLCountHop: 5,
		Evidence: []string{"the RST arrives with TTL 60 (initial 64, 4 routers on the way back); hop 3 (198.19.251.1)'s time-exceeded answers match its TTL (TTL 60)"}}
	counted := HopCount{Origin: probe.OriginMiddlebox, Hop: 5, Count: 20, Method: "ttl-count", Confidence: "low", TTLCountHop: 5,
		Evidence: []string{"no hop fingerprints to compare with: counting 64−60 assumes a return path as long as the way there, hop 5"}}
	undecided := HopCount{Origin: probe.OriginMiddlebox, Hop: 3, Count: 20, Method: "fingerprint", Confidence: "medium",
		HopCandidates: []int{2, 3}, TTLCountHop: 3}
	for _, c := range []struct {
		name       string
		h          HopCount
		hop        int
		address    string
		confidence string
		obs        []string
		cands      []int
		evidence   []string
	}{
		{"fingerprint corrects the count", placed, 3, "198.19.251.1", "high", []string{"asymmetric-return"}, nil,
			[]string{"at hop 3 (198.19.251.1), placed by fingerprint", "correct the TTL count: hop 3, not hop 5", "match its TTL"}},
		{"the count alone stays low", counted, 5, "", "low", nil, nil, []string{"placed by ttl-count", "no hop fingerprints"}},
		{"undecided between two hops", undecided, 3, "", "medium", nil, []int{2, 3}, []string{"placed by fingerprint"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := TargetReport{Target: "tcp://lab", Address: "198.18.9.2", Requests: 180, Resets: tcpcheck.NewRate(20, 180),
				Failures: tcpcheck.NewRate(20, 180), Bands: bands, ResetsByHop: []HopCount{c.h}, IdleBracketS: [2]float64{1, 4}}
			fs := Findings(tr)
			if len(fs) != 1 || fs[0].Kind != tcpcheck.KindIdleReset {
				t.Fatalf("findings %+v", fs)
			}
			f := fs[0]
			ev := strings.Join(f.Evidence, "\n")
			if f.Hop != c.hop || f.HopAddress != c.address || f.Confidence != c.confidence || !slices.Equal(f.Observations, c.obs) ||
				!slices.Equal(f.HopCandidates, c.cands) {
				t.Errorf("finding hop %d (%s) confidence %s observations %v candidates %v", f.Hop, f.HopAddress, f.Confidence, f.Observations, f.HopCandidates)
			}
			for _, want := range c.evidence {
				if !strings.Contains(ev, want) {
					t.Errorf("evidence lacks %q:\n%s", want, ev)
				}
			}
			var buf bytes.Buffer
			if err := WriteText(&buf, Report{Targets: []TargetReport{tr}, Findings: fs}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), "by "+c.h.Method) {
				t.Errorf("text report without the method:\n%s", buf.String())
			}
		})
	}
}

// The fingerprints of an address are traced once when a reset first
// needs them (concurrent resets wait for that one trace), reused, and
// refreshed in the background once older than the refresh period.
func TestPrintCacheTracesOncePerPeriod(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	lookup := func(ctx context.Context, dst netip.AddrPort, maxHop int) tcpcheck.PathPrints {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			<-release // the first trace takes a while
		}
		pp := detourPath
		pp.ServerHop = 3 + n // tells the traces apart
		return pp
	}
	now := t0
	var clock sync.Mutex
	p := newPrintCache(lookup, netip.MustParseAddrPort("198.18.9.2:443"))
	p.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	ctx := context.Background()

	got := make(chan tcpcheck.PathPrints, 3)
	for range 3 {
		go func() { got <- p.get(ctx, 30) }()
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case pp := <-got:
		t.Fatalf("a reset did not wait for the first trace: %+v", pp)
	default:
	}
	close(release)
	for range 3 {
		if pp := <-got; pp.ServerHop != 4 {
			t.Errorf("first fingerprints: server hop %d", pp.ServerHop)
		}
	}
	clock.Lock()
	now = now.Add(9 * time.Minute)
	clock.Unlock()
	if pp := p.get(ctx, 30); pp.ServerHop != 4 {
		t.Errorf("within the period: server hop %d", pp.ServerHop)
	}
	mu.Lock()
	if calls != 1 {
		t.Errorf("%d traces within the period, want 1", calls)
	}
	mu.Unlock()
	clock.Lock()
	now = now.Add(2 * time.Minute)
	clock.Unlock()
	// Stale: the old fingerprints at once, a new trace behind them.
	if pp := p.get(ctx, 30); pp.ServerHop != 4 {
		t.Errorf("stale get: server hop %d, want the old 4", pp.ServerHop)
	}
	p.wait()
	if pp := p.get(ctx, 30); pp.ServerHop != 5 {
		t.Errorf("after the refresh: server hop %d, want 5", pp.ServerHop)
	}
	mu.Lock()
	if calls != 2 {
		t.Errorf("%d traces, want 2", calls)
	}
	mu.Unlock()
}

// A trace cut short by the end of the soak is not kept, and a reset
// waiting for it returns.
func TestPrintCacheEndOfSoak(t *testing.T) {
	lookup := func(ctx context.Context, dst netip.AddrPort, maxHop int) tcpcheck.PathPrints {
		<-ctx.Done()
		return tcpcheck.PathPrints{ServerHop: 9}
	}
	p := newPrintCache(lookup, netip.MustParseAddrPort("198.18.9.2:443"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan tcpcheck.PathPrints)
	go func() { done <- p.get(ctx, 30) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	pp := <-done
	p.wait()
	if pp.ServerHop != 0 || !p.at.IsZero() {
		t.Errorf("a cancelled trace was kept: %+v at %v", pp, p.at)
	}
}

// A soak finding names what placed its resets: the majority entry's
// method, the count's (ttl-count, or server) for an entry of a report
// without placements, server for a burst of server resets, and none when
// no reset was attributed.
func TestFindingsMethod(t *testing.T) {
	bands := []BandReport{
		{Band: "fresh", Requests: 20, Failures: tcpcheck.NewRate(0, 20), Resets: tcpcheck.NewRate(0, 20)},
		{Band: "<30s", Requests: 160, Failures: tcpcheck.NewRate(20, 160), Resets: tcpcheck.NewRate(20, 160)},
	}
	for _, c := range []struct {
		name  string
		hops  []HopCount
		burst bool
		want  map[string]string // kind → method
	}{
		{"fingerprint", []HopCount{{Origin: probe.OriginMiddlebox, Hop: 3, Count: 20, Method: "fingerprint", Confidence: "high"}}, false,
			map[string]string{tcpcheck.KindIdleReset: "fingerprint"}},
		{"bracket", []HopCount{{Origin: probe.OriginMiddlebox, Hop: 3, Count: 20, Method: "bracket", Confidence: "medium"}}, false,
			map[string]string{tcpcheck.KindIdleReset: "bracket"}},
		{"the majority's method", []HopCount{
			{Origin: probe.OriginMiddlebox, Hop: 5, Count: 5, Method: "ttl-count", Confidence: "low"},
			{Origin: probe.OriginMiddlebox, Hop: 3, Count: 15, Method: "fingerprint", Confidence: "high"}}, false,
			map[string]string{tcpcheck.KindIdleReset: "fingerprint"}},
		{"an older report: the count", []HopCount{{Origin: probe.OriginMiddlebox, Hop: 3, Count: 20}}, false,
			map[string]string{tcpcheck.KindIdleReset: "ttl-count"}},
		{"an older report: the server", []HopCount{{Origin: probe.OriginServer, Hop: 6, Count: 20}}, false,
			map[string]string{tcpcheck.KindIdleReset: "server"}},
		{"nothing attributed", nil, false, map[string]string{tcpcheck.KindIdleReset: ""}},
		{"a burst of server resets", nil, true, map[string]string{tcpcheck.KindIdleReset: "", "server-restart": "server"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := TargetReport{Target: "tcp://lab", Address: "198.18.9.2", Requests: 180, Resets: tcpcheck.NewRate(20, 180),
				Failures: tcpcheck.NewRate(20, 180), Bands: bands, ResetsByHop: c.hops, IdleBracketS: [2]float64{1, 4}, ServerHop: 6}
			if c.burst {
				tr.Bursts = []Minute{{Start: t0, Requests: 60, ResetsByOrigin: map[string]int{"server": 9}}}
			}
			got := map[string]string{}
			for _, f := range Findings(tr) {
				got[f.Kind] = f.Method
			}
			if !maps.Equal(got, c.want) {
				t.Errorf("methods %v, want %v", got, c.want)
			}
		})
	}
}
