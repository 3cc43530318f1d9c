// Package report renders the report of `hopcheck run` (diagnose.Report)
// as text, Markdown, HTML and JSON. Every renderer is a pure function of
// the report: the same report always gives the same bytes.
package report

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// testOrder is the order connection tests ran and are listed in.
var testOrder = tcpcheck.TestNames()

// targetView is one address of one target with everything the renderers
// need, derived once.
type targetView struct {
	Index    int // 1-based, in report order
	T        diagnose.TargetReport
	Findings []numberedFinding
	Path     pathView
	// Culprit is the hop the report names (TargetReport.CulpritHop); 0 none.
	Culprit int
	// CulpritKinds are the kinds of the findings that name the culprit hop.
	CulpritKinds []string
	// ServerKinds are the kinds of findings whose origin is the server.
	ServerKinds []string
	Idle        *idleView
}

// numberedFinding keeps a finding's position in Report.Findings (1-based)
// so every format numbers findings alike.
type numberedFinding struct {
	N int
	diagnose.Finding
	// Unmatched: about no target of the report, so renderers name its
	// target and address.
	Unmatched bool
}

// targetLine is "https://host 198.18.5.2" for findings about no target.
func (f numberedFinding) targetLine() string {
	if !f.Unmatched {
		return ""
	}
	return strings.TrimSpace(f.Target + " " + f.Address)
}

// reportView is the report split by target.
type reportView struct {
	Targets []targetView
	// Unmatched are findings about no target of the report.
	Unmatched []numberedFinding
}

func newReportView(r diagnose.Report) reportView {
	var v reportView
	used := make([]bool, len(r.Findings))
	for i, t := range r.Targets {
		tv := targetView{Index: i + 1, T: t, Culprit: t.CulpritHop, Path: newPathView(t.Traces)}
		for j, f := range r.Findings {
			if used[j] || !findingAbout(f, t) {
				continue
			}
			used[j] = true
			tv.Findings = append(tv.Findings, numberedFinding{N: j + 1, Finding: f})
			if tv.Culprit > 0 && f.Hop == tv.Culprit && f.Origin != probe.OriginServer {
				tv.CulpritKinds = appendUnique(tv.CulpritKinds, f.Kind)
			}
			if f.Origin == probe.OriginServer {
				tv.ServerKinds = appendUnique(tv.ServerKinds, f.Kind)
			}
		}
		if idle, ok := t.Tests["idle"]; ok && idle.Idle != nil {
			iv := newIdleView(idle)
			tv.Idle = &iv
		}
		v.Targets = append(v.Targets, tv)
	}
	for j, f := range r.Findings {
		if !used[j] {
			v.Unmatched = append(v.Unmatched, numberedFinding{N: j + 1, Finding: f, Unmatched: true})
		}
	}
	return v
}

