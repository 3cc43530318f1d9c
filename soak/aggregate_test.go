package soak

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestBandOf(t *testing.T) {
	for _, c := range []struct {
		fresh bool
		age   time.Duration
		want  Band
	}{
		{true, time.Hour, BandFresh},
		{false, 0, BandUnder30s},
		{false, 29999 * time.Millisecond, BandUnder30s},
		{false, 30 * time.Second, Band30to60s},
		{false, 59 * time.Second, Band30to60s},
		{false, time.Minute, Band1to5m},
		{false, 5 * time.Minute, Band5to15m},
		{false, 15 * time.Minute, Band15mPlus},
		{false, 3 * time.Hour, Band15mPlus},
	} {
		if got := BandOf(c.fresh, c.age); got != c.want {
			t.Errorf("BandOf(%v, %v) = %s, want %s", c.fresh, c.age, got, c.want)
		}
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestAggregatorSummary(t *testing.T) {
	a := NewAggregator(3)
	// Minute 0: 100 fresh, 2 reset by a middlebox at hop 2.
	for i := 0; i < 100; i++ {
		s := Sample{At: t0.Add(time.Duration(i) * 100 * time.Millisecond), Fresh: true, Outcome: tcpcheck.OutcomeOK, LatencyMs: 2}
		if i < 2 {
			s.Outcome, s.Phase, s.Origin, s.Hop = tcpcheck.OutcomeRefused, PhaseConnect, probe.OriginMiddlebox, 2
		}
		a.Add(s)
	}
	// Minute 1: pooled, 10 s idle ok; 45 s idle reset at read.
	for i := 0; i < 10; i++ {
		a.Add(Sample{At: t0.Add(time.Minute), IdleAge: 10 * time.Second, Outcome: tcpcheck.OutcomeOK, LatencyMs: 1})
		a.Add(Sample{At: t0.Add(time.Minute), IdleAge: 45 * time.Second, Outcome: tcpcheck.OutcomeReset, Phase: PhaseRead,
			Origin: probe.OriginMiddlebox, Hop: 2, LatencyMs: 1})
	}
	s := a.Summarize()
	if s.Requests != 120 || s.Failures.Count != 12 || s.Resets.Count != 12 {
		t.Fatalf("totals %d %+v %+v", s.Requests, s.Failures, s.Resets)
	}
	if b := s.Bands[BandFresh]; b.Requests != 100 || b.Resets.Count != 2 || b.Resets.CI[0] > 0.02 || b.Resets.CI[1] < 0.02 {
		t.Errorf("fresh band %+v", b)
	}
	if b := s.Bands[BandUnder30s]; b.Requests != 10 || b.Failures.Count != 0 {
		t.Errorf("<30s band %+v", b)
	}
	if b := s.Bands[Band30to60s]; b.Requests != 10 || b.Failures.Count != 10 {
		t.Errorf("30-60s band %+v", b)
	}
	if s.Phases["connect"].Count != 2 || s.Phases["read"].Count != 10 {
		t.Errorf("phases %+v", s.Phases)
	}
	if h := s.ResetsByHop; len(h) != 1 || h[0].Origin != probe.OriginMiddlebox || h[0].Hop != 2 || h[0].Count != 12 || h[0].Method != "" ||
		s.ResetsByOrigin["middlebox"] != 12 {
		t.Errorf("resets by hop %+v, by origin %v", s.ResetsByHop, s.ResetsByOrigin)
	}
	if s.IdleBracketS != [2]float64{10, 45} {
		t.Errorf("idle bracket %v", s.IdleBracketS)
	}
	if len(s.Minutes) != 2 || s.Minutes[0].Requests != 100 || s.Minutes[1].Failures != 10 {
		t.Errorf("minutes %+v", s.Minutes)
	}
	if s.LatencyMs.P50 < 2 || s.LatencyMs.P50 > 2.6 {
		t.Errorf("latency %+v", s.LatencyMs)
	}
	fs := Findings(s)
	kinds := map[string]tcpcheck.Finding{}
	for _, f := range fs {
		kinds[f.Kind] = f
	}
	if f, ok := kinds[tcpcheck.KindConnectReset]; !ok || f.Hop != 2 || f.Origin != probe.OriginMiddlebox || f.Confidence != "high" {
		t.Errorf("connect-reset %+v (all %+v)", f, fs)
	}
}

func TestMinuteRingBounded(t *testing.T) {
	a := NewAggregator(5)
	for m := 0; m < 60; m++ {
		a.Add(Sample{At: t0.Add(time.Duration(m) * time.Minute), Outcome: tcpcheck.OutcomeOK})
	}
	// A sample older than the ring counts in the totals only.
	a.Add(Sample{At: t0, Outcome: tcpcheck.OutcomeOK})
	s := a.Summarize()
	if len(s.Minutes) != 5 || !s.Minutes[0].Start.Equal(t0.Add(55*time.Minute)) || s.Requests != 61 {
		t.Errorf("minutes %+v, requests %d", s.Minutes, s.Requests)
	}
}

func TestFindings(t *testing.T) {
	band := func(b Band, n, fail, reset int) BandReport {
		return BandReport{Band: b.String(), Requests: n, Failures: tcpcheck.NewRate(fail, n), Resets: tcpcheck.NewRate(reset, n)}
	}
	minute := func(m, server int) Minute {
		return Minute{Start: t0.Add(time.Duration(m) * time.Minute), Requests: 120, ResetsByOrigin: map[string]int{"server": server}}
	}
	for _, c := range []struct {
		name  string
		t     TargetReport
		kinds []string
		check func(t *testing.T, fs []tcpcheck.Finding)
	}{
		{"clean", TargetReport{Requests: 100, Bands: []BandReport{band(BandFresh, 10, 0, 0), band(BandUnder30s, 90, 0, 0)}}, nil, nil},
		{"idle reset above 20s", TargetReport{Requests: 200, Resets: tcpcheck.NewRate(20, 200), IdleBracketS: [2]float64{19.5, 21},
			ResetsByHop: []HopCount{{Origin: probe.OriginMiddlebox, Hop: 2, Count: 20}},
			Bands:       []BandReport{band(BandFresh, 20, 0, 0), band(BandUnder30s, 160, 0, 0), band(Band30to60s, 20, 20, 20)}},
			[]string{tcpcheck.KindIdleReset}, func(t *testing.T, fs []tcpcheck.Finding) {
				f := fs[0]
				if f.Hop != 2 || f.IdleTimeoutS != 20.3 || len(f.IdleBracketS) != 2 || f.Confidence != "high" {
					t.Errorf("%+v", f)
				}
				if strings.Contains(f.Advice, "load balancer") {
					t.Errorf("a middlebox's resets got the server-side advice: %q", f.Advice)
				}
			}},
		{"idle reset by the server side", TargetReport{Requests: 200, Resets: tcpcheck.NewRate(20, 200), IdleBracketS: [2]float64{19.5, 21},
			ResetsByHop: []HopCount{{Origin: probe.OriginServer, Hop: 4, Count: 20, Method: "server"}},
			Bands:       []BandReport{band(BandFresh, 20, 0, 0), band(BandUnder30s, 160, 0, 0), band(Band30to60s, 20, 20, 20)}},
			[]string{tcpcheck.KindIdleReset}, func(t *testing.T, fs []tcpcheck.Finding) {
				// The box that answered the SYN reset: a load balancer in
				// front of the server may be the one, and its settings are
				// named (as tcp and run do).
				if f := fs[0]; f.Origin != probe.OriginServer || !strings.Contains(f.Advice, "HAProxy timeout client") {
					t.Errorf("origin %s advice %q", f.Origin, f.Advice)
				}
			}},
		{"idle drop (timeouts)", TargetReport{Requests: 200, IdleBracketS: [2]float64{4, 75},
			Bands: []BandReport{band(BandFresh, 20, 0, 0), band(BandUnder30s, 160, 0, 0), band(Band1to5m, 20, 20, 0)}},
			[]string{tcpcheck.KindIdleDrop}, nil},
		{"syn resets", TargetReport{Requests: 1000, Resets: tcpcheck.NewRate(20, 1000), ResetsByHop: []HopCount{{Origin: probe.OriginMiddlebox, Hop: 2, Count: 20}},
			Bands: []BandReport{band(BandFresh, 1000, 20, 20)}},
			[]string{tcpcheck.KindConnectReset}, nil},
		{"failures everywhere", TargetReport{Requests: 1000, Failures: tcpcheck.NewRate(10, 1000),
			Bands: []BandReport{band(BandFresh, 100, 1, 0), band(BandUnder30s, 900, 9, 0)}},
			[]string{"soak-failures"}, nil},
		{"server restart burst", TargetReport{Requests: 600, ServerHop: 4,
			Bands: []BandReport{band(BandUnder30s, 600, 0, 0)}, Bursts: serverResetBursts([]Minute{minute(0, 0), minute(1, 0), minute(2, 9), minute(3, 0)})},
			[]string{"server-restart"}, func(t *testing.T, fs []tcpcheck.Finding) {
				if fs[0].Hop != 4 || len(fs[0].Evidence) != 1 {
					t.Errorf("%+v", fs[0])
				}
			}},
		{"steady server resets are no burst", TargetReport{Requests: 600,
			Bands: []BandReport{band(BandUnder30s, 600, 0, 0)}, Bursts: serverResetBursts([]Minute{minute(0, 3), minute(1, 4), minute(2, 3)})},
			nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := Findings(c.t)
			var kinds []string
			for _, f := range fs {
				kinds = append(kinds, f.Kind)
			}
			if len(kinds) != len(c.kinds) {
				t.Fatalf("kinds %v, want %v", kinds, c.kinds)
			}
			for i := range kinds {
				if kinds[i] != c.kinds[i] {
					t.Fatalf("kinds %v, want %v", kinds, c.kinds)
				}
			}
			if c.check != nil {
				c.check(t, fs)
			}
		})
	}
}

func TestNextRestFitsBandsAndEnd(t *testing.T) {
	w := &worker{}
	now := t0
	seen := map[Band]int{}
	for i := 0; i < 40; i++ {
		d, ok := w.nextRest(now, now.Add(2*time.Hour))
		if !ok {
			t.Fatal("no rest in a 2 h soak")
		}
		b := BandOf(false, d)
		if b == BandUnder30s || b == BandFresh {
			t.Errorf("rest %v in band %s", d, b)
		}
		seen[b]++
	}
	if len(seen) != 4 {
		t.Errorf("bands %v", seen)
	}
	// 60 s soak: only 30-60 s fits, ending 5 s before the end.
	for i := 0; i < 20; i++ {
		d, ok := w.nextRest(now, now.Add(time.Minute))
		if !ok || d < 30*time.Second || d > 55*time.Second {
			t.Errorf("rest %v %v in a 60 s soak", d, ok)
		}
	}
	if _, ok := w.nextRest(now, now.Add(30*time.Second)); ok {
		t.Errorf("a rest in a 30 s soak")
	}
}

// BenchmarkSoakMemory feeds the aggregator millions of synthetic request
// outcomes (hours of soak at a high rate, with resets, every band and
// phase) and reports the heap in use after each million: it must not grow
// (fixed-size aggregates, no per-request log). Run with `make bench` or
// `go test -run '^$' -bench SoakMemory ./soak`.
func BenchmarkSoakMemory(b *testing.B) {
	const perRound = 1_000_000
	var heap []uint64
	var ms runtime.MemStats
	b.ReportAllocs()
	for b.Loop() {
		a := NewAggregator(DefaultMinuteRing)
		heap = heap[:0]
		at := t0
		for round := 0; round < 5; round++ {
			for i := 0; i < perRound; i++ {
				at = at.Add(10 * time.Millisecond) // 100 req/s: 5 M samples = 14 h
				s := Sample{At: at, Fresh: i%10 == 0, IdleAge: time.Duration(i%2000) * time.Second, Outcome: tcpcheck.OutcomeOK,
					LatencyMs: float64(i%500) / 10}
				if i%997 == 0 {
					s.Outcome, s.Phase, s.Origin, s.Hop = tcpcheck.OutcomeReset, Phase(1+i%4), origins[i%3], i%30
				}
				a.Add(s)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heap = append(heap, ms.HeapAlloc)
		}
		_ = a.Summarize()
	}
	first, last := heap[0], heap[len(heap)-1]
	b.ReportMetric(float64(first), "heap-bytes-after-1M")
	b.ReportMetric(float64(last), "heap-bytes-after-5M")
	if float64(last) > 1.1*float64(first) {
		b.Fatalf("heap grew from %d to %d bytes between 1 M and 5 M samples", first, last)
	}
}

// The text report ends with the soak's warnings, once each, as tcp's and
// run's do; none without.
func TestWriteTextWarnings(t *testing.T) {
	var buf strings.Builder
	r := Report{Warnings: []string{"packet captures are unavailable (x)", "no CAP_NET_RAW"}}
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, w := range r.Warnings {
		if strings.Count(text, "warning: "+w+"\n") != 1 {
			t.Errorf("warning %q not once in\n%s", w, text)
		}
	}
	if !strings.HasSuffix(text, "warning: no CAP_NET_RAW\n") || strings.Index(text, "no findings") > strings.Index(text, "warning:") {
		t.Errorf("warnings not at the end:\n%s", text)
	}
	buf.Reset()
	if err := WriteText(&buf, Report{}); err != nil || strings.Contains(buf.String(), "warning") {
		t.Errorf("warnings without any: %v\n%s", err, buf.String())
	}
}
