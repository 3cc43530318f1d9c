// Package soak sends real requests toward a service for hours, the way a
// UOF client does (a keep-alive pool plus a share of fresh connections),
// and measures how often they fail, in which phase, after how long idle,
// and who reset them. Everything it keeps is a streaming aggregate of
// fixed size, so memory stays flat for any duration.
package soak

import (
	"math"
	"slices"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Band is an idle-age stratum: how long the connection of a request had
// been idle before it (fresh: a new connection).
type Band int

// Idle-age bands.
const (
	BandFresh Band = iota
	BandUnder30s
	Band30to60s
	Band1to5m
	Band5to15m
	Band15mPlus
	numBands
)

var bandNames = [numBands]string{"fresh", "<30s", "30-60s", "1-5m", "5-15m", "15m+"}

// bandLimits are the [lo, hi) idle ages of each band (fresh: none).
var bandLimits = [numBands][2]time.Duration{
	{0, 0},
	{0, 30 * time.Second},
	{30 * time.Second, time.Minute},
	{time.Minute, 5 * time.Minute},
	{5 * time.Minute, 15 * time.Minute},
	{15 * time.Minute, 30 * time.Minute}, // resting targets stop at 30 min; ages above still count here
}

func (b Band) String() string {
	if b < 0 || b >= numBands {
		return "unknown"
	}
	return bandNames[b]
}

// BandOf is the band of a request on a pooled connection idle for age.
func BandOf(fresh bool, age time.Duration) Band {
	if fresh {
		return BandFresh
	}
	for b := BandUnder30s; b < Band15mPlus; b++ {
		if age < bandLimits[b][1] {
			return b
		}
	}
	return Band15mPlus
}

// Phase is where a failed request failed.
type Phase int

// Phases of a request.
const (
	PhaseNone    Phase = iota // it did not fail
	PhaseConnect              // TCP handshake
	PhaseTLS                  // TLS handshake
	PhaseWrite                // sending the request
	PhaseRead                 // waiting for / reading the answer
	numPhases
)

var phaseNames = [numPhases]string{"", "connect", "tls", "write", "read"}

func (p Phase) String() string {
	if p < 0 || p >= numPhases {
		return "unknown"
	}
	return phaseNames[p]
}

// outcomes are the tcpcheck outcomes, indexed for fixed-size counters.
var outcomes = []tcpcheck.Outcome{tcpcheck.OutcomeOK, tcpcheck.OutcomeRefused, tcpcheck.OutcomeResetInHandshake,
	tcpcheck.OutcomeReset, tcpcheck.OutcomeTimeout, tcpcheck.OutcomeClosed, tcpcheck.OutcomeTLSError, tcpcheck.OutcomeLoginRefused,
	tcpcheck.OutcomeAppError}

const numOutcomes = 9

func outcomeIndex(o tcpcheck.Outcome) int {
	for i, x := range outcomes {
		if x == o {
			return i
		}
	}
	return numOutcomes - 1 // app-error: anything unknown
}

var origins = []probe.Origin{probe.OriginServer, probe.OriginMiddlebox, probe.OriginUnknown}

const numOrigins = 3

func originIndex(o probe.Origin) int {
	switch o {
	case probe.OriginServer:
		return 0
	case probe.OriginMiddlebox:
		return 1
	}
	return 2
}

// maxHop bounds the per-hop counters (TTL-derived hops are ≤ 255).
const maxHop = 255

// Sample is the outcome of one request.
type Sample struct {
	At      time.Time
	Fresh   bool
	IdleAge time.Duration // pooled: idle time before the request
	Outcome tcpcheck.Outcome
	Phase   Phase
	// Origin and Hop of a captured RST or FIN that ended it ("" if none
	// was captured: no CAP_NET_RAW, or a timeout).
	Origin probe.Origin
	Hop    int
	// Place is how Origin and Hop were decided (return-path
	// fingerprints, or a symmetric count).
	Place     Placement
	LatencyMs float64 // the whole request (fresh: dial and first exchange)
}

// counts is one stratum's counters.
type counts struct {
	requests int
	failures int
	resets   int
	outcomes [numOutcomes]int
}

func (c *counts) add(s Sample, failed, reset bool) {
	c.requests++
	c.outcomes[outcomeIndex(s.Outcome)]++
	if failed {
		c.failures++
	}
	if reset {
		c.resets++
	}
}

// Minute is one minute of the time series.
type minuteCounts struct {
	start    int64 // unix minute; 0 unused
	requests int
	failures int
	fresh    int
	resets   [numOrigins]int
}

// latencyBuckets: log-spaced request latency histogram (0.1 ms … ~100 s),
// fixed size, for quantiles without keeping samples.
const latencyBuckets = 64

func latencyBucket(ms float64) int {
	if ms <= 0.1 {
		return 0
	}
	b := int(math.Log10(ms/0.1) * 10) // 10 buckets per decade
	return min(max(b, 0), latencyBuckets-1)
}

func bucketUpperMs(b int) float64 { return 0.1 * math.Pow(10, float64(b+1)/10) }

// Aggregator keeps the streaming aggregates of one address: fixed size,
// whatever the number of samples. Not safe for concurrent use.
type Aggregator struct {
	total  counts
	bands  [numBands]counts
	phases [numPhases]int
	// resets by origin and by (origin, attributed hop).
	resetOrigin [numOrigins]int
	resetHop    [numOrigins][maxHop + 1]*hopGroup
	// idle bracket: the longest idle age that succeeded and the shortest
	// that failed, among pooled requests (ns; -1 none).
	longestOK, shortestFail time.Duration
	latency                 [latencyBuckets]int
	// the last len(minutes) minutes, a ring indexed by unix minute.
	minutes []minuteCounts
	first   time.Time
	last    time.Time
}

// NewAggregator keeps a time series of the last ringMinutes minutes
// (at least 1).
func NewAggregator(ringMinutes int) *Aggregator {
	return &Aggregator{minutes: make([]minuteCounts, max(1, ringMinutes)), longestOK: -1, shortestFail: -1}
}

// Add counts one request.
func (a *Aggregator) Add(s Sample) {
	failed := s.Outcome != tcpcheck.OutcomeOK
	reset := s.Outcome.IsReset()
	band := BandOf(s.Fresh, s.IdleAge)
	a.total.add(s, failed, reset)
	a.bands[band].add(s, failed, reset)
	if a.first.IsZero() || s.At.Before(a.first) {
		a.first = s.At
	}
	if s.At.After(a.last) {
		a.last = s.At
	}
	a.latency[latencyBucket(s.LatencyMs)]++
	if failed {
		p := s.Phase
		if p <= PhaseNone || p >= numPhases {
			p = PhaseRead
		}
		a.phases[p]++
	}
	oi := -1
	if reset {
		oi = originIndex(s.Origin)
		a.resetOrigin[oi]++
		if s.Hop > 0 && s.Hop <= maxHop {
			g := a.resetHop[oi][s.Hop]
			if g == nil {
				g = &hopGroup{}
				a.resetHop[oi][s.Hop] = g
			}
			g.add(s.Place)
		}
	}
	if !s.Fresh {
		switch {
		case !failed && s.IdleAge > a.longestOK:
			a.longestOK = s.IdleAge
		case failed && (a.shortestFail < 0 || s.IdleAge < a.shortestFail):
			a.shortestFail = s.IdleAge
		}
	}
	min := s.At.Unix() / 60
	m := &a.minutes[int(min%int64(len(a.minutes)))]
	if m.start != min {
		if m.start > min {
			return // older than the ring: counted in the totals only
		}
		*m = minuteCounts{start: min}
	}
	m.requests++
	if failed {
		m.failures++
	}
	if s.Fresh {
		m.fresh++
	}
	if oi >= 0 {
		m.resets[oi]++
	}
}

// Requests is the number of requests counted.
func (a *Aggregator) Requests() int { return a.total.requests }

// hopGroup is the resets placed at one (origin, hop): how many, and by
// which method, each method with the lowest confidence it had and the
// first reset's details. Its size is bounded by the methods and the four
// observations, whatever the number of resets.
type hopGroup struct {
	count        int
	observations []string // union, in order seen
	byMethod     [numMethods]methodGroup
}

type methodGroup struct {
	count      int
	confidence string // the lowest seen
	address    string // the first known
	candidates []int
	countHop   int
	evidence   []string
}

func (g *hopGroup) add(p Placement) {
	g.count++
	for _, o := range p.Observations {
		if !slices.Contains(g.observations, o) {
			g.observations = append(g.observations, o)
		}
	}
	m := &g.byMethod[methodIndex(p.Method)]
	if m.count == 0 {
		m.confidence, m.candidates, m.countHop, m.evidence = p.Confidence, p.Candidates, p.CountHop, p.Evidence
	}
	m.count++
	m.confidence = attrib.LowerConfidence(m.confidence, p.Confidence)
	if m.address == "" {
		m.address = p.HopAddress
	}
}

// report is the group's entry of resets_by_hop: the commonest method's
// details (the better method on a tie).
func (g *hopGroup) report(o probe.Origin, hop int) HopCount {
	h := HopCount{Origin: o, Hop: hop, Count: g.count}
	best := -1
	for i, m := range g.byMethod {
		if m.count > 0 && (best < 0 || m.count > g.byMethod[best].count) {
			best = i
		}
	}
	if best < 0 || methods[best] == "" {
		return h
	}
	m := g.byMethod[best]
	h.Method, h.Confidence, h.HopAddress, h.TTLCountHop = methods[best], m.confidence, m.address, m.countHop
	h.HopCandidates = append([]int(nil), m.candidates...)
	h.Evidence = append([]string(nil), m.evidence...)
	h.Observations = append([]string(nil), g.observations...)
	h.Methods = map[string]int{}
	for i, x := range g.byMethod {
		if x.count > 0 {
			if methods[i] != "" {
				h.Methods[methods[i]] = x.count
			}
		}
	}
	return h
}
