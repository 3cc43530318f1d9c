package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/internal/texttable"
	"github.com/hopcheck/hopcheck/trace"
)

// TextOptions control WriteText.
type TextOptions struct {
	// Color adds ANSI colours (culprit, severities, loss). Without it the
	// output is plain ASCII apart from non-ASCII text in the measurements
	// themselves.
	Color bool
	// Width is where long lines (advice) are wrapped; 0 means 100.
	Width int
}

// ANSI colours used when TextOptions.Color is set.
const (
	ansiRed    = "\x1b[31m"
	ansiBold   = "\x1b[1m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiCyan   = "\x1b[36m"
	ansiDim    = "\x1b[2m"
	ansiReset  = "\x1b[0m"
)

// culpritMark is the margin of the culprit hop's row.
const culpritMark = ">>"

// WriteText writes r for a terminal: a header, then per address an
// mtr-like hop table (the TCP trace, ICMP and UDP side by side) with the
// culprit hop marked ">>" and "CULPRIT", the connection tests in one line
// each, the localisation, and the findings about that address; a summary
// line closes the report.
func WriteText(w io.Writer, r diagnose.Report, opt TextOptions) error {
	width := opt.Width
	if width <= 0 {
		width = 100
	}
	r = sanitize(r, clean)
	tw := &textWriter{w: w, color: opt.Color, width: width}
	tw.line(fmt.Sprintf("hopcheck run: %s, started %s, %s, profile %s, privilege %s",
		orUnknown(r.Tool), r.StartedAt.UTC().Format(time.RFC3339), secs(r.DurationS), orUnknown(r.Profile), orUnknown(r.Privilege)))
	v := newReportView(r)
	for _, tv := range v.Targets {
		tw.line("")
		tw.target(tv, len(r.Findings))
	}
	if len(r.Targets) == 0 {
		tw.line("")
		tw.line("no targets")
	}
	if len(v.Unmatched) > 0 {
		tw.line("")
		tw.line("findings about no diagnosed address:")
		for _, f := range v.Unmatched {
			tw.finding(f, len(r.Findings))
		}
	}
	tw.line("")
	for _, warn := range r.Warnings {
		tw.line("warning: " + warn)
	}
	if r.Incomplete {
		tw.line(tw.paint(ansiYellow, "report incomplete: the run was interrupted before every test finished"))
	}
	sum := summary(r)
	switch {
	case len(r.Findings) == 0:
		sum = tw.paint(ansiGreen, sum)
	default:
		sum = tw.paint(ansiRed+ansiBold, sum)
	}
	tw.line(sum + culpritSummary(v))
	return tw.err
}

// culpritSummary is "; culprit: hop 3 (198.18.2.2) toward 198.18.5.2":
// each culprit once, with every address it stands in front of (an https
// and an amqps target on one address, or several addresses behind one
// box, name the same culprit).
func culpritSummary(v reportView) string {
	var culprits []string
	toward := map[string][]string{}
	for _, tv := range v.Targets {
		if tv.Culprit <= 0 {
			continue
		}
		s := fmt.Sprintf("hop %d", tv.Culprit)
		if addr := culpritAddress(tv); addr != "" {
			s += " (" + addr + ")"
		}
		if _, seen := toward[s]; !seen {
			culprits = append(culprits, s)
		}
		if !slices.Contains(toward[s], tv.T.Address) {
			toward[s] = append(toward[s], tv.T.Address)
		}
	}
	if len(culprits) == 0 {
		return ""
	}
	parts := make([]string, len(culprits))
	for i, s := range culprits {
		parts[i] = s + " toward " + strings.Join(toward[s], ", ")
	}
	return "; culprit: " + strings.Join(parts, "; ")
}

// culpritAddress is the culprit hop's address: from the finding that
// names it, else from the primary trace.
func culpritAddress(tv targetView) string {
	for _, f := range tv.Findings {
		if f.Hop == tv.Culprit && f.HopAddress != "" {
			return f.HopAddress
		}
	}
	for _, row := range tv.Path.Rows {
		if row.TTL == tv.Culprit && len(row.Hops) > 0 {
			if resp := firstResponder(row.Hops[0]); resp != nil {
				return resp.Address
			}
		}
	}
	return ""
}

// confidenceText is a finding's confidence and what placed its sender,
// when a method did: "high (by fingerprint)".
func confidenceText(f diagnose.Finding) string { return orUnknown(f.Confidence) + f.MethodText() }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// textWriter accumulates the first write error so rendering code stays
// linear.
type textWriter struct {
	w     io.Writer
	color bool
	width int
	err   error
}

func (tw *textWriter) line(s string) {
	if tw.err == nil {
		_, tw.err = io.WriteString(tw.w, strings.TrimRight(s, " ")+"\n")
	}
}

func (tw *textWriter) paint(color, s string) string {
	if !tw.color || color == "" || s == "" {
		return s
	}
	return color + s + ansiReset
}

func (tw *textWriter) target(tv targetView, total int) {
	t := tv.T
	dest := clean(t.Address)
	if t.Host != "" && t.Host != t.Address {
		dest = clean(t.Host) + " (" + clean(t.Address) + ")"
	}
	head := fmt.Sprintf("== %d. %s  %s port %d", tv.Index, clean(t.Target), dest, t.Port)
	if t.App != "" {
		head += " (" + clean(t.App) + ")"
	}
	tw.line(tw.paint(ansiBold, head+" =="))
	if t.Error != "" {
		tw.line(tw.paint(ansiRed, "error: "+clean(t.Error)))
	}
	tw.hopTable(tv)
	if s := serverLine(t); s != "" {
		tw.line(s)
	}
	for _, s := range testSummaries(t) {
		tw.line("test " + clean(s))
	}
	tw.localisation(t.Localisation)
	if len(tv.Findings) == 0 {
		tw.line(tw.paint(ansiGreen, "no findings for this address"))
		return
	}
	for _, f := range tv.Findings {
		tw.finding(f, total)
	}
}

// hopTable is the mtr-like table: margin, hop, the primary trace's
// responder (address, hostname, ASN), its loss and average RTT, the other
// protocols' responder, loss and average, and a note.
func (tw *textWriter) hopTable(tv targetView) {
	p := tv.Path
	if len(p.Traces) == 0 {
		tw.line("no traces")
		return
	}
	var reach []string
	for i, tr := range p.Traces {
		s := p.Labels[i] + ": "
		switch {
		case tr.Reached:
			s += fmt.Sprintf("reached at hop %d", tr.ReachedTTL)
		default:
			s += "destination not reached"
		}
		if tr.Error != "" {
			s += " (error: " + clean(tr.Error) + ")"
		}
		reach = append(reach, s)
	}
	tw.line(strings.Join(reach, "; "))
	if len(p.Rows) == 0 {
		return
	}
	tb := &texttable.Table{Cols: []texttable.Column{{Title: "  "}, {Title: "HOP", Right: true}}}
	for i, l := range p.Labels {
		title := strings.ToUpper(l)
		if i == 0 {
			title += " ADDRESS (HOSTNAME) [ASN]"
		}
		tb.Cols = append(tb.Cols, texttable.Column{Title: title}, texttable.Column{Title: "LOSS%", Right: true}, texttable.Column{Title: "AVG", Right: true})
	}
	tb.Cols = append(tb.Cols, texttable.Column{Title: "NOTE"})
	dest := p.ServerTTL()
	for _, row := range p.Rows {
		cells := []texttable.Cell{{}, {Text: fmt.Sprint(row.TTL)}}
		culprit := tv.Culprit > 0 && row.TTL == tv.Culprit
		if culprit {
			cells[0] = texttable.Cell{Text: culpritMark, Color: ansiRed + ansiBold}
			cells[1].Color = ansiRed + ansiBold
		}
		for i, h := range row.Hops {
			cells = append(cells, responderCell(h, i == 0), lossCell(h), avgCell(h))
		}
		var notes []string
		if culprit {
			notes = append(notes, culpritNote(tv))
		}
		if row.TTL == dest && len(tv.ServerKinds) > 0 {
			notes = append(notes, "SERVER: "+strings.Join(tv.ServerKinds, ", "))
		}
		notes = append(notes, hopNotes(p, row)...)
		for i := range notes {
			notes[i] = clean(notes[i])
		}
		note := texttable.Cell{Text: strings.Join(notes, "; ")}
		switch {
		case culprit:
			note.Color = ansiRed + ansiBold
			cells[2].Color = ansiRed + ansiBold
		case silent(row.Hops[0]):
			note.Color = ansiDim
		}
		tb.Rows = append(tb.Rows, append(cells, note))
	}
	for _, l := range tb.Render(tw.paint) {
		tw.line(l)
	}
}

// culpritNote is "CULPRIT: idle-reset".
func culpritNote(tv targetView) string {
	if len(tv.CulpritKinds) == 0 {
		return "CULPRIT"
	}
	return "CULPRIT: " + strings.Join(tv.CulpritKinds, ", ")
}

// responderCell: with full, "ADDRESS (HOSTNAME) [ASN]"; else the address.
// "+N" counts further ECMP responders; "*" is a silent hop, "" a TTL the
// trace did not probe.
func responderCell(h *trace.Hop, full bool) texttable.Cell {
	if h == nil {
		return texttable.Cell{}
	}
	r := firstResponder(h)
	if r == nil {
		if h.Received > 0 {
			return texttable.Cell{Text: "?"}
		}
		return texttable.Cell{Text: "*", Color: ansiDim}
	}
	s := clean(r.Address)
	if full {
		if r.Hostname != "" {
			s += " (" + clean(r.Hostname) + ")"
		}
		if r.ASN != "" {
			s += " [" + clean(r.ASN) + "]"
		}
	}
	if n := len(h.Responders) - 1; n > 0 {
		s += fmt.Sprintf(" +%d", n)
	}
	return texttable.Cell{Text: s}
}

func lossCell(h *trace.Hop) texttable.Cell {
	if h == nil {
		return texttable.Cell{}
	}
	c := texttable.Cell{Text: fmt.Sprintf("%.1f%%", h.LossPct)}
	switch h.LossKind {
	case trace.LossPath:
		c.Color = ansiRed
	case trace.LossRateLimit:
		c.Color = ansiYellow
	}
	return c
}

func avgCell(h *trace.Hop) texttable.Cell {
	switch {
	case h == nil:
		return texttable.Cell{}
	case h.Received == 0:
		return texttable.Cell{Text: "-"}
	}
	return texttable.Cell{Text: ms(h.RTTms.Avg)}
}

func (tw *textWriter) localisation(loc *diagnose.Localisation) {
	for _, s := range localisationLines(loc) {
		tw.line("localisation: " + clean(s))
	}
	if loc == nil || loc.InFlow == nil {
		return
	}
	rows := inFlowRows(loc.InFlow)
	if len(rows) == 0 {
		return
	}
	tb := &texttable.Table{Cols: []texttable.Column{{Title: "  TTL", Right: true}, {Title: "HEALTHY FLOW"}, {Title: "AFTER IDLE"}}}
	for _, r := range rows {
		c := texttable.Cell{Text: clean(r.Expired)}
		if loc.InFlow.Hop > 0 && r.TTL == loc.InFlow.Hop {
			c.Color = ansiRed
		}
		tb.Rows = append(tb.Rows, []texttable.Cell{{Text: fmt.Sprint(r.TTL)}, {Text: clean(r.Healthy)}, c})
	}
	for _, l := range tb.Render(tw.paint) {
		tw.line(l)
	}
}

// finding writes one finding as labelled lines; long values are wrapped.
func (tw *textWriter) finding(f numberedFinding, total int) {
	sevColor := ansiCyan
	switch severityName(f.Severity) {
	case "critical":
		sevColor = ansiRed + ansiBold
	case "warning":
		sevColor = ansiYellow
	}
	tw.line("")
	tw.line(tw.paint(sevColor, fmt.Sprintf("FINDING %d/%d  %s  [%s, confidence %s]",
		f.N, total, clean(f.Kind), severityName(f.Severity), clean(confidenceText(f.Finding)))))
	field := func(name, value string) {
		if value == "" {
			return
		}
		tw.wrapped(fmt.Sprintf("  %-11s", name), clean(value))
	}
	field("target", f.targetLine())
	field("origin", where(f.Finding))
	field("phase", f.Phase)
	field("idle", idleLine(f.Finding))
	field("rate", rateLine(f.Finding))
	if f.Limit > 0 {
		field("limit", plural(f.Limit, "connection at once", "connections at once"))
	}
	if f.MTU > 0 {
		field("mtu", fmt.Sprint(f.MTU))
	}
	if len(f.Evidence) > 0 {
		tw.line("  evidence")
		for _, e := range f.Evidence {
			tw.wrapped("    - ", clean(e))
		}
	}
	field("advice", f.Advice)
}

// wrapped writes prefix+text wrapped at the writer's width, continuation
// lines indented to the prefix.
func (tw *textWriter) wrapped(prefix, text string) {
	indent := strings.Repeat(" ", utf8.RuneCountInString(prefix))
	avail := max(tw.width-len(indent), 20)
	for i, l := range wrap(text, avail) {
		if i == 0 {
			tw.line(prefix + l)
		} else {
			tw.line(indent + l)
		}
	}
}

// wrap splits text into lines of at most width runes at spaces; a word
// longer than width gets a line of its own.
func wrap(text string, width int) []string {
	var lines []string
	var cur strings.Builder
	n := 0
	for _, word := range strings.Fields(text) {
		wl := utf8.RuneCountInString(word)
		if n > 0 && n+1+wl > width {
			lines = append(lines, cur.String())
			cur.Reset()
			n = 0
		}
		if n > 0 {
			cur.WriteByte(' ')
			n++
		}
		cur.WriteString(word)
		n += wl
	}
	if n > 0 || len(lines) == 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// asciiFor spells the symbols measurement texts use in ASCII.
var asciiFor = map[rune]string{
	'→': "->", '←': "<-", '≥': ">=", '≤': "<=", '±': "+/-", '×': "x", '…': "...",
	'–': "-", '—': "-", '≈': "~", '·': "-", '‘': "'", '’': "'", '“': `"`, '”': `"`, 'µ': "u",
}

// clean makes a measured string safe for a terminal: control characters
// (an escape sequence in a reverse DNS name, say) become '?', and common
// symbols are spelled in ASCII.
func clean(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case isUnsafeRune(r):
			b.WriteByte('?')
		case asciiFor[r] != "":
			b.WriteString(asciiFor[r])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