// findingAbout: a finding belongs to the target report of its address
// (and of its target, when both name one).
func findingAbout(f diagnose.Finding, t diagnose.TargetReport) bool {
	if f.Address != t.Address {
		return false
	}
	return f.Target == "" || t.Target == "" || f.Target == t.Target
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// pathView lines up the traces toward one address by TTL: the TCP trace
// first (the service port, what the report is about), then ICMP and UDP.
type pathView struct {
	Traces []trace.Trace
	Labels []string // "tcp/443", "icmp", "udp/443", aligned with Traces
	Rows   []pathRow
}

// pathRow is one TTL; Hops[i] belongs to Traces[i], nil when that trace
// did not probe the TTL.
type pathRow struct {
	TTL  int
	Hops []*trace.Hop
}

// Primary is the trace the hop table is built from, nil when none ran.
func (p pathView) Primary() *trace.Trace {
	if len(p.Traces) == 0 {
		return nil
	}
	return &p.Traces[0]
}

// DestinationTTL is the TTL at which the primary trace reached the
// destination, 0 when it did not.
func (p pathView) DestinationTTL() int {
	if t := p.Primary(); t != nil && t.Reached {
		return t.ReachedTTL
	}
	return 0
}

// ServerTTL is where the destination sits on the path: the TTL at which
// the primary trace reached it, else the first TTL at which another
// protocol did; 0 when no trace reached it.
func (p pathView) ServerTTL() int {
	if d := p.DestinationTTL(); d > 0 {
		return d
	}
	best := 0
	for _, t := range p.Traces {
		if t.Reached && (best == 0 || t.ReachedTTL < best) {
			best = t.ReachedTTL
		}
	}
	return best
}

func protocolRank(proto string) int {
	switch proto {
	case string(probe.TCP):
		return 0
	case string(probe.ICMP):
		return 1
	case string(probe.UDP):
		return 2
	}
	return 3
}

func newPathView(traces []trace.Trace) pathView {
	var p pathView
	p.Traces = append(p.Traces, traces...)
	sort.SliceStable(p.Traces, func(i, j int) bool {
		return protocolRank(p.Traces[i].Target.Protocol) < protocolRank(p.Traces[j].Target.Protocol)
	})
	byTTL := map[int]int{}
	for i := range p.Traces {
		tr := &p.Traces[i]
		p.Labels = append(p.Labels, protocolLabel(tr.Target))
		for j := range tr.Hops {
			h := &tr.Hops[j]
			row, ok := byTTL[h.TTL]
			if !ok {
				row = len(p.Rows)
				byTTL[h.TTL] = row
				p.Rows = append(p.Rows, pathRow{TTL: h.TTL, Hops: make([]*trace.Hop, len(traces))})
			}
			p.Rows[row].Hops[i] = h
		}
	}
	sort.Slice(p.Rows, func(i, j int) bool { return p.Rows[i].TTL < p.Rows[j].TTL })
	return p
}

// protocolLabel is "icmp", "udp/443" or "tcp/443".
func protocolLabel(t trace.Target) string {
	if t.Port > 0 && t.Protocol != string(probe.ICMP) {
		return fmt.Sprintf("%s/%d", t.Protocol, t.Port)
	}
	return t.Protocol
}

// firstResponder is the hop's first answering address, "" for a silent hop.
func firstResponder(h *trace.Hop) *trace.Responder {
	if h == nil || h.Received == 0 || len(h.Responders) == 0 {
		return nil
	}
	return &h.Responders[0]
}

// silent reports a hop that sent no answer at all.
func silent(h *trace.Hop) bool { return h != nil && h.Received == 0 }

// idleView is the idle ladder of one address as points on an idle-time
// axis.
type idleView struct {
	Result tcpcheck.IdleResult
	Rungs  []rung
	// Survivals counts successful reuses after idling, whose idle times
	// the test does not record one by one.
	Survivals int
}

// rung is one tried idle time.
type rung struct {
	IdleS float64
	// Survived: the connection was reused after IdleS; otherwise it
	// failed with Behaviour (reset, drop, close).
	Survived  bool
	Behaviour string
	// Inferred marks the bracket's lower end drawn from the idle result
	// rather than a connection record.
	Inferred bool
}

// newIdleView derives the rungs from the idle test's connections: a
// record with an idle time either survived it (outcome ok) or ended
// there. The longest survived idle is the bracket's lower end; it is
// added when no record shows it.
func newIdleView(res tcpcheck.Result) idleView {
	v := idleView{Result: *res.Idle}
	for _, c := range res.Connections {
		v.Survivals += c.Uses
		if c.IdleS <= 0 {
			continue
		}
		r := rung{IdleS: c.IdleS, Survived: c.Outcome == tcpcheck.OutcomeOK}
		if !r.Survived {
			r.Behaviour = behaviourOf(c.Outcome)
		}
		v.Rungs = append(v.Rungs, r)
	}
	if lo := v.Result.BracketS[0]; lo > 0 {
		shown := false
		for _, r := range v.Rungs {
			if r.Survived && r.IdleS >= lo {
				shown = true
			}
		}
		if !shown {
			v.Rungs = append(v.Rungs, rung{IdleS: lo, Survived: true, Inferred: true})
		}
	}
	sort.SliceStable(v.Rungs, func(i, j int) bool { return v.Rungs[i].IdleS < v.Rungs[j].IdleS })
	return v
}

// behaviourOf names how an idle connection failed, as the idle test does.
func behaviourOf(o tcpcheck.Outcome) string {
	switch o {
	case tcpcheck.OutcomeTimeout:
		return "drop"
	case tcpcheck.OutcomeClosed:
		return "close"
	}
	return "reset"
}

// num formats a number with at most prec decimals, trailing zeros cut:
// 8.15, 7.9, 10.
func num(x float64, prec int) string {
	p := math.Pow(10, float64(prec))
	return strconv.FormatFloat(math.Round(x*p)/p, 'f', -1, 64)
}

// secs is "8.15 s".
func secs(x float64) string { return num(x, 2) + " s" }

// pct formats a fraction 0..1 as a percentage with two decimals.
func pct(fraction float64) string { return fmt.Sprintf("%.2f%%", 100*fraction) }

// ms formats milliseconds.
func ms(x float64) string { return fmt.Sprintf("%.2f", x) }

// where says who a finding blames: "middlebox at hop 3 (198.18.2.2)",
// "server 198.18.5.2", "unknown".
func where(f diagnose.Finding) string {
	switch {
	case f.Origin == probe.OriginServer:
		s := "server " + f.Address
		if f.Hop > 0 {
			s += fmt.Sprintf(" (hop %d)", f.Hop)
		}
		return s
	case f.Hop > 0:
		s := string(f.Origin)
		if s == "" {
			s = "unknown origin"
		}
		s += fmt.Sprintf(" at hop %d", f.Hop)
		if f.HopAddress != "" {
			s += " (" + f.HopAddress + ")"
		}
		return s + candidatesText(f)
	case f.Origin != "":
		return string(f.Origin)
	}
	return "unknown"
}

// candidatesText adds the hops the evidence could not decide between and
// the named observations (forged-ttl, ...) to where's text.
func candidatesText(f diagnose.Finding) string {
	s := f.UndecidedText()
	if len(f.Observations) > 0 {
		s += "; " + strings.Join(f.Observations, ", ")
	}
	return s
}

// idleLine is "timeout 8.15 s, between 7.9 s and 8.4 s" for idle findings.
func idleLine(f diagnose.Finding) string {
	if f.IdleTimeoutS <= 0 && len(f.IdleBracketS) == 0 {
		return ""
	}
	s := "timeout " + secs(f.IdleTimeoutS)
	if len(f.IdleBracketS) == 2 {
		lo, hi := f.IdleBracketS[0], f.IdleBracketS[1]
		s += fmt.Sprintf(", between %s (survived) and %s (failed)", secs(lo), secs(hi))
	}
	return s
}

// rateLine is "0.40% [0.11%, 1.45%] (95% interval)".
func rateLine(f diagnose.Finding) string {
	if f.Rate <= 0 && len(f.RateCI) == 0 {
		return ""
	}
	s := pct(f.Rate)
	if len(f.RateCI) == 2 {
		s += fmt.Sprintf(" [%s, %s] (95%% interval)", pct(f.RateCI[0]), pct(f.RateCI[1]))
	}
	return s
}

// summary is the closing verdict: "2 findings (1 critical, 1 warning)"
// or "no findings".
func summary(r diagnose.Report) string {
	if len(r.Findings) == 0 {
		return "no findings"
	}
	counts := map[string]int{}
	for _, f := range r.Findings {
		counts[severityName(f.Severity)]++
	}
	var parts []string
	for _, s := range []string{"critical", "warning", "info"} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	return fmt.Sprintf("%s (%s)", plural(len(r.Findings), "finding", "findings"), strings.Join(parts, ", "))
}

// severityName maps unknown or empty severities to "info".
func severityName(s string) string {
	switch s {
	case "critical", "warning":
		return s
	}
	return "info"
}

// headline names a finding's kind and place in one phrase, for titles:
// "idle-reset at hop 3 (198.18.2.2)", "concurrency-limit at the server
// 198.18.5.2".
func headline(f diagnose.Finding) string {
	switch {
	case f.Origin == probe.OriginServer:
		return f.Kind + " at the server " + f.Address
	case f.Hop > 0:
		s := fmt.Sprintf("%s at hop %d", f.Kind, f.Hop)
		if f.HopAddress != "" {
			s += " (" + f.HopAddress + ")"
		}
		return s
	}
	return f.Kind
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// testSummaries describe each connection test in one line.
func testSummaries(t diagnose.TargetReport) []string {
	var out []string
	for _, name := range testOrder {
		res, ok := t.Tests[name]
		if !ok {
			continue
		}
		out = append(out, name+": "+testSummary(name, res))
	}
	for _, name := range sortedKeys(t.Tests) {
		if !contains(testOrder, name) {
			out = append(out, name+": "+testSummary(name, t.Tests[name]))
		}
	}
	return out
}

// serverLine is "server at hop 6 (SYN-ACK TTL 59)" from the first test
// that learnt the server's distance, "" when none did.
func serverLine(t diagnose.TargetReport) string {
	for _, name := range append(append([]string{}, testOrder...), sortedKeys(t.Tests)...) {
		if res, ok := t.Tests[name]; ok && res.ServerHop > 0 {
			return fmt.Sprintf("server at hop %d (SYN-ACK TTL %d)", res.ServerHop, res.ServerTTL)
		}
	}
	return ""
}

func testSummary(name string, res tcpcheck.Result) string {
	var parts []string
	if c := countsLine(res.Counts); c != "" {
		parts = append(parts, c)
	}
	switch {
	case name == "idle" && res.Idle != nil:
		id := res.Idle
		if id.Cause != "" {
			parts = append(parts, fmt.Sprintf("closed by the server after about %s (%s): %s", secs(id.BracketS[1]), id.Cause, id.Note))
		} else if id.TimeoutS > 0 {
			s := fmt.Sprintf("idle timeout %s (between %s and %s)", secs(id.TimeoutS), secs(id.BracketS[0]), secs(id.BracketS[1]))
			if id.Behaviour != "" {
				s += ", " + id.Behaviour
			}
			s += ", keepalive below it: " + id.Verified
			parts = append(parts, s)
		} else {
			parts = append(parts, "no idle timeout up to "+secs(id.MaxS))
		}
	case name == "concurrency" && res.Concurrency != nil:
		c := res.Concurrency
		s := fmt.Sprintf("%d open at once (cap %d)", c.Reached, c.Cap)
		if c.FirstFail > 0 {
			s += fmt.Sprintf(", connection %d was the first to fail", c.FirstFail)
		}
		parts = append(parts, s)
	}
	if res.Error != "" {
		parts = append(parts, "error: "+res.Error)
	}
	if len(parts) == 0 {
		return "ran"
	}
	return strings.Join(parts, "; ")
}

// countsLine is "ok 18, reset 2" (outcomes sorted, ok first).
func countsLine(counts map[tcpcheck.Outcome]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, string(k))
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "ok") != (keys[j] == "ok") {
			return keys[i] == "ok"
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[tcpcheck.Outcome(k)]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// localisationLines describe the localisation probes in words (the
// in-flow table is rendered by each format).
func localisationLines(loc *diagnose.Localisation) []string {
	if loc == nil {
		return nil
	}
	var out []string
	if in := loc.InFlow; in != nil {
		s := "in-flow probes"
		if in.Flow != "" {
			s += " of " + in.Flow
		}
		switch {
		case in.Behaviour == diagnose.InFlowNotTested:
			s += ": not run: " + in.Reason
		case in.Hop > 0:
			s += fmt.Sprintf(": hop %d", in.Hop)
			if in.HopAddress != "" {
				s += " (" + in.HopAddress + ")"
			}
			s += " lost the flow's state"
			if in.Behaviour != "" {
				s += " (" + in.Behaviour + ")"
			}
		default:
			s += ": no hop found that lost the flow's state"
			if in.Reason != "" {
				s += " (" + in.Reason + ")"
			}
		}
		out = append(out, s)
	}
	for _, rw := range loc.Rewrites {
		if len(rw.Changes) == 0 {
			continue
		}
		s := fmt.Sprintf("hop %d", rw.Hop)
		if rw.Address != "" {
			s += " (" + rw.Address + ")"
		}
		out = append(out, s+" rewrites the TCP SYN: "+strings.Join(rw.Changes, ", "))
	}
	if loc.RewritesError != "" {
		out = append(out, "header rewrite probe failed: "+loc.RewritesError)
	}
	if p := loc.PMTU; p != nil && p.Error != "" && p.MTU == 0 {
		out = append(out, "path MTU search failed: "+p.Error)
	} else if p != nil {
		s := fmt.Sprintf("path MTU %d", p.MTU)
		switch {
		case p.BlackholeHop > 0:
			s += fmt.Sprintf("; larger packets vanish beyond hop %d", p.BlackholeHop)
			if p.BlackholeHopAddress != "" {
				s += " (" + p.BlackholeHopAddress + ")"
			}
			s += " without frag-needed (black hole)"
		case p.FragNeededSeen:
			s += "; frag-needed seen"
		}
		out = append(out, s)
	}
	return out
}

// inFlowRow is one TTL of the in-flow comparison.
type inFlowRow struct {
	TTL              int
	Healthy, Expired string
}

func inFlowRows(in *diagnose.InFlow) []inFlowRow {
	if in == nil {
		return nil
	}
	byTTL := map[int]*inFlowRow{}
	var ttls []int
	get := func(ttl int) *inFlowRow {
		if r, ok := byTTL[ttl]; ok {
			return r
		}
		r := &inFlowRow{TTL: ttl, Healthy: "-", Expired: "-"}
		byTTL[ttl] = r
		ttls = append(ttls, ttl)
		return r
	}
	for _, a := range in.Healthy {
		get(a.TTL).Healthy = answerText(a)
	}
	for _, a := range in.Expired {
		get(a.TTL).Expired = answerText(a)
	}
	sort.Ints(ttls)
	rows := make([]inFlowRow, len(ttls))
	for i, ttl := range ttls {
		rows[i] = *byTTL[ttl]
	}
	return rows
}

func answerText(a diagnose.InFlowAnswer) string {
	kind := string(a.Kind)
	if kind == "" {
		kind = "none"
	}
	if a.From == "" {
		return kind
	}
	return kind + " from " + a.From
}

// hopNotes are the notes of a row: the primary trace's note, then the
// other protocols' notes prefixed with their label ("icmp: ..."), except
// "no reply", which the row already shows as "*".
func hopNotes(p pathView, row pathRow) []string {
	var notes []string
	for i, h := range row.Hops {
		if h == nil {
			continue
		}
		prefix := ""
		if i > 0 {
			prefix = p.Labels[i] + ": "
		}
		if a := trace.AsymmNote(h); a != "" {
			notes = append(notes, prefix+a)
		}
		if h.Note == "" {
			continue
		}
		switch {
		case i == 0:
			notes = append(notes, h.Note)
		case h.Note != "no reply":
			notes = append(notes, p.Labels[i]+": "+h.Note)
		}
	}
	return notes
}

// mapStrings returns a deep copy of v with f applied to every string
// (struct fields, slice and array elements, map values; not map keys).
// Renderers use it to neutralise control characters in measured text
// once, whatever field they come in.
func mapStrings(v reflect.Value, f func(string) string) reflect.Value {
	switch v.Kind() {
	case reflect.String:
		out := reflect.New(v.Type()).Elem()
		out.SetString(f(v.String()))
		return out
	case reflect.Slice:
		if v.IsNil() || v.Type().Elem().Kind() == reflect.Uint8 {
			return v
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(mapStrings(v.Index(i), f))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			out.SetMapIndex(iter.Key(), mapStrings(iter.Value(), f))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(mapStrings(v.Elem(), f))
		return out
	case reflect.Array:
		out := reflect.New(v.Type()).Elem()
		for i := range v.Len() {
			out.Index(i).Set(mapStrings(v.Index(i), f))
		}
		return out
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		for i := range v.NumField() {
			if fv := out.Field(i); fv.CanSet() {
				fv.Set(mapStrings(v.Field(i), f))
			}
		}
		return out
	}
	return v
}

// sanitize applies f to every string of the report.
func sanitize(r diagnose.Report, f func(string) string) diagnose.Report {
	return mapStrings(reflect.ValueOf(r), f).Interface().(diagnose.Report)
}

// printable replaces control characters (measured strings are single
// lines) and bidirectional overrides with U+FFFD, so that a reverse DNS
// name cannot drive a terminal or reorder the text around it.
func printable(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isUnsafeRune(r) {
			b.WriteRune('\uFFFD')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isUnsafeRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r)
}
