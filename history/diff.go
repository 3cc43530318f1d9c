package history

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// DiffSchemaVersion of the diff JSON.
const DiffSchemaVersion = 1

// Snapshot is what a report says that is worth comparing, whatever its
// kind (run, tcp, trace, soak).
type Snapshot struct {
	Kind      string
	StartedAt time.Time
	// Paths: hops by target address and protocol.
	Paths map[PathKey][]trace.Hop
	// Findings by kind, target and address.
	Findings map[FindingKey]diagnose.Finding
	// Rates: named failure rates per address ("connect refused",
	// "soak 30-60s failures").
	Rates map[RateKey]tcpcheck.Rate
}

// PathKey names one traced path.
type PathKey struct{ Target, Address, Protocol string }

// FindingKey names one finding.
type FindingKey struct{ Kind, Target, Address string }

// RateKey names one rate.
type RateKey struct{ Target, Address, Name string }

// Parse reads a hopcheck JSON report of any kind into a Snapshot.
func Parse(data []byte) (Snapshot, error) {
	var head struct {
		SchemaVersion int             `json:"schema_version"`
		Kind          string          `json:"kind"`
		Test          string          `json:"test"`
		Profile       *string         `json:"profile"`
		Traces        json.RawMessage `json:"traces"`
		Targets       json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Snapshot{}, fmt.Errorf("not a hopcheck JSON report: %w", err)
	}
	s := Snapshot{Paths: map[PathKey][]trace.Hop{}, Findings: map[FindingKey]diagnose.Finding{}, Rates: map[RateKey]tcpcheck.Rate{}}
	switch {
	case head.SchemaVersion != 1:
		return s, fmt.Errorf("unsupported report schema_version %d (want 1)", head.SchemaVersion)
	case head.Kind == "soak":
		var r soak.Report
		if err := json.Unmarshal(data, &r); err != nil {
			return s, fmt.Errorf("soak report: %w", err)
		}
		s.Kind, s.StartedAt = "soak", r.StartedAt
		for _, t := range r.Targets {
			s.Rates[RateKey{t.Target, t.Address, "soak failures"}] = t.Failures
			for _, b := range t.Bands {
				if b.Requests > 0 {
					s.Rates[RateKey{t.Target, t.Address, "soak " + b.Band + " failures"}] = b.Failures
				}
			}
		}
		s.addTCPFindings(r.Findings)
	case head.Test != "":
		var r tcpcheck.Report
		if err := json.Unmarshal(data, &r); err != nil {
			return s, fmt.Errorf("tcp report: %w", err)
		}
		s.Kind, s.StartedAt = "tcp", r.StartedAt
		for _, res := range r.Results {
			s.addTCPResult(res.Target, res.Address, res)
		}
		s.addTCPFindings(r.Findings)
	case head.Profile != nil && head.Targets != nil:
		var r diagnose.Report
		if err := json.Unmarshal(data, &r); err != nil {
			return s, fmt.Errorf("run report: %w", err)
		}
		s.Kind, s.StartedAt = "run", r.StartedAt
		for _, t := range r.Targets {
			for _, tr := range t.Traces {
				s.Paths[PathKey{t.Target, t.Address, tr.Target.Protocol}] = tr.Hops
			}
			for _, res := range t.Tests {
				s.addTCPResult(t.Target, t.Address, res)
			}
		}
		for _, f := range r.Findings {
			s.Findings[FindingKey{f.Kind, f.Target, f.Address}] = f
		}
	case head.Traces != nil:
		var r trace.Report
		if err := json.Unmarshal(data, &r); err != nil {
			return s, fmt.Errorf("trace report: %w", err)
		}
		s.Kind, s.StartedAt = "trace", r.StartedAt
		for _, tr := range r.Traces {
			s.Paths[PathKey{tr.Target.Host, tr.Target.Address, tr.Target.Protocol}] = tr.Hops
		}
	default:
		return s, fmt.Errorf("not a hopcheck run, tcp, trace or soak report")
	}
	return s, nil
}

func (s *Snapshot) addTCPResult(target, address string, res tcpcheck.Result) {
	for o, r := range res.Rates {
		s.Rates[RateKey{target, address, "connect " + string(o)}] = r
	}
}

