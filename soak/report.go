package soak

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// SchemaVersion of the soak report (docs/schema-soak.md).
const SchemaVersion = 1

// Report is the JSON document of `hopcheck soak`, also written as the
// checkpoint every minute (Checkpoint true, Incomplete true).
type Report struct {
	SchemaVersion int       `json:"schema_version"`
	Tool          string    `json:"tool"`
	Kind          string    `json:"kind"` // "soak"
	StartedAt     time.Time `json:"started_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	DurationS     float64   `json:"duration_s"`         // measured so far
	PlannedS      float64   `json:"planned_duration_s"` // --duration
	Rate          float64   `json:"rate"`               // requests per second per address
	FreshShare    float64   `json:"fresh_share"`
	Pool          int       `json:"pool"` // pooled connections per address at most
	// Evidence is "packets" when the flow observer attributed resets,
	// "socket" when it could not run (no CAP_NET_RAW).
	Evidence string `json:"evidence"`
	// TLSProfile is the client whose TLS ClientHello the connections
	// imitated (java, dotnet, go).
	TLSProfile tcpcheck.TLSProfile `json:"tls_profile"`
	Incomplete bool                `json:"incomplete"`
	Checkpoint bool                `json:"checkpoint"`
	Targets    []TargetReport      `json:"targets"`
	Findings   []tcpcheck.Finding  `json:"findings"`
	Warnings   []string            `json:"warnings,omitempty"`
}

// TargetReport is the soak of one address of one target.
type TargetReport struct {
	Target    string       `json:"target"`
	Address   string       `json:"address"`
	Port      int          `json:"port"`
	App       tcpcheck.App `json:"app"`
	ServerTTL int          `json:"server_ttl"`
	ServerHop int          `json:"server_hop"`
	Error     string       `json:"error,omitempty"`
	// Skipped counts scheduled requests that were not sent because the
	// connection budget was exhausted.
	Skipped  int                      `json:"skipped"`
	Requests int                      `json:"requests"`
	Failures tcpcheck.Rate            `json:"failures"`
	Resets   tcpcheck.Rate            `json:"resets"`
	Outcomes map[tcpcheck.Outcome]int `json:"outcomes"`
	Bands    []BandReport             `json:"bands"`
	// Phases: failures by phase, each of all requests.
	Phases         map[string]tcpcheck.Rate `json:"phases"`
	ResetsByOrigin map[string]int           `json:"resets_by_origin"`
	ResetsByHop    []HopCount               `json:"resets_by_hop"`
	// IdleBracketS: [longest idle that succeeded, shortest idle that
	// failed] among pooled requests (-1: none).
	IdleBracketS [2]float64 `json:"idle_bracket_s"`
	LatencyMs    Latency    `json:"latency_ms"`
	// Minutes is the per-minute time series: the last MinutesKept minutes
	// (older minutes are in the totals only).
	Minutes     []Minute `json:"minutes"`
	MinutesKept int      `json:"minutes_kept"`
	Bursts      []Minute `json:"server_reset_bursts"`
	// EvidenceFiles are the pcap files written for failures (first N per
	// kind).
	EvidenceFiles []string `json:"evidence_files,omitempty"`
}

// BandReport is one idle-age band.
type BandReport struct {
	Band     string                   `json:"band"`
	MinS     float64                  `json:"min_s"`
	MaxS     float64                  `json:"max_s"` // 0: no upper bound
	Requests int                      `json:"requests"`
	Failures tcpcheck.Rate            `json:"failures"`
	Resets   tcpcheck.Rate            `json:"resets"`
	Outcomes map[tcpcheck.Outcome]int `json:"outcomes"`
}

// HopCount is how many resets came from one origin at one hop: the hop
// the return-path fingerprints place the sender at, and how.
type HopCount struct {
	Origin probe.Origin `json:"origin"`
	Hop    int          `json:"hop"`
	Count  int          `json:"count"`
	// Method decided the hop for most of these resets: fingerprint (the
	// RST's TTL matches the hop's ICMP answers), ttl-count (a symmetric
	// count, no matching fingerprint), server (the server's own TTL),
	// bracket or none; Methods counts the resets by method. Confidence
	// is the lowest of Method's resets. Absent without packet capture.
	Method     string         `json:"method,omitempty"`
	Methods    map[string]int `json:"methods,omitempty"`
	Confidence string         `json:"confidence,omitempty"`
	// Observations of any of these resets: asymmetric-return,
	// in-path-blocking, on-path-injection, forged-ttl.
	Observations []string `json:"observations,omitempty"`
	// HopAddress is the address the hop's ICMP answers came from.
	HopAddress string `json:"hop_address,omitempty"`
	// HopCandidates lists the hops the evidence allows when it could not
	// decide (Hop is the likelier).
	HopCandidates []int `json:"hop_candidates,omitempty"`
	// TTLCountHop is the hop a symmetric count of the RST's TTL names
	// (what older reports gave as hop); it differs from Hop when the
	// return path is longer or shorter than the way there.
	TTLCountHop int `json:"ttl_count_hop,omitempty"`
	// Evidence is the placement's reasoning for the first such reset.
	Evidence []string `json:"evidence,omitempty"`
}

// Latency are quantiles of the request latency (upper bucket edges of a
// log histogram, within 26 %).
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Minute is one minute of the time series.
type Minute struct {
	Start          time.Time      `json:"start"`
	Requests       int            `json:"requests"`
	Failures       int            `json:"failures"`
	Fresh          int            `json:"fresh"`
	ResetsByOrigin map[string]int `json:"resets_by_origin,omitempty"`
}

// Summarize turns the aggregates into the report fields of one address
// (identity fields are left to the caller).
func (a *Aggregator) Summarize() TargetReport {
	t := TargetReport{Requests: a.total.requests, Outcomes: outcomeMap(a.total.outcomes),
		Failures: tcpcheck.NewRate(a.total.failures, a.total.requests), Resets: tcpcheck.NewRate(a.total.resets, a.total.requests),
		Phases: map[string]tcpcheck.Rate{}, ResetsByOrigin: map[string]int{}, ResetsByHop: []HopCount{},
		Bands: []BandReport{}, Minutes: []Minute{}, Bursts: []Minute{}, MinutesKept: len(a.minutes),
		IdleBracketS: [2]float64{secondsOrNone(a.longestOK), secondsOrNone(a.shortestFail)}}
	for b := Band(0); b < numBands; b++ {
		c := a.bands[b]
		br := BandReport{Band: b.String(), MinS: bandLimits[b][0].Seconds(), MaxS: bandLimits[b][1].Seconds(), Requests: c.requests,
			Failures: tcpcheck.NewRate(c.failures, c.requests), Resets: tcpcheck.NewRate(c.resets, c.requests), Outcomes: outcomeMap(c.outcomes)}
		if b == Band15mPlus {
			br.MaxS = 0
		}
		t.Bands = append(t.Bands, br)
	}
	for p := PhaseConnect; p < numPhases; p++ {
		t.Phases[p.String()] = tcpcheck.NewRate(a.phases[p], a.total.requests)
	}
	for oi, o := range origins {
		if a.resetOrigin[oi] > 0 {
			t.ResetsByOrigin[string(o)] = a.resetOrigin[oi]
		}
		for hop, g := range a.resetHop[oi] {
			if g != nil {
				t.ResetsByHop = append(t.ResetsByHop, g.report(o, hop))
			}
		}
	}
	sort.SliceStable(t.ResetsByHop, func(i, j int) bool { return t.ResetsByHop[i].Count > t.ResetsByHop[j].Count })
	t.LatencyMs = Latency{P50: a.quantile(0.5), P90: a.quantile(0.9), P99: a.quantile(0.99)}
	ms := make([]minuteCounts, 0, len(a.minutes))
	for _, m := range a.minutes {
		if m.start != 0 {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].start < ms[j].start })
	for _, m := range ms {
		t.Minutes = append(t.Minutes, minuteReport(m))
	}
	t.Bursts = serverResetBursts(t.Minutes)
	return t
}

func secondsOrNone(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return math.Round(d.Seconds()*1000) / 1000
}

func outcomeMap(c [numOutcomes]int) map[tcpcheck.Outcome]int {
	m := map[tcpcheck.Outcome]int{}
	for i, n := range c {
		if n > 0 {
			m[outcomes[i]] = n
		}
	}
	return m
}

func minuteReport(m minuteCounts) Minute {
	out := Minute{Start: time.Unix(m.start*60, 0).UTC(), Requests: m.requests, Failures: m.failures, Fresh: m.fresh}
	for oi, n := range m.resets {
		if n > 0 {
			if out.ResetsByOrigin == nil {
				out.ResetsByOrigin = map[string]int{}
			}
			out.ResetsByOrigin[string(origins[oi])] = n
		}
	}
	return out
}

func (a *Aggregator) quantile(q float64) float64 {
	n := 0
	for _, c := range a.latency {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := int(math.Ceil(q * float64(n)))
	seen := 0
	for b, c := range a.latency {
		seen += c
		if seen >= want {
			return math.Round(bucketUpperMs(b)*100) / 100
		}
	}
	return math.Round(bucketUpperMs(latencyBuckets-1)*100) / 100
}

// serverResetBursts are the minutes whose server-origin resets stand out
// from the run's typical minute: at least 3, and at least 5 times the
// median of the minutes (a restart or deploy, not a steady pattern).
// Pure; at most 20 are returned.
func serverResetBursts(minutes []Minute) []Minute {
	out := []Minute{}
	if len(minutes) == 0 {
		return out
	}
	vals := make([]int, len(minutes))
	for i, m := range minutes {
		vals[i] = m.ResetsByOrigin[string(probe.OriginServer)]
	}
	sorted := append([]int(nil), vals...)
	sort.Ints(sorted)
	median := sorted[len(sorted)/2]
	for i, m := range minutes {
		if vals[i] >= 3 && vals[i] >= 5*max(median, 1) && len(out) < 20 {
			out = append(out, m)
		}
	}
	return out
}

// Findings derives the findings of one address from its summary. Pure.
func Findings(t TargetReport) []tcpcheck.Finding {
	var out []tcpcheck.Finding
	if t.Requests == 0 {
		return out
	}
	top, agree, captured := majorityHop(t.ResetsByHop)
	origin, hop := top.Origin, top.Hop
	base := func(kind string, r tcpcheck.Rate) tcpcheck.Finding {
		f := tcpcheck.Finding{Kind: kind, Target: t.Target, Address: t.Address, Origin: probe.OriginUnknown, Confidence: "medium",
			Rate: r.Rate, RateCI: []float64{r.CI[0], r.CI[1]}}
		f.Evidence = append(f.Evidence, fmt.Sprintf("%d of %d requests (%.3f %%, 95 %% Wilson interval [%.3f %%, %.3f %%])",
			r.Count, r.Of, 100*r.Rate, 100*r.CI[0], 100*r.CI[1]))
		return f
	}
	withOrigin := func(f *tcpcheck.Finding) {
		if captured == 0 {
			f.Confidence = "low"
			f.Evidence = append(f.Evidence, "no reset was attributed (no packet capture): the sender is unknown")
			return
		}
		f.Origin, f.Hop = origin, hop
		where := fmt.Sprintf("hop %d", hop)
		if top.HopAddress != "" {
			where += " (" + top.HopAddress + ")"
		}
		by := ""
		if top.Method != "" {
			by = ", placed by " + top.Method
		}
		f.Evidence = append(f.Evidence, fmt.Sprintf("%d of %d attributed resets came from %s at %s%s", agree, captured, origin, where, by))
		if origin != probe.OriginUnknown && agree*10 >= captured*8 {
			f.Confidence = "high"
		}
		placed(f, top)
	}
	var fresh, pooledClean, idleFail []BandReport
	for _, b := range t.Bands {
		switch {
		case b.Band == BandFresh.String():
			fresh = append(fresh, b)
		case b.Failures.Count == 0 && b.Requests > 0:
			pooledClean = append(pooledClean, b)
		case b.Failures.Count > 0:
			idleFail = append(idleFail, b)
		}
	}
	if len(fresh) == 1 && fresh[0].Resets.Count > 0 {
		f := base(tcpcheck.KindConnectReset, fresh[0].Resets)
		f.Evidence[0] = "new connections reset: " + f.Evidence[0]
		withOrigin(&f)
		f.Advice = "Some new connections are reset: retry connection setup with backoff, and keep connections pooled; if the origin is a box on the path, report it (hop above) to its operator."
		out = append(out, f)
	}
	if len(idleFail) > 0 && (len(fresh) == 0 || fresh[0].Failures.Count == 0) {
		// Failures only after idling: an idle timeout on the path or server.
		var parts []string
		k, n := 0, 0
		for _, b := range idleFail {
			parts = append(parts, fmt.Sprintf("%s %d/%d", b.Band, b.Failures.Count, b.Requests))
			k += b.Failures.Count
			n += b.Requests
		}
		kind := tcpcheck.KindIdleReset
		if t.Resets.Count == 0 {
			kind = tcpcheck.KindIdleDrop
		}
		f := base(kind, tcpcheck.NewRate(k, n))
		f.Evidence[0] = "pooled requests failing after idling, by band: " + strings.Join(parts, ", ")
		if len(pooledClean) > 0 {
			var clean []string
			for _, b := range pooledClean {
				clean = append(clean, fmt.Sprintf("%s 0/%d", b.Band, b.Requests))
			}
			f.Evidence = append(f.Evidence, "clean bands: "+strings.Join(clean, ", "))
		}
		if t.IdleBracketS[0] >= 0 && t.IdleBracketS[1] >= 0 && t.IdleBracketS[1] > t.IdleBracketS[0] {
			f.IdleBracketS = []float64{t.IdleBracketS[0], t.IdleBracketS[1]}
			f.IdleTimeoutS = math.Round((t.IdleBracketS[0]+t.IdleBracketS[1])/2*10) / 10
			f.Evidence = append(f.Evidence, fmt.Sprintf("longest idle that succeeded %.1fs, shortest that failed %.1fs",
				t.IdleBracketS[0], t.IdleBracketS[1]))
			f.Advice = tcpcheck.IdleAdvice(time.Duration(t.IdleBracketS[1]*float64(time.Second)), map[string]string{
				tcpcheck.KindIdleReset: "reset", tcpcheck.KindIdleDrop: "drop"}[kind])
		} else {
			f.Advice = "Pooled connections fail after idling: keep idle time below the shortest failing band (pool eviction, TCP keepalive, AMQP heartbeat)."
		}
		if kind == tcpcheck.KindIdleReset {
			withOrigin(&f)
			if f.IdleTimeoutS > 0 {
				// Resets from the box that answered the SYN: the server or
				// a load balancer in front of it, as tcp and run advise.
				f.Advice = tcpcheck.WithProxyAdvice(f.Advice, f.Origin, f.IdleTimeoutS)
			}
		}
		out = append(out, f)
	} else if t.Failures.Count > 0 && (len(fresh) == 0 || fresh[0].Failures.Count < t.Failures.Count) {
		f := base("soak-failures", t.Failures)
		f.Evidence[0] = "requests failing in every idle band: " + f.Evidence[0]
		if t.Resets.Count > 0 {
			withOrigin(&f)
		}
		f.Advice = "Requests fail independent of idle time: retry idempotent requests once on a new connection, and look at the time series for bursts."
		out = append(out, f)
	}
	if len(t.Bursts) > 0 {
		f := tcpcheck.Finding{Kind: "server-restart", Target: t.Target, Address: t.Address, Origin: probe.OriginServer, Confidence: "medium",
			Hop: t.ServerHop, Method: string(attrib.MethodServer)}
		for _, m := range t.Bursts {
			f.Evidence = append(f.Evidence, fmt.Sprintf("%s: %d server resets in one minute (%d requests)", m.Start.Format(time.RFC3339),
				m.ResetsByOrigin[string(probe.OriginServer)], m.Requests))
		}
		f.Advice = "Bursts of resets from the server itself: a restart or deploy on the service side, not the path; reconnect with backoff."
		out = append(out, f)
	}
	return out
}

// majorityHop is the commonest (origin, hop) of the attributed resets,
// its count and the count of all.
func majorityHop(hc []HopCount) (HopCount, int, int) {
	total := 0
	var best HopCount
	for _, h := range hc {
		total += h.Count
		if h.Count > best.Count || (h.Count == best.Count && h.Hop < best.Hop) {
			best = h
		}
	}
	return best, best.Count, total
}

// placed folds how the resets of h were placed into f, as `tcp idle`
// folds its return-path reattribution into its finding: the reasoning,
// the correction of the TTL count, the hop's address, the undecided
// candidates, the observations, and a confidence never above the
// placement's.
func placed(f *tcpcheck.Finding, h HopCount) {
	if h.Method == "" {
		// No placement (a report without it): the count alone.
		f.Method = string(attrib.MethodTTLCount)
		if h.Origin == probe.OriginServer {
			f.Method = string(attrib.MethodServer)
		}
		return
	}
	f.Method = h.Method
	f.Evidence = append(f.Evidence, h.Evidence...)
	if h.Origin == probe.OriginMiddlebox && h.TTLCountHop > 0 && h.TTLCountHop != h.Hop {
		f.Evidence = append(f.Evidence, fmt.Sprintf("return-path fingerprints correct the TTL count: hop %d, not hop %d", h.Hop, h.TTLCountHop))
	}
	if h.Origin == probe.OriginMiddlebox {
		f.HopAddress = h.HopAddress
	}
	if len(h.HopCandidates) > 1 {
		f.HopCandidates = append([]int(nil), h.HopCandidates...)
	}
	f.Observations = append(f.Observations, h.Observations...)
	f.Confidence = attrib.LowerConfidence(f.Confidence, h.Confidence)
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r Report) error {
	if r.Findings == nil {
		r.Findings = []tcpcheck.Finding{}
	}
	if r.Targets == nil {
		r.Targets = []TargetReport{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes a human summary: per address the bands, phases and
// reset origins, then the findings.
func WriteText(w io.Writer, r Report) error {
	var b strings.Builder
	state := "complete"
	if r.Incomplete {
		state = "INCOMPLETE (interrupted)"
	}
	fmt.Fprintf(&b, "hopcheck soak: %d address(es), %.0fs of %.0fs planned, %.1f req/s, %.0f %% fresh, evidence from %s, %s\n",
		len(r.Targets), r.DurationS, r.PlannedS, r.Rate, 100*r.FreshShare, r.Evidence, state)
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "\n%s  %s port %d (%s)\n", t.Target, t.Address, t.Port, t.App)
		if t.Error != "" {
			fmt.Fprintf(&b, "  error: %s\n", t.Error)
		}
		fmt.Fprintf(&b, "  %d requests, failures %s, resets %s; latency p50 %.1f ms, p99 %.1f ms\n", t.Requests,
			rateText(t.Failures), rateText(t.Resets), t.LatencyMs.P50, t.LatencyMs.P99)
		fmt.Fprintf(&b, "  %-7s %9s  %-28s %s\n", "IDLE", "REQUESTS", "FAILURES (95% interval)", "RESETS")
		for _, bd := range t.Bands {
			if bd.Requests == 0 {
				continue
			}
			fmt.Fprintf(&b, "  %-7s %9d  %-28s %s\n", bd.Band, bd.Requests, rateText(bd.Failures), rateText(bd.Resets))
		}
		var ph []string
		for _, p := range []string{"connect", "tls", "write", "read"} {
			if r := t.Phases[p]; r.Count > 0 {
				ph = append(ph, fmt.Sprintf("%s %d", p, r.Count))
			}
		}
		if len(ph) > 0 {
			fmt.Fprintf(&b, "  failures by phase: %s\n", strings.Join(ph, ", "))
		}
		if len(t.ResetsByHop) > 0 {
			var hs []string
			for _, h := range t.ResetsByHop {
				hs = append(hs, hopText(h))
			}
			fmt.Fprintf(&b, "  resets by origin and hop: %s\n", strings.Join(hs, ", "))
		}
		if t.ServerHop > 0 {
			fmt.Fprintf(&b, "  server at hop %d (SYN-ACK TTL %d)\n", t.ServerHop, t.ServerTTL)
		}
		for _, m := range t.Bursts {
			fmt.Fprintf(&b, "  burst %s: %d server resets\n", m.Start.Format(time.RFC3339), m.ResetsByOrigin[string(probe.OriginServer)])
		}
	}
	if len(r.Findings) == 0 {
		b.WriteString("\nno findings\n")
	}
	for _, f := range r.Findings {
		where := string(f.Origin)
		if f.Hop > 0 {
			where += fmt.Sprintf(" at hop %d", f.Hop)
			if f.HopAddress != "" {
				where += " (" + f.HopAddress + ")"
			}
		}
		// As `hopcheck tcp` writes a finding's origin.
		where += f.UndecidedText()
		if len(f.Observations) > 0 {
			where += " [" + strings.Join(f.Observations, ", ") + "]"
		}
		fmt.Fprintf(&b, "\nFINDING %s  %s %s  origin %s, confidence %s\n", f.Kind, f.Target, f.Address, where, f.Confidence)
		for _, e := range f.Evidence {
			fmt.Fprintf(&b, "  - %s\n", e)
		}
		if f.Advice != "" {
			fmt.Fprintf(&b, "  advice: %s\n", f.Advice)
		}
	}
	// The soak-wide caveats last, as tcp's and run's text reports give
	// them.
	if len(r.Warnings) > 0 {
		b.WriteString("\n")
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hopText is one resets_by_hop entry in the text report, e.g.
// "middlebox hop 3 (198.18.2.2) by fingerprint, high [asymmetric-return]: 4".
func hopText(h HopCount) string {
	s := fmt.Sprintf("%s hop %d", h.Origin, h.Hop)
	if h.HopAddress != "" {
		s += " (" + h.HopAddress + ")"
	}
	if h.Method != "" {
		s += " by " + h.Method
		if h.Confidence != "" {
			s += ", " + h.Confidence
		}
	}
	if h.Origin == probe.OriginMiddlebox && h.TTLCountHop > 0 && h.TTLCountHop != h.Hop {
		s += fmt.Sprintf(" (TTL count: hop %d)", h.TTLCountHop)
	}
	if len(h.Observations) > 0 {
		s += " [" + strings.Join(h.Observations, ", ") + "]"
	}
	return s + fmt.Sprintf(": %d", h.Count)
}

func rateText(r tcpcheck.Rate) string {
	return fmt.Sprintf("%d (%.3f%% [%.3f%%, %.3f%%])", r.Count, 100*r.Rate, 100*r.CI[0], 100*r.CI[1])
}
