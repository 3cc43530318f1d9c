package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hopcheck/hopcheck/internal/texttable"
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
		tb := &texttable.Table{Cols: []texttable.Column{
			{Title: "HOP", Right: true}, {Title: "ADDRESS (HOSTNAME) [ASN]"},
			{Title: "LOSS%", Right: true}, {Title: "SENT", Right: true}, {Title: "RECV", Right: true},
			{Title: "LAST", Right: true}, {Title: "AVG", Right: true}, {Title: "BEST", Right: true},
			{Title: "WORST", Right: true}, {Title: "STDEV", Right: true}, {Title: "NOTE"},
		}}
		for _, h := range t.Hops {
			tw.hopRows(tb, h)
		}
		for _, l := range tb.Render(tw.paint) {
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

func (tw *textWriter) hopRows(tb *texttable.Table, h Hop) {
	lossColor := ""
	switch h.LossKind {
	case LossPath:
		lossColor = ansiRed
	case LossRateLimit:
		lossColor = ansiYellow
	}
	row := []texttable.Cell{
		{Text: fmt.Sprint(h.TTL)}, {}, {Text: fmt.Sprintf("%.1f%%", h.LossPct), Color: lossColor},
		{Text: fmt.Sprint(h.Sent)}, {Text: fmt.Sprint(h.Received)},
	}
	if h.Received == 0 {
		row[1] = texttable.Cell{Text: "*", Color: ansiDim}
		row = append(row, texttable.Cell{Text: "-"}, texttable.Cell{Text: "-"}, texttable.Cell{Text: "-"}, texttable.Cell{Text: "-"}, texttable.Cell{Text: "-"})
		tb.Rows = append(tb.Rows, append(row, texttable.Cell{Text: h.Note, Color: ansiDim}))
		return
	}
	row = append(row, msCell(h.RTTms.Last), msCell(h.RTTms.Avg), msCell(h.RTTms.Min),
		msCell(h.RTTms.Max), msCell(h.RTTms.Stdev), texttable.Cell{Text: hopNote(h), Color: lossColor})
	if len(h.Responders) == 0 { // answers without an address: still a row
		row[1] = texttable.Cell{Text: "?"}
		tb.Rows = append(tb.Rows, row)
		return
	}
	for i, r := range h.Responders {
		if i == 0 {
			row[1] = texttable.Cell{Text: responderLabel(r)}
			tb.Rows = append(tb.Rows, row)
		} else {
			// Extra ECMP responders: their own share of the replies.
			note := fmt.Sprintf("recv %d", r.Received)
			if len(r.Flows) > 0 {
				note += fmt.Sprintf(" (%s %s)", pluralWord(len(r.Flows), "flow", "flows"), joinInts(r.Flows))
			}
			tb.Rows = append(tb.Rows, continuation(len(tb.Cols), responderLabel(r), note))
		}
		// Labels do not widen the address column: a free line each, as mtr.
		for _, l := range r.MPLS {
			tb.Free(1, "  "+mplsLabel(l))
		}
	}
}

// hopNote is the NOTE of a hop's first row: tracepath's "asymm N (+d)"
// when the reply came back over a different number of hops (the run
// report's hop table shows the same), then the hop's own note.
func hopNote(h Hop) string {
	a := AsymmNote(&h)
	switch {
	case a == "":
		return h.Note
	case h.Note == "":
		return a
	}
	return a + "; " + h.Note
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// continuation is a row with only the address and note columns.
func continuation(ncols int, address, note string) []texttable.Cell {
	row := make([]texttable.Cell, ncols)
	row[1] = texttable.Cell{Text: address}
	row[ncols-1] = texttable.Cell{Text: note}
	return row
}

func msCell(ms float64) texttable.Cell { return texttable.Cell{Text: fmt.Sprintf("%.2f", ms)} }

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

	tb := &texttable.Table{Cols: []texttable.Column{{Title: "HOP", Right: true}}}
	for _, l := range labels {
		tb.Cols = append(tb.Cols, texttable.Column{Title: strings.ToUpper(l)},
			texttable.Column{Title: "LOSS%", Right: true}, texttable.Column{Title: "AVG", Right: true})
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
		row := []texttable.Cell{{Text: fmt.Sprint(ttl)}}
		for i := range group {
			h, ok := byTTL[i][ttl]
			if !ok {
				row = append(row, texttable.Cell{}, texttable.Cell{}, texttable.Cell{})
				continue
			}
			row = append(row, compactResponder(h), compactLoss(h), compactAvg(h))
		}
		tb.Rows = append(tb.Rows, row)
	}
	if len(ttls) > 0 {
		for _, l := range tb.Render(tw.paint) {
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
func compactResponder(h Hop) texttable.Cell {
	if h.Received == 0 || len(h.Responders) == 0 {
		return texttable.Cell{Text: "*", Color: ansiDim}
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
	return texttable.Cell{Text: s}
}

func compactLoss(h Hop) texttable.Cell {
	c := texttable.Cell{Text: fmt.Sprintf("%.1f%%", h.LossPct)}
	switch h.LossKind {
	case LossPath:
		c.Color = ansiRed
	case LossRateLimit:
		c.Color = ansiYellow
	}
	return c
}

func compactAvg(h Hop) texttable.Cell {
	if h.Received == 0 {
		return texttable.Cell{Text: "-"}
	}
	return msCell(h.RTTms.Avg)
}