func (s *Snapshot) addTCPFindings(fs []tcpcheck.Finding) {
	for _, f := range fs {
		s.Findings[FindingKey{f.Kind, f.Target, f.Address}] = diagnose.Finding{Finding: f}
	}
}

// Diff is what changed between two reports.
type Diff struct {
	SchemaVersion int    `json:"schema_version"`
	Old           Source `json:"old"`
	New           Source `json:"new"`
	// Material: a hop, a finding or a rate changed beyond noise.
	Material bool            `json:"material"`
	Paths    []PathChange    `json:"paths"`
	Findings []FindingChange `json:"findings"`
	Rates    []RateChange    `json:"rates"`
}

// Source is one side of a diff.
type Source struct {
	Path      string    `json:"path,omitempty"`
	Kind      string    `json:"kind"`
	StartedAt time.Time `json:"started_at"`
}

// PathChange is a change of one hop (or of the path's length).
type PathChange struct {
	Target   string `json:"target"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	Hop      int    `json:"hop"`
	// Change: hop-added, hop-removed, responder-changed, went-silent,
	// answers-again, rtt-shift, loss-shift.
	Change   string `json:"change"`
	Old      string `json:"old"`
	New      string `json:"new"`
	Material bool   `json:"material"`
}

// FindingChange is a finding that appeared, cleared or changed.
type FindingChange struct {
	Change  string            `json:"change"` // appeared|cleared|changed
	Kind    string            `json:"kind"`
	Target  string            `json:"target"`
	Address string            `json:"address"`
	Details []string          `json:"details,omitempty"` // "idle timeout 10s → 6s", "hop 3 → 2"
	Old     *diagnose.Finding `json:"old,omitempty"`
	New     *diagnose.Finding `json:"new,omitempty"`
}

// RateChange is a failure rate that moved beyond its 95 % intervals.
type RateChange struct {
	Target  string        `json:"target"`
	Address string        `json:"address"`
	Name    string        `json:"name"`
	Old     tcpcheck.Rate `json:"old"`
	New     tcpcheck.Rate `json:"new"`
}

// Compare diffs two snapshots. Pure.
func Compare(old, cur Snapshot) Diff {
	d := Diff{SchemaVersion: DiffSchemaVersion, Old: Source{Kind: old.Kind, StartedAt: old.StartedAt},
		New: Source{Kind: cur.Kind, StartedAt: cur.StartedAt}, Paths: []PathChange{}, Findings: []FindingChange{}, Rates: []RateChange{}}
	for _, k := range sortedKeys(old.Paths, cur.Paths, func(a, b PathKey) bool {
		return fmt.Sprint(a) < fmt.Sprint(b)
	}) {
		oh, inOld := old.Paths[k]
		nh, inNew := cur.Paths[k]
		if !inOld || !inNew {
			continue // a path traced only once: nothing to compare
		}
		d.Paths = append(d.Paths, comparePath(k, oh, nh)...)
	}
	for _, k := range sortedKeys(old.Findings, cur.Findings, func(a, b FindingKey) bool {
		return fmt.Sprint(a) < fmt.Sprint(b)
	}) {
		of, inOld := old.Findings[k]
		nf, inNew := cur.Findings[k]
		fc := FindingChange{Kind: k.Kind, Target: k.Target, Address: k.Address}
		switch {
		case inOld && !inNew:
			fc.Change, fc.Old = "cleared", &of
		case !inOld && inNew:
			fc.Change, fc.New = "appeared", &nf
		default:
			fc.Details = findingChanges(of, nf)
			if len(fc.Details) == 0 {
				continue
			}
			fc.Change, fc.Old, fc.New = "changed", &of, &nf
		}
		d.Findings = append(d.Findings, fc)
	}
	for _, k := range sortedKeys(old.Rates, cur.Rates, func(a, b RateKey) bool {
		return fmt.Sprint(a) < fmt.Sprint(b)
	}) {
		or, inOld := old.Rates[k]
		nr, inNew := cur.Rates[k]
		if inOld && inNew && rateShift(or, nr) {
			d.Rates = append(d.Rates, RateChange{Target: k.Target, Address: k.Address, Name: k.Name, Old: or, New: nr})
		}
	}
	d.Material = len(d.Findings) > 0 || len(d.Rates) > 0
	for _, p := range d.Paths {
		d.Material = d.Material || p.Material
	}
	return d
}

func sortedKeys[K comparable, V any](a, b map[K]V, less func(x, y K) bool) []K {
	seen := map[K]bool{}
	var out []K
	for _, m := range []map[K]V{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

func responders(h trace.Hop) string {
	var as []string
	for _, r := range h.Responders {
		a := r.Address
		if r.ASN != "" {
			a += " (" + r.ASN + ")"
		}
		as = append(as, a)
	}
	sort.Strings(as)
	return strings.Join(as, ", ")
}

// comparePath compares hops TTL by TTL: the path got longer or shorter,
// a hop is answered by another box (or AS), went silent or answers again,
// and RTT or loss moved beyond noise.
func comparePath(k PathKey, old, cur []trace.Hop) []PathChange {
	var out []PathChange
	byTTL := func(hs []trace.Hop) map[int]trace.Hop {
		m := map[int]trace.Hop{}
		for _, h := range hs {
			m[h.TTL] = h
		}
		return m
	}
	om, nm := byTTL(old), byTTL(cur)
	maxTTL := 0
	for _, hs := range [][]trace.Hop{old, cur} {
		for _, h := range hs {
			maxTTL = max(maxTTL, h.TTL)
		}
	}
	pc := func(hop int, change, o, n string, material bool) {
		out = append(out, PathChange{Target: k.Target, Address: k.Address, Protocol: k.Protocol, Hop: hop, Change: change,
			Old: o, New: n, Material: material})
	}
	for ttl := 1; ttl <= maxTTL; ttl++ {
		oh, inOld := om[ttl]
		nh, inNew := nm[ttl]
		or, nr := responders(oh), responders(nh)
		switch {
		case !inOld && inNew:
			pc(ttl, "hop-added", "", orStar(nr), true)
		case inOld && !inNew:
			pc(ttl, "hop-removed", orStar(or), "", true)
		case !inOld:
		case or != "" && nr != "" && or != nr:
			pc(ttl, "responder-changed", or, nr, true)
		case or != "" && nr == "":
			pc(ttl, "went-silent", or, "*", false)
		case or == "" && nr != "":
			pc(ttl, "answers-again", "*", nr, false)
		}
		if !inOld || !inNew || oh.Received == 0 || nh.Received == 0 {
			continue
		}
		if rttShift(oh, nh) {
			pc(ttl, "rtt-shift", fmt.Sprintf("%.1f ms", oh.RTTms.Avg), fmt.Sprintf("%.1f ms", nh.RTTms.Avg), true)
		}
		if lossShift(oh, nh) && oh.LossKind != "rate-limit" && nh.LossKind != "rate-limit" {
			pc(ttl, "loss-shift", fmt.Sprintf("%.0f %%", oh.LossPct), fmt.Sprintf("%.0f %%", nh.LossPct), true)
		}
	}
	return out
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// rttShift: the average moved by more than 5 ms, half the old average and
// three times the larger standard deviation (jitter is not a change).
func rttShift(o, n trace.Hop) bool {
	delta := math.Abs(n.RTTms.Avg - o.RTTms.Avg)
	return delta > 5 && delta > 0.5*o.RTTms.Avg && delta > 3*math.Max(o.RTTms.Stdev, n.RTTms.Stdev)
}

// lossShift: the 95 % intervals of the loss do not overlap and the loss
// moved by 10 points or more.
func lossShift(o, n trace.Hop) bool {
	if o.Sent == 0 || n.Sent == 0 {
		return false
	}
	or := tcpcheck.NewRate(o.Sent-o.Received, o.Sent)
	nr := tcpcheck.NewRate(n.Sent-n.Received, n.Sent)
	return math.Abs(n.LossPct-o.LossPct) >= 10 && (or.CI[1] < nr.CI[0] || nr.CI[1] < or.CI[0])
}

// rateShift: the 95 % Wilson intervals do not overlap.
func rateShift(o, n tcpcheck.Rate) bool {
	if o.Of == 0 || n.Of == 0 {
		return false
	}
	return o.CI[1] < n.CI[0] || n.CI[1] < o.CI[0]
}

// findingChanges lists what changed in a finding present in both.
func findingChanges(o, n diagnose.Finding) []string {
	var out []string
	if o.Hop != n.Hop {
		out = append(out, fmt.Sprintf("hop %d → %d", o.Hop, n.Hop))
	}
	if o.HopAddress != n.HopAddress && o.HopAddress != "" && n.HopAddress != "" {
		out = append(out, fmt.Sprintf("hop address %s → %s", o.HopAddress, n.HopAddress))
	}
	if o.Origin != n.Origin {
		out = append(out, fmt.Sprintf("origin %s → %s", o.Origin, n.Origin))
	}
	// The ladder brackets a timeout to about a second: smaller moves are
	// measurement noise.
	if ot, nt := o.IdleTimeoutS, n.IdleTimeoutS; (ot > 0 || nt > 0) && math.Abs(ot-nt) > math.Max(1, 0.1*math.Max(ot, nt)) {
		out = append(out, fmt.Sprintf("idle timeout %s → %s", secs(ot), secs(nt)))
	}
	if o.MTU != n.MTU {
		out = append(out, fmt.Sprintf("mtu %d → %d", o.MTU, n.MTU))
	}
	if o.Limit != n.Limit && (o.Limit == 0 || n.Limit == 0 || math.Abs(float64(o.Limit-n.Limit)) > 1) {
		out = append(out, fmt.Sprintf("limit %d → %d", o.Limit, n.Limit))
	}
	if len(o.RateCI) == 2 && len(n.RateCI) == 2 && (o.RateCI[1] < n.RateCI[0] || n.RateCI[1] < o.RateCI[0]) {
		out = append(out, fmt.Sprintf("rate %.4f → %.4f (95 %% intervals apart)", o.Rate, n.Rate))
	}
	return out
}

func secs(v float64) string {
	if v == 0 {
		return "none"
	}
	return fmt.Sprintf("%gs", math.Round(v*10)/10)
}

// WriteDiffJSON writes the diff as indented JSON.
func WriteDiffJSON(w io.Writer, d Diff) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

// WriteDiffText writes the diff for humans, material changes first.
func WriteDiffText(w io.Writer, d Diff) error {
	var b strings.Builder
	name := func(s Source) string {
		if s.Path != "" {
			return s.Path
		}
		return s.StartedAt.Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "hopcheck diff: %s %s (%s) → %s %s (%s)\n", d.Old.Kind, name(d.Old), d.Old.StartedAt.Format(time.RFC3339),
		d.New.Kind, name(d.New), d.New.StartedAt.Format(time.RFC3339))
	if !d.Material {
		b.WriteString("no material change\n")
	}
	for _, f := range d.Findings {
		line := fmt.Sprintf("finding %s %s  %s %s", f.Change, f.Kind, f.Target, f.Address)
		if len(f.Details) > 0 {
			line += ": " + strings.Join(f.Details, "; ")
		} else if x := f.New; x != nil {
			line += findingBrief(x)
		} else if x := f.Old; x != nil {
			line += findingBrief(x)
		}
		b.WriteString(line + "\n")
	}
	for _, p := range d.Paths {
		mark := ""
		if !p.Material {
			mark = " (not material)"
		}
		fmt.Fprintf(&b, "path %s %s %s hop %d %s: %s → %s%s\n", p.Target, p.Address, p.Protocol, p.Hop, p.Change, orDash(p.Old), orDash(p.New), mark)
	}
	for _, r := range d.Rates {
		fmt.Fprintf(&b, "rate %s %s %s: %.4f [%.4f, %.4f] → %.4f [%.4f, %.4f]\n", r.Target, r.Address, r.Name,
			r.Old.Rate, r.Old.CI[0], r.Old.CI[1], r.New.Rate, r.New.CI[0], r.New.CI[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func findingBrief(f *diagnose.Finding) string {
	var parts []string
	if f.Hop > 0 {
		parts = append(parts, fmt.Sprintf("hop %d", f.Hop))
	}
	if f.Origin != "" {
		parts = append(parts, "origin "+string(f.Origin))
	}
	if f.IdleTimeoutS > 0 {
		parts = append(parts, "idle timeout "+secs(f.IdleTimeoutS))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
