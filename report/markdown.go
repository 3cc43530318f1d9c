package report

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/hopcheck/hopcheck/diagnose"
)

// WriteMarkdown writes r as Markdown to paste into a ticket to the owner
// of the path: a title naming the main finding, when and how it was
// measured, per address a hop table (culprit in bold) and the findings
// with their evidence and advice, and how the measurement works.
// Measured strings are escaped, so a hostile reverse DNS name renders as
// text.
func WriteMarkdown(w io.Writer, r diagnose.Report) error {
	r = sanitize(r, printable)
	v := newReportView(r)
	var b strings.Builder
	fmt.Fprintf(&b, "# hopcheck: %s\n\n", md(mdTitle(r, v)))

	row := func(k, val string) { fmt.Fprintf(&b, "- **%s:** %s\n", k, val) }
	row("Result", md(summary(r)+culpritSummary(v)))
	row("Measured", md(fmt.Sprintf("%s, for %s (profile %s)",
		mdTime(r.StartedAt), secs(r.DurationS), orUnknown(r.Profile))))
	var toward []string
	for _, tv := range v.Targets {
		toward = append(toward, fmt.Sprintf("%s (%s port %d)", tv.T.Target, tv.T.Address, tv.T.Port))
	}
	if len(toward) > 0 {
		row("Toward", md(strings.Join(toward, "; ")))
	}
	row("Tool", md(orUnknown(r.Tool)))
	row("Evidence", md(evidenceLine(r.Privilege)))
	if r.Incomplete {
		row("Incomplete", "the run was interrupted before every test finished; results are partial")
	}
	for _, warn := range r.Warnings {
		row("Warning", md(warn))
	}
	b.WriteString("\n")

	for _, tv := range v.Targets {
		mdTarget(&b, tv)
	}
	if len(v.Unmatched) > 0 {
		b.WriteString("## Findings about no diagnosed address\n\n")
		for _, f := range v.Unmatched {
			mdFinding(&b, f)
		}
	}
	b.WriteString("## How this was measured\n\n")
	b.WriteString(md(howMeasured(r)) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// mdTitle names the most severe finding, or says there was none.
func mdTitle(r diagnose.Report, v reportView) string {
	if len(r.Findings) == 0 {
		var hosts []string
		for _, tv := range v.Targets {
			hosts = appendUnique(hosts, orUnknown(tv.T.Host))
		}
		if len(hosts) == 0 {
			return "no findings"
		}
		return "no findings toward " + strings.Join(hosts, ", ")
	}
	f := r.Findings[0]
	s := headline(f)
	if f.Address != "" {
		s += " toward " + f.Address
	}
	if n := len(r.Findings) - 1; n > 0 {
		s += fmt.Sprintf(" (+%s)", plural(n, "more finding", "more findings"))
	}
	return s
}

// evidenceLine says what the privilege tier could see.
func evidenceLine(privilege string) string {
	switch privilege {
	case "raw":
		return "privilege raw: packets captured, resets and FINs attributed to their sender by IP TTL"
	case "unprivileged":
		return "privilege unprivileged: socket errors only (no CAP_NET_RAW); origins of resets are estimates (IP_MINTTL), confidence lower"
	}
	return "privilege " + orUnknown(privilege)
}

// howMeasured is the closing paragraph shared by Markdown and HTML.
func howMeasured(r diagnose.Report) string {
	s := "hopcheck traced the path to every address with ICMP echo, UDP and TCP SYN probes to the service port; " +
		"every probe carries its own identity, so replies are never confused with other traffic. " +
		"It then opened real connections with the service's protocol (TLS and HTTP, or AMQP): a series of connects, " +
		"a light concurrency ramp, a data transfer, and an idle ladder that holds connections idle for increasing times " +
		"and reuses them, which brackets the idle timeout of the path. " +
		"A reset or FIN is attributed to the server or to a box at hop k by the IP TTL it arrives with; " +
		"for a flow that lost its state, TTL-limited segments of that same flow (the intrace technique) show the hop " +
		"that answers with a reset or after which the flow's packets vanish."
	if r.Privilege == "unprivileged" {
		s += " This run had no CAP_NET_RAW: no packets were captured, so origins come from an IP_MINTTL comparison and are less certain."
	}
	return s
}

func mdTarget(b *strings.Builder, tv targetView) {
	t := tv.T
	head := fmt.Sprintf("Target %d: %s, %s port %d", tv.Index, t.Target, t.Address, t.Port)
	if t.App != "" {
		head += " (" + t.App + ")"
	}
	fmt.Fprintf(b, "## %s\n\n", md(head))
	if t.Error != "" {
		fmt.Fprintf(b, "**Error:** %s\n\n", md(t.Error))
	}
	mdHopTable(b, tv)
	var facts []string
	if s := serverLine(t); s != "" {
		facts = append(facts, s)
	}
	for _, s := range testSummaries(t) {
		facts = append(facts, "test "+s)
	}
	facts = append(facts, localisationLines(t.Localisation)...)
	for _, s := range facts {
		fmt.Fprintf(b, "- %s\n", md(s))
	}
	if len(facts) > 0 {
		b.WriteString("\n")
	}
	if loc := t.Localisation; loc != nil && loc.InFlow != nil {
		if rows := inFlowRows(loc.InFlow); len(rows) > 0 {
			b.WriteString("In-flow probes (segments of the flow with TTL 1, 2, ..., before and after it idled past the timeout):\n\n")
			b.WriteString("| TTL | Healthy flow | After idle |\n|---:|---|---|\n")
			for _, r := range rows {
				after := md(r.Expired)
				if r.TTL == loc.InFlow.Hop {
					after = bold(after)
				}
				fmt.Fprintf(b, "| %d | %s | %s |\n", r.TTL, md(r.Healthy), after)
			}
			b.WriteString("\n")
		}
	}
	if len(tv.Findings) == 0 {
		b.WriteString("No findings for this address.\n\n")
		return
	}
	for _, f := range tv.Findings {
		mdFinding(b, f)
	}
}

// mdHopTable is the primary trace's hops; the culprit row is bold.
func mdHopTable(b *strings.Builder, tv targetView) {
	p := tv.Path
	tr := p.Primary()
	if tr == nil {
		b.WriteString("No trace ran.\n\n")
		return
	}
	var reach []string
	for i, t := range p.Traces {
		if t.Reached {
			reach = append(reach, fmt.Sprintf("%s reached the destination at hop %d", p.Labels[i], t.ReachedTTL))
		} else {
			reach = append(reach, p.Labels[i]+" did not reach the destination")
		}
	}
	fmt.Fprintf(b, "Path as seen by the %s trace (%s):\n\n", md(p.Labels[0]), md(strings.Join(reach, "; ")))
	if len(p.Rows) == 0 {
		b.WriteString("No hops.\n\n")
		return
	}
	b.WriteString("| Hop | Address | Hostname | ASN | Loss | Avg RTT (ms) | Note |\n")
	b.WriteString("|---:|---|---|---|---:|---:|---|\n")
	dest := p.ServerTTL()
	for _, row := range p.Rows {
		h := row.Hops[0]
		cells := []string{fmt.Sprint(row.TTL), "", "", "", "", "", ""}
		if h != nil {
			cells[4] = fmt.Sprintf("%.1f%%", h.LossPct)
			cells[5] = "-"
			if h.Received > 0 {
				cells[5] = ms(h.RTTms.Avg)
			}
			if r := firstResponder(h); r != nil {
				cells[1], cells[2], cells[3] = md(r.Address), md(r.Hostname), md(r.ASN)
				if n := len(h.Responders) - 1; n > 0 {
					cells[1] += fmt.Sprintf(" (+%d ECMP)", n)
				}
			} else if silent(h) {
				cells[1] = "\\*"
			}
		}
		var notes []string
		culprit := tv.Culprit > 0 && row.TTL == tv.Culprit
		if culprit {
			notes = append(notes, culpritNote(tv))
		}
		if row.TTL == dest && len(tv.ServerKinds) > 0 {
			notes = append(notes, "SERVER: "+strings.Join(tv.ServerKinds, ", "))
		}
		notes = append(notes, hopNotes(p, row)...)
		cells[6] = md(strings.Join(notes, "; "))
		if culprit {
			for i := range cells {
				cells[i] = bold(cells[i])
			}
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString("\n")
}

func mdFinding(b *strings.Builder, f numberedFinding) {
	fmt.Fprintf(b, "### Finding %d: %s\n\n", f.N, md(headline(f.Finding)))
	item := func(k, val string) {
		if val != "" {
			fmt.Fprintf(b, "- **%s:** %s\n", k, md(val))
		}
	}
	item("Severity", fmt.Sprintf("%s, confidence %s", severityName(f.Severity), confidenceText(f.Finding)))
	item("Target", f.targetLine())
	item("Origin", where(f.Finding))
	item("Phase", f.Phase)
	item("Idle", idleLine(f.Finding))
	item("Failure rate", rateLine(f.Finding))
	if f.Limit > 0 {
		item("Limit", plural(f.Limit, "connection at once", "connections at once"))
	}
	if f.MTU > 0 {
		item("Path MTU", fmt.Sprint(f.MTU))
	}
	b.WriteString("\n")
	if len(f.Evidence) > 0 {
		b.WriteString("Evidence:\n\n")
		for _, e := range f.Evidence {
			fmt.Fprintf(b, "- %s\n", md(e))
		}
		b.WriteString("\n")
	}
	if f.Advice != "" {
		fmt.Fprintf(b, "**Advice:** %s\n\n", md(f.Advice))
	}
}

// bold wraps non-empty cell text in **.
func bold(s string) string {
	if s == "" {
		return ""
	}
	return "**" + s + "**"
}

// md escapes measured text for Markdown (CommonMark and GitHub's tables):
// one line, control characters replaced, and every character that could
// start markup or end a table cell backslash-escaped, so that "<script>"
// or "a|b" render as written.
func md(s string) string {
	if s == "" {
		return ""
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case isUnsafeRune(r):
			b.WriteByte('?')
		case strings.ContainsRune("\\`*|<>[]~", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '_' && (i == 0 || i == len(rs)-1 || !isWordRune(rs[i-1]) || !isWordRune(rs[i+1])):
			// Intraword underscores (tcp_keepalive_time) are no emphasis.
			b.WriteString("\\_")
		case i == 0 && strings.ContainsRune("#+-=", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	// "1. text" at the start of a list item would start a nested list.
	j := strings.IndexFunc(out, func(r rune) bool { return r < '0' || r > '9' })
	if j > 0 && j <= 9 && (out[j] == '.' || out[j] == ')') && (j+1 == len(out) || out[j+1] == ' ') {
		out = out[:j] + "\\" + out[j:]
	}
	return out
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// mdTime is the start of the run as people read it.
func mdTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }
