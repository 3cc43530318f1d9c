package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hopcheck/hopcheck/probe"
)

// WriteJSON writes r as indented JSON with a trailing newline. Empty lists
// are written as [] rather than null.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(withEmptyLists(r)); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

// withEmptyLists returns a copy of r whose nil lists are empty, leaving the
// caller's slices untouched.
func withEmptyLists(r Report) Report {
	traces := make([]Trace, len(r.Traces))
	for i, t := range r.Traces {
		hops := make([]Hop, len(t.Hops))
		for j, h := range t.Hops {
			responders := make([]Responder, len(h.Responders))
			for k, resp := range h.Responders {
				if resp.MPLS == nil {
					resp.MPLS = []probe.MPLSLabel{}
				}
				responders[k] = resp
			}
			h.Responders = responders
			hops[j] = h
		}
		t.Hops = hops
		traces[i] = t
	}
	r.Traces = traces
	return r
}

// TextOptions control WriteText.
type TextOptions struct {
	// SideBySide renders traces toward the same address with different
	// protocols in one table, one column group per protocol.
	SideBySide bool
	// Color adds ANSI colours (loss, silent hops, the verdict line).
	Color bool
}

// ANSI colours used when TextOptions.Color is set.
const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiDim    = "\x1b[2m"
	ansiReset  = "\x1b[0m"
)

// WriteText writes r as mtr-like tables in plain ASCII: one table per
// trace, or with opt.SideBySide one per address whose traces differ in
// protocol. Report warnings and incompleteness follow the tables.
func WriteText(w io.Writer, r Report, opt TextOptions) error {
	tw := &textWriter{w: w, color: opt.Color}
	for i, group := range groupTraces(r.Traces, opt.SideBySide) {
		if i > 0 {
			tw.line("")
		}
		if len(group) == 1 {
			tw.trace(group[0])
		} else {
			tw.sideBySide(group)
		}
	}
	if len(r.Traces) == 0 {
		tw.line("no traces")
	}
	if len(r.Warnings) > 0 || r.Incomplete {
		tw.line("")
	}
	for _, warn := range r.Warnings {
		tw.line("warning: " + warn)
	}
	if r.Incomplete {
		tw.line(tw.paint(ansiYellow, "report incomplete: interrupted before every trace finished"))
	}
	return tw.err
}

// groupTraces keeps report order; with sideBySide, traces toward the same
// address form one group at the position of the first of them.
func groupTraces(traces []Trace, sideBySide bool) [][]Trace {
	var groups [][]Trace
	index := make(map[string]int)
	for _, t := range traces {
		if sideBySide {
			if i, ok := index[t.Target.Address]; ok {
				groups[i] = append(groups[i], t)
				continue
			}
			index[t.Target.Address] = len(groups)
		}
		groups = append(groups, []Trace{t})
	}
	return groups
}

// textWriter accumulates the first write error so rendering code stays
// linear.
type textWriter struct {
	w     io.Writer
	color bool
	err   error
}

func (tw *textWriter) line(s string) {
	if tw.err == nil {
		_, tw.err = io.WriteString(tw.w, s+"\n")
	}
}

func (tw *textWriter) paint(color, s string) string {
	if !tw.color || color == "" || s == "" {
		return s
	}
	return color + s + ansiReset
}

// protocolLabel is "icmp", "udp/33434" or "tcp/443".
func protocolLabel(t Target) string {
	if t.Port > 0 && t.Protocol != string(probe.ICMP) {
		return fmt.Sprintf("%s/%d", t.Protocol, t.Port)
	}
	return t.Protocol
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// destination is "HOST (ADDR)", or just the address when it is the host.
func destination(t Target) string {
	switch {
	case t.Host == "" || t.Host == t.Address:
		return t.Address
	case t.Address == "":
		return t.Host
	}
	return fmt.Sprintf("%s (%s)", t.Host, t.Address)
}

// runSettings is ", privilege raw, 3 queries x 1 round[, 4 flows]".
func runSettings(t Trace) string {
	var b strings.Builder
	if t.Privilege != "" {
		b.WriteString(", privilege " + t.Privilege)
	}
	fmt.Fprintf(&b, ", %s x %s", plural(t.Queries, "query", "queries"), plural(t.Rounds, "round", "rounds"))
	if t.Flows > 1 {
		b.WriteString(", " + plural(t.Flows, "flow", "flows"))
	}
	return b.String()
}

func (tw *textWriter) trace(t Trace) {
	tw.line(fmt.Sprintf("hopcheck trace to %s %s%s", destination(t.Target), protocolLabel(t.Target), runSettings(t)))
	if len(t.Hops) > 0 {
		tb := &table{cols: []column{
			{title: "HOP", right: true}, {title: "ADDRESS (HOSTNAME) [ASN]"},
			{title: "LOSS%", right: true}, {title: "SENT", right: true}, {title: "RECV", right: true},
			{title: "LAST", right: true}, {title: "AVG", right: true}, {title: "BEST", right: true},
			{title: "WORST", right: true}, {title: "STDEV", right: true}, {title: "NOTE"},
		}}
		for _, h := range t.Hops {
			tw.hopRows(tb, h)
		}
		for _, l := range tb.render(tw.paint) {
			tw.line(l)
		}
	}
	if t.Error != "" {
		tw.line(tw.paint(ansiRed, "error: "+t.Error))
	}
	tw.line(tw.verdict(t))
}

// verdict is the closing line of a trace.
func (tw *textWriter) verdict(t Trace) string {
	if t.Reached {
		return tw.paint(ansiGreen, fmt.Sprintf("reached at hop %d", t.ReachedTTL))
	}
	return tw.paint(ansiRed, "destination not reached")
}

func (tw *textWriter) hopRows(tb *table, h Hop) {
	lossColor := ""
	switch h.LossKind {
	case LossPath:
		lossColor = ansiRed
	case LossRateLimit:
		lossColor = ansiYellow
	}
	row := []cell{
		{text: fmt.Sprint(h.TTL)}, {}, {text: fmt.Sprintf("%.1f%%", h.LossPct), color: lossColor},
		{text: fmt.Sprint(h.Sent)}, {text: fmt.Sprint(h.Received)},
	}
	if h.Received == 0 {
		row[1] = cell{text: "*", color: ansiDim}
		row = append(row, cell{text: "-"}, cell{text: "-"}, cell{text: "-"}, cell{text: "-"}, cell{text: "-"})
		tb.rows = append(tb.rows, append(row, cell{text: h.Note, color: ansiDim}))
		return
	}
	row = append(row, msCell(h.RTTms.Last), msCell(h.RTTms.Avg), msCell(h.RTTms.Min),
		msCell(h.RTTms.Max), msCell(h.RTTms.Stdev), cell{text: h.Note, color: lossColor})
	if len(h.Responders) == 0 { // answers without an address: still a row
		row[1] = cell{text: "?"}
		tb.rows = append(tb.rows, row)
		return
	}
	for i, r := range h.Responders {
		if i == 0 {
			row[1] = cell{text: responderLabel(r)}
			tb.rows = append(tb.rows, row)
		} else {
			// Extra ECMP responders: their own share of the replies.
			note := fmt.Sprintf("recv %d", r.Received)
			if len(r.Flows) > 0 {
				note += fmt.Sprintf(" (%s %s)", pluralWord(len(r.Flows), "flow", "flows"), joinInts(r.Flows))
			}
			tb.rows = append(tb.rows, continuation(len(tb.cols), responderLabel(r), note))
		}
		// Labels do not widen the address column: a free line each, as mtr.
		for _, l := range r.MPLS {
			tb.free(1, "  "+mplsLabel(l))
		}
	}
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// continuation is a row with only the address and note columns.
func continuation(ncols int, address, note string) []cell {
	row := make([]cell, ncols)
	row[1] = cell{text: address}
	row[ncols-1] = cell{text: note}
	return row
}

func msCell(ms float64) cell { return cell{text: fmt.Sprintf("%.2f", ms)} }

// responderLabel is "ADDRESS (HOSTNAME) [ASN]" without the empty parts.
func responderLabel(r Responder) string {
	s := r.Address
	if r.Hostname != "" {
		s += " (" + r.Hostname + ")"
	}
	if r.ASN != "" {
		s += " [" + r.ASN + "]"
	}
	return s
}

// mplsLabel renders one label stack entry as traceroute does.
func mplsLabel(l probe.MPLSLabel) string {
	s := 0
	if l.S {
		s = 1
	}
	return fmt.Sprintf("[MPLS: L=%d E=%d S=%d TTL=%d]", l.Label, l.TC, s, l.TTL)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

// sideBySide renders traces toward one address with different protocols in
// one table, so that where each protocol stops is visible at a glance.
func (tw *textWriter) sideBySide(group []Trace) {
	labels := make([]string, len(group))
	for i, t := range group {
		labels[i] = protocolLabel(t.Target)
	}
	first := group[0]
	tw.line(fmt.Sprintf("hopcheck trace to %s: %s side by side%s",
		destination(first.Target), strings.Join(labels, ", "), runSettings(first)))

	tb := &table{cols: []column{{title: "HOP", right: true}}}
	for _, l := range labels {
		tb.cols = append(tb.cols, column{title: strings.ToUpper(l)},
			column{title: "LOSS%", right: true}, column{title: "AVG", right: true})
	}
	byTTL := make([]map[int]Hop, len(group))
	var ttls []int
	for i, t := range group {
		byTTL[i] = make(map[int]Hop)
		for _, h := range t.Hops {
			byTTL[i][h.TTL] = h
			if !slices.Contains(ttls, h.TTL) {
				ttls = append(ttls, h.TTL)
			}
		}
	}
	slices.Sort(ttls)
	for _, ttl := range ttls {
		row := []cell{{text: fmt.Sprint(ttl)}}
		for i := range group {
			h, ok := byTTL[i][ttl]
			if !ok {
				row = append(row, cell{}, cell{}, cell{})
				continue
			}
			row = append(row, compactResponder(h), compactLoss(h), compactAvg(h))
		}
		tb.rows = append(tb.rows, row)
	}
	if len(ttls) > 0 {
		for _, l := range tb.render(tw.paint) {
			tw.line(l)
		}
	}

	lastReply := make([]int, len(group))
	for i, t := range group {
		lastReply[i] = lastAnsweringTTL(t)
		s := labels[i] + ": "
		switch {
		case t.Reached:
			s += tw.paint(ansiGreen, fmt.Sprintf("reached at hop %d", t.ReachedTTL))
		case lastReply[i] > 0:
			s += tw.paint(ansiRed, "destination not reached") + fmt.Sprintf(", last reply at hop %d", lastReply[i])
		default:
			s += tw.paint(ansiRed, "destination not reached") + ", no reply at all"
		}
		if t.Error != "" {
			s += "; error: " + t.Error
		}
		tw.line(s)
	}
	// Say in words which protocol stops early: the point of this view.
	furthest := slices.Max(lastReply)
	var goOn []string
	for i, last := range lastReply {
		if last == furthest {
			goOn = append(goOn, labels[i])
		}
	}
	verb := "goes"
	if len(goOn) > 1 {
		verb = "go"
	}
	for i, last := range lastReply {
		if last < furthest {
			stop := fmt.Sprintf("stops after hop %d", last)
			if last == 0 {
				stop = "gets no reply at all"
			}
			tw.line(fmt.Sprintf("%s %s while %s %s on to hop %d",
				labels[i], stop, joinAnd(goOn), verb, furthest))
		}
	}
}

func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

func lastAnsweringTTL(t Trace) int {
	last := 0
	for _, h := range t.Hops {
		if h.Received > 0 {
			last = max(last, h.TTL)
		}
	}
	return last
}

// compactResponder is the first responder, "+N" for further ECMP ones and
// the traceroute marker of an unreachable, if any.
func compactResponder(h Hop) cell {
	if h.Received == 0 || len(h.Responders) == 0 {
		return cell{text: "*", color: ansiDim}
	}
	s := h.Responders[0].Address
	if n := len(h.Responders) - 1; n > 0 {
		s += fmt.Sprintf(" +%d", n)
	}
	for part := range strings.SplitSeq(h.Note, "; ") {
		if strings.HasPrefix(part, "!") {
			s += " " + strings.Fields(part)[0]
		}
	}
	return cell{text: s}
}

func compactLoss(h Hop) cell {
	c := cell{text: fmt.Sprintf("%.1f%%", h.LossPct)}
	switch h.LossKind {
	case LossPath:
		c.color = ansiRed
	case LossRateLimit:
		c.color = ansiYellow
	}
	return c
}

func compactAvg(h Hop) cell {
	if h.Received == 0 {
		return cell{text: "-"}
	}
	return msCell(h.RTTms.Avg)
}

// table is a minimal aligned text table: columns separated by two spaces,
// the last column unpadded, trailing blanks trimmed.
type table struct {
	cols []column
	rows [][]cell
	// freeLines are written after row index (len(rows) when added),
	// starting at column col, without affecting the widths.
	freeLines []freeLine
}

type freeLine struct {
	after int
	col   int
	text  string
}

// free adds a line that starts at column col after the current rows.
func (tb *table) free(col int, text string) {
	tb.freeLines = append(tb.freeLines, freeLine{after: len(tb.rows), col: col, text: text})
}

type column struct {
	title string
	right bool
}

type cell struct {
	text  string
	color string // ANSI colour, applied after padding so alignment holds
}

func (tb *table) render(paint func(color, s string) string) []string {
	widths := make([]int, len(tb.cols))
	for i, c := range tb.cols {
		widths[i] = utf8.RuneCountInString(c.title)
	}
	for _, row := range tb.rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	header := make([]cell, len(tb.cols))
	for i, c := range tb.cols {
		header[i] = cell{text: c.title}
	}
	lines := make([]string, 0, len(tb.rows)+len(tb.freeLines)+1)
	free := tb.freeLines
	writeFree := func(f freeLine) {
		indent := 0
		for _, w := range widths[:f.col] {
			indent += w + 2
		}
		lines = append(lines, strings.Repeat(" ", indent)+f.text)
	}
	for r, row := range append([][]cell{header}, tb.rows...) {
		// r counts the header: free lines added after n rows go before row n+1.
		for ; len(free) > 0 && free[0].after < r; free = free[1:] {
			writeFree(free[0])
		}
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text))
			switch {
			case i == len(tb.cols)-1 && !tb.cols[i].right:
				b.WriteString(paint(c.color, c.text)) // nothing follows: no padding
			case tb.cols[i].right:
				b.WriteString(pad + paint(c.color, c.text))
			default:
				b.WriteString(paint(c.color, c.text) + pad)
			}
		}
		lines = append(lines, strings.TrimRight(b.String(), " "))
	}
	for _, f := range free {
		writeFree(f)
	}
	return lines
}
