package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/trace"
)

//go:embed html.tmpl
var htmlSource string

// htmlTemplate is parsed once, on first use rather than at process
// start (parsing costs about 0.5 ms, which every command, a single trace
// included, would otherwise pay); html/template escapes every measured
// string for its context (text, attribute).
var htmlTemplate = sync.OnceValues(func() (*template.Template, error) {
	return template.New("report").Parse(htmlSource)
})

// WriteHTML writes r as one self-contained HTML file: inline CSS and SVG,
// no scripts, fonts, images or links to anything outside the file (a
// Content-Security-Policy forbids them too). Per address: an SVG path
// diagram from the client through every hop to the server, the culprit
// hop in red (class "hop culprit", data-ttl), silent hops dashed; the hop
// table; the findings; and, when the idle test ran, an SVG chart of the
// idle ladder.
func WriteHTML(w io.Writer, r diagnose.Report) error {
	page := newHTMLPage(sanitize(r, printable))
	tmpl, err := htmlTemplate()
	if err != nil {
		return fmt.Errorf("parse HTML report template: %w", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, page); err != nil {
		return fmt.Errorf("render HTML report: %w", err)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

type htmlPage struct {
	Title      string
	Summary    string
	Bad        bool
	Meta       []keyValue
	Warnings   []string
	Incomplete bool
	Targets    []htmlTarget
	Unmatched  []htmlFinding
	How        string
}

type keyValue struct{ Key, Value string }

type htmlTarget struct {
	ID        string
	Heading   string
	Error     string
	Reach     []string
	Diagram   *pathDiagram
	Table     hopTableView
	Facts     []string
	InFlow    []inFlowRow
	InFlowHop int
	Findings  []htmlFinding
	Ladder    *ladderChart
}

type htmlFinding struct {
	ID       string
	N        int
	Severity string
	Title    string
	Fields   []keyValue
	Evidence []string
	Advice   string
}

func newHTMLPage(r diagnose.Report) htmlPage {
	v := newReportView(r)
	p := htmlPage{
		Title:      "hopcheck: " + mdTitle(r, v),
		Summary:    summary(r) + culpritSummary(v),
		Bad:        len(r.Findings) > 0,
		Incomplete: r.Incomplete,
		Warnings:   r.Warnings,
		How:        howMeasured(r),
	}
	p.Meta = []keyValue{
		{"Measured", fmt.Sprintf("%s, for %s", mdTime(r.StartedAt), secs(r.DurationS))},
		{"Profile", orUnknown(r.Profile)},
		{"Evidence", evidenceLine(r.Privilege)},
		{"Tool", orUnknown(r.Tool)},
	}
	for _, tv := range v.Targets {
		p.Targets = append(p.Targets, newHTMLTarget(tv))
	}
	for _, f := range v.Unmatched {
		p.Unmatched = append(p.Unmatched, newHTMLFinding(f))
	}
	return p
}

func newHTMLTarget(tv targetView) htmlTarget {
	t := tv.T
	h := htmlTarget{
		ID:      fmt.Sprintf("target-%d", tv.Index),
		Heading: fmt.Sprintf("%s: %s port %d", t.Target, t.Address, t.Port),
		Error:   t.Error,
		Table:   newHopTableView(tv),
	}
	if t.App != "" {
		h.Heading += " (" + t.App + ")"
	}
	for i, tr := range tv.Path.Traces {
		if tr.Reached {
			h.Reach = append(h.Reach, fmt.Sprintf("%s reached the destination at hop %d", tv.Path.Labels[i], tr.ReachedTTL))
		} else {
			h.Reach = append(h.Reach, tv.Path.Labels[i]+" did not reach the destination")
		}
	}
	if len(tv.Path.Traces) > 0 {
		d := newPathDiagram(tv)
		h.Diagram = &d
	}
	if s := serverLine(t); s != "" {
		h.Facts = append(h.Facts, s)
	}
	for _, s := range testSummaries(t) {
		h.Facts = append(h.Facts, "test "+s)
	}
	h.Facts = append(h.Facts, localisationLines(t.Localisation)...)
	if loc := t.Localisation; loc != nil && loc.InFlow != nil {
		h.InFlow, h.InFlowHop = inFlowRows(loc.InFlow), loc.InFlow.Hop
	}
	for _, f := range tv.Findings {
		h.Findings = append(h.Findings, newHTMLFinding(f))
	}
	if tv.Idle != nil {
		c := newLadderChart(fmt.Sprintf("ladder-%d", tv.Index), *tv.Idle)
		h.Ladder = &c
	}
	return h
}

func newHTMLFinding(f numberedFinding) htmlFinding {
	h := htmlFinding{
		ID:       fmt.Sprintf("finding-%d", f.N),
		N:        f.N,
		Severity: severityName(f.Severity),
		Title:    headline(f.Finding),
		Evidence: f.Evidence,
		Advice:   f.Advice,
	}
	add := func(k, v string) {
		if v != "" {
			h.Fields = append(h.Fields, keyValue{k, v})
		}
	}
	add("Target", f.targetLine())
	add("Origin", where(f.Finding))
	add("Confidence", confidenceText(f.Finding))
	add("Phase", f.Phase)
	add("Idle", idleLine(f.Finding))
	add("Failure rate", rateLine(f.Finding))
	if f.Limit > 0 {
		add("Limit", plural(f.Limit, "connection at once", "connections at once"))
	}
	if f.MTU > 0 {
		add("Path MTU", fmt.Sprint(f.MTU))
	}
	return h
}

// hopTableView is the HTML hop table: every protocol side by side.
type hopTableView struct {
	Labels []string // secondary protocols
	First  string   // the primary protocol
	Rows   []hopTableRow
}

type hopTableRow struct {
	TTL      int
	Class    string // "at-fault", "silent", ""
	Address  string
	Hostname string
	ASN      string
	Loss     string
	Avg      string
	Best     string
	Worst    string
	Others   []hopCompact
	Note     string
}

type hopCompact struct{ Address, Loss, Avg string }

func newHopTableView(tv targetView) hopTableView {
	p := tv.Path
	var v hopTableView
	if len(p.Labels) == 0 {
		return v
	}
	v.First, v.Labels = p.Labels[0], p.Labels[1:]
	dest := p.ServerTTL()
	for _, row := range p.Rows {
		r := hopTableRow{TTL: row.TTL}
		h := row.Hops[0]
		if h != nil {
			r.Loss = fmt.Sprintf("%.1f%%", h.LossPct)
			r.Avg, r.Best, r.Worst = "-", "-", "-"
			if h.Received > 0 {
				r.Avg, r.Best, r.Worst = ms(h.RTTms.Avg), ms(h.RTTms.Min), ms(h.RTTms.Max)
			}
			if resp := firstResponder(h); resp != nil {
				r.Address, r.Hostname, r.ASN = resp.Address, resp.Hostname, resp.ASN
				if n := len(h.Responders) - 1; n > 0 {
					r.Address += fmt.Sprintf(" (+%d ECMP)", n)
				}
			} else if silent(h) {
				r.Address, r.Class = "*", "silent"
			} else {
				r.Address = "?"
			}
		}
		for _, o := range row.Hops[1:] {
			r.Others = append(r.Others, compactHop(o))
		}
		var notes []string
		if tv.Culprit > 0 && row.TTL == tv.Culprit {
			r.Class = "at-fault"
			notes = append(notes, culpritNote(tv))
		}
		if row.TTL == dest && len(tv.ServerKinds) > 0 {
			notes = append(notes, "SERVER: "+strings.Join(tv.ServerKinds, ", "))
		}
		r.Note = strings.Join(append(notes, hopNotes(p, row)...), "; ")
		v.Rows = append(v.Rows, r)
	}
	return v
}

func compactHop(h *trace.Hop) hopCompact {
	if h == nil {
		return hopCompact{}
	}
	c := hopCompact{Loss: fmt.Sprintf("%.1f%%", h.LossPct), Avg: "-", Address: "*"}
	if h.Received > 0 {
		c.Avg = ms(h.RTTms.Avg)
		c.Address = "?"
	}
	if r := firstResponder(h); r != nil {
		c.Address = r.Address
		if n := len(h.Responders) - 1; n > 0 {
			c.Address += fmt.Sprintf(" +%d", n)
		}
	}
	return c
}

// Path diagram geometry, in SVG user units.
const (
	nodeW       = 138
	nodeH       = 80
	nodeGapX    = 26
	labelSpace  = 28 // above a row: the culprit's label
	rowGap      = 34
	leftMargin  = 26
	rightMargin = 16
	nodesPerRow = 7 // at most; rows are balanced
	lineHeight  = 16
	maxLabel    = 18 // characters of an address or name in a box
)

// pathDiagram is the SVG of one path: client, hops, server.
type pathDiagram struct {
	ID            string
	Width, Height int
	Nodes         []diagramNode
	Links         []diagramLink
	Desc          string
}

// diagramNode is one box. Class is "endpoint client", "endpoint server"
// (plus "flagged" when a finding blames the server), or "hop" plus
// "silent" / "culprit".
type diagramNode struct {
	ID      string
	Class   string
	TTL     int // 0: client
	X, Y    int
	W, H    int
	Lines   []svgText
	Label   *svgText // above the box: CULPRIT / SERVER
	Tooltip string
}

type svgText struct {
	X, Y  int
	Text  string
	Class string
}

// diagramLink is a connector: a polyline and its arrowhead polygon.
type diagramLink struct {
	Points string
	Head   string
	Class  string
}

func newPathDiagram(tv targetView) pathDiagram {
	p := tv.Path
	prim := p.Primary()
	dest := p.ServerTTL()
	d := pathDiagram{ID: fmt.Sprintf("path-%d", tv.Index)}

	d.Nodes = append(d.Nodes, diagramNode{ID: d.ID + "-client", Class: "endpoint client",
		Lines:   []svgText{line("client", "title"), line("this host", ""), line("", ""), line("privilege "+orUnknown(prim.Privilege), "small")},
		Tooltip: "the host hopcheck ran on"})
	for _, row := range p.Rows {
		if dest > 0 && row.TTL >= dest {
			break
		}
		d.Nodes = append(d.Nodes, hopNode(tv, row, d.ID))
	}
	d.Nodes = append(d.Nodes, serverNode(tv, d.ID))

	// Lay the boxes out in balanced rows, left to right.
	rows := (len(d.Nodes) + nodesPerRow - 1) / nodesPerRow
	cols := (len(d.Nodes) + rows - 1) / rows
	d.Width = leftMargin + cols*nodeW + (cols-1)*nodeGapX + rightMargin
	d.Height = rows*(labelSpace+nodeH) + (rows-1)*rowGap + 12
	for i := range d.Nodes {
		n := &d.Nodes[i]
		row, col := i/cols, i%cols
		n.X = leftMargin + col*(nodeW+nodeGapX)
		n.Y = row*(labelSpace+nodeH+rowGap) + labelSpace
		n.W, n.H = nodeW, nodeH
		for j := range n.Lines {
			n.Lines[j].X = n.X + 10
			n.Lines[j].Y = n.Y + 20 + j*lineHeight
		}
		if n.Label != nil {
			n.Label.X, n.Label.Y = n.X+nodeW/2, n.Y-9
			// Bold 12px text is about 7.5 units a character: widen the
			// drawing so a label over the last box is not cut off.
			half := utf8.RuneCountInString(n.Label.Text) * 15 / 4
			d.Width = max(d.Width, n.Label.X+half+4)
		}
	}
	for i := 0; i+1 < len(d.Nodes); i++ {
		a, b := d.Nodes[i], d.Nodes[i+1]
		class := "link"
		if strings.Contains(b.Class, "unreached") {
			class += " broken"
		}
		if a.Y == b.Y {
			y := a.Y + nodeH/2
			d.Links = append(d.Links, diagramLink{
				Points: fmt.Sprintf("%d,%d %d,%d", a.X+nodeW, y, b.X-2, y),
				Head:   arrowRight(b.X, y), Class: class})
			continue
		}
		// Wrap to the next row: down, back left, in from the left side.
		x, mid, y := a.X+nodeW/2, a.Y+nodeH+rowGap/2, b.Y+nodeH/2
		d.Links = append(d.Links, diagramLink{
			Points: fmt.Sprintf("%d,%d %d,%d %d,%d %d,%d %d,%d", x, a.Y+nodeH, x, mid, leftMargin/2, mid, leftMargin/2, y, b.X-2, y),
			Head:   arrowRight(b.X, y), Class: class})
	}
	d.Desc = diagramDesc(tv)
	return d
}

// line is one line of text in a box; positions are set by the layout.
func line(text, class string) svgText { return svgText{Text: text, Class: class} }

func arrowRight(x, y int) string {
	return fmt.Sprintf("%d,%d %d,%d %d,%d", x, y, x-8, y-5, x-8, y+5)
}

func hopNode(tv targetView, row pathRow, prefix string) diagramNode {
	h := row.Hops[0]
	n := diagramNode{ID: fmt.Sprintf("%s-hop-%d", prefix, row.TTL), Class: "hop", TTL: row.TTL}
	lines := []svgText{line(fmt.Sprintf("hop %d", row.TTL), "title")}
	switch r := firstResponder(h); {
	case r != nil:
		addr := r.Address
		if k := len(h.Responders) - 1; k > 0 {
			addr = truncate(addr, maxLabel-4) + fmt.Sprintf(" +%d", k)
		}
		second := r.Hostname
		if second == "" {
			second = r.ASN
		}
		lines = append(lines, line(truncate(addr, maxLabel), "addr"), line(truncate(second, maxLabel), "small"))
		lines = append(lines, line(fmt.Sprintf("%s ms · %.1f%% loss", ms(h.RTTms.Avg), h.LossPct), "metric"))
	case h == nil:
		// The primary trace stopped short of this TTL: show what another
		// protocol saw there.
		o, label := otherHop(tv.Path, row)
		if r := firstResponder(o); r != nil {
			lines = append(lines, line(truncate(r.Address, maxLabel), "addr"), line("seen by "+label, "small"),
				line(fmt.Sprintf("%s ms · %.1f%% loss", ms(o.RTTms.Avg), o.LossPct), "metric"))
			break
		}
		n.Class += " silent"
		lines = append(lines, line("*", "addr"), line("no "+tv.Path.Labels[0]+" probe", "small"), line("", ""))
	case h.Received > 0:
		lines = append(lines, line("?", "addr"), line("no address", "small"),
			line(fmt.Sprintf("%s ms · %.1f%% loss", ms(h.RTTms.Avg), h.LossPct), "metric"))
	default:
		n.Class += " silent"
		lines = append(lines, line("*", "addr"), line("no reply", "small"), line(fmt.Sprintf("%.0f%% loss", h.LossPct), "metric"))
	}
	if tv.Culprit > 0 && row.TTL == tv.Culprit {
		n.Class += " culprit"
		n.Label = &svgText{Text: culpritNote(tv), Class: "label culprit-label"}
	}
	n.Lines = lines
	n.Tooltip = hopTooltip(tv.Path, row)
	return n
}

// otherHop is the first hop of another protocol at this row that got an
// answer, with that protocol's label.
func otherHop(p pathView, row pathRow) (*trace.Hop, string) {
	for i, h := range row.Hops[1:] {
		if firstResponder(h) != nil {
			return h, p.Labels[i+1]
		}
	}
	return nil, ""
}

// serverNode is the destination: the primary trace's last row when it was
// reached, a dashed box otherwise.
func serverNode(tv targetView, prefix string) diagramNode {
	p := tv.Path
	t := tv.T
	dest := p.ServerTTL()
	n := diagramNode{ID: prefix + "-server", Class: "endpoint server"}
	var row *pathRow
	for i := range p.Rows {
		if p.Rows[i].TTL == dest {
			row = &p.Rows[i]
		}
	}
	title := "server"
	if dest > 0 {
		title = fmt.Sprintf("server · hop %d", dest)
		n.TTL = dest
	}
	lines := []svgText{line(title, "title"), line(truncate(fmt.Sprintf("%s:%d", t.Address, t.Port), maxLabel), "addr")}
	var h *trace.Hop
	if row != nil && p.DestinationTTL() == dest {
		h = row.Hops[0]
	}
	switch r := firstResponder(h); {
	case r != nil:
		second := r.Hostname
		if second == "" {
			second = t.Host
		}
		if second == t.Address {
			second = ""
		}
		lines = append(lines, line(truncate(second, maxLabel), "small"), line(fmt.Sprintf("%s ms · %.1f%% loss", ms(h.RTTms.Avg), h.LossPct), "metric"))
		n.Tooltip = hopTooltip(p, *row)
	default:
		n.Class += " unreached"
		lines = append(lines, line(truncate(t.Host, maxLabel), "small"), line(p.Labels[0]+" unreached", "metric"))
		n.Tooltip = "the " + p.Labels[0] + " trace did not reach the server"
		if row != nil {
			n.Tooltip += "\n" + hopTooltip(p, *row)
		}
	}
	if len(tv.ServerKinds) > 0 {
		n.Class += " flagged"
		n.Label = &svgText{Text: "SERVER: " + strings.Join(tv.ServerKinds, ", "), Class: "label server-label"}
	}
	n.Lines = lines
	return n
}

// hopTooltip lists every protocol's view of a hop and its notes.
func hopTooltip(p pathView, row pathRow) string {
	var lines []string
	for i, h := range row.Hops {
		if h == nil {
			continue
		}
		s := p.Labels[i] + ": "
		if r := firstResponder(h); r != nil {
			s += r.Address
			if r.Hostname != "" {
				s += " (" + r.Hostname + ")"
			}
			if r.ASN != "" {
				s += " [" + r.ASN + "]"
			}
			for _, extra := range h.Responders[1:] {
				s += ", " + extra.Address
			}
			s += fmt.Sprintf(", loss %.1f%%, avg %s ms, best %s, worst %s", h.LossPct, ms(h.RTTms.Avg), ms(h.RTTms.Min), ms(h.RTTms.Max))
		} else {
			s += fmt.Sprintf("no reply (%d probes)", h.Sent)
		}
		lines = append(lines, s)
	}
	lines = append(lines, hopNotes(p, row)...)
	return fmt.Sprintf("hop %d\n", row.TTL) + strings.Join(lines, "\n")
}

// diagramDesc is the accessible description of the diagram.
func diagramDesc(tv targetView) string {
	s := fmt.Sprintf("Path from this host to %s through %d hops", tv.T.Address, max(len(tv.Path.Rows)-1, 0))
	if tv.Culprit > 0 {
		s += fmt.Sprintf("; hop %d is the culprit (%s)", tv.Culprit, strings.Join(tv.CulpritKinds, ", "))
	}
	return s + "."
}

// truncate shortens s to n runes with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// Idle ladder chart geometry.
const (
	ladderW      = 760
	ladderH      = 250
	plotLeft     = 92
	plotRight    = 730
	laneSurvived = 92
	laneFailed   = 152
	axisY        = 196
	pointR       = 6
)

// ladderChart is the SVG of the idle ladder: idle seconds on x, one lane
// for reuses that survived, one for those that failed.
type ladderChart struct {
	ID            string
	Width, Height int
	PlotLeft      int
	PlotRight     int
	AxisY         int
	LaneSurvived  int
	LaneFailed    int
	Ticks         []axisTick
	Band          *ladderBand
	T             *ladderMark
	Max           *ladderMark
	Points        []ladderPoint
	Caption       string
	Desc          string
	// Derived positions of labels and ticks.
	BandHeight, BandLabelY           int
	TickEnd, TickLabelY              int
	AxisMid, AxisTitleY, LaneLabelX  int
	LaneSurvivedText, LaneFailedText int
}

type axisTick struct {
	X     int
	Label string
}

type ladderBand struct {
	X, W   int
	Label  string
	LabelX int
}

type ladderMark struct {
	X     int
	Label string
}

// ladderPoint is one rung; D is its marker's path (circle, cross,
// square or ring by outcome and behaviour).
type ladderPoint struct {
	Class string
	D     string
	IdleS string
	Title string
}

func newLadderChart(id string, v idleView) ladderChart {
	res := v.Result
	c := ladderChart{ID: id, Width: ladderW, Height: ladderH, PlotLeft: plotLeft, PlotRight: plotRight,
		AxisY: axisY, LaneSurvived: laneSurvived, LaneFailed: laneFailed,
		BandHeight: axisY - 40, BandLabelY: 36, TickEnd: axisY + 5, TickLabelY: axisY + 18,
		AxisMid: (plotLeft + plotRight) / 2, AxisTitleY: axisY + 40, LaneLabelX: plotLeft - 12,
		LaneSurvivedText: laneSurvived + 4, LaneFailedText: laneFailed + 4}
	top := res.BracketS[1]
	top = math.Max(top, res.TimeoutS)
	for _, r := range v.Rungs {
		top = math.Max(top, r.IdleS)
	}
	if res.TimeoutS <= 0 {
		top = math.Max(top, res.MaxS)
	}
	xmax, step := niceAxis(top * 1.15)
	x := func(s float64) int {
		return plotLeft + int(math.Round(s/xmax*float64(plotRight-plotLeft)))
	}
	for s := 0.0; s <= xmax+step/1000; s += step {
		c.Ticks = append(c.Ticks, axisTick{X: x(s), Label: num(s, 2)})
	}
	lo, hi := res.BracketS[0], res.BracketS[1]
	if hi > 0 {
		c.Band = &ladderBand{X: x(lo), W: max(x(hi)-x(lo), 2),
			Label: fmt.Sprintf("bracket %s to %s", num(lo, 2), secs(hi))}
		c.Band.LabelX = c.Band.X + c.Band.W/2
	}
	if res.TimeoutS > 0 && res.Cause == "" {
		c.T = &ladderMark{X: x(res.TimeoutS), Label: "T ≈ " + secs(res.TimeoutS)}
	}
	if res.MaxS > 0 && res.MaxS <= xmax {
		c.Max = &ladderMark{X: x(res.MaxS), Label: "max " + secs(res.MaxS)}
	}
	// Stack points that would overlap within a lane.
	lastX := map[bool][]int{}
	for _, r := range v.Rungs {
		px := x(r.IdleS)
		y := laneFailed
		if r.Survived {
			y = laneSurvived
		}
		stack := 0
		for _, prev := range lastX[r.Survived] {
			if abs(prev-px) < 2*pointR+2 {
				stack++
			}
		}
		lastX[r.Survived] = append(lastX[r.Survived], px)
		y -= stack * (2*pointR + 3)
		p := ladderPoint{IdleS: num(r.IdleS, 3)}
		switch {
		case r.Survived:
			p.Class = "rung survived"
			p.D = circlePath(px, y, pointR)
			p.Title = fmt.Sprintf("reused after %s idle: worked", secs(r.IdleS))
			if r.Inferred {
				p.Class += " longest"
				p.Title = fmt.Sprintf("longest idle that still worked: %s (the bracket's lower end)", secs(r.IdleS))
			}
		case r.Behaviour == "drop":
			p.Class = "rung failed drop"
			p.D = ringPath(px, y, pointR)
			p.Title = fmt.Sprintf("after %s idle: dropped (no answer)", secs(r.IdleS))
		case r.Behaviour == "close":
			p.Class = "rung failed close"
			p.D = squarePath(px, y, pointR)
			p.Title = fmt.Sprintf("after %s idle: closed (FIN)", secs(r.IdleS))
		default:
			p.Class = "rung failed reset"
			p.D = crossPath(px, y, pointR)
			p.Title = fmt.Sprintf("after %s idle: reset", secs(r.IdleS))
		}
		c.Points = append(c.Points, p)
	}
	switch {
	case res.Cause != "":
		c.Caption = fmt.Sprintf("Not an idle timeout (%s): %s", res.Cause, res.Note)
	case res.TimeoutS > 0:
		c.Caption = fmt.Sprintf("Idle timeout T ≈ %s: idle connections %s between %s and %s.",
			secs(res.TimeoutS), behaviourVerb(res.Behaviour), secs(lo), secs(hi))
		switch res.Verified {
		case "survived":
			c.Caption += " A connection with TCP keepalive below T survived past T: keepalives fix it."
		case "failed":
			c.Caption += " A connection with TCP keepalive below T did not survive: the box ignores keepalives."
		}
	default:
		c.Caption = fmt.Sprintf("No idle timeout up to %s.", secs(res.MaxS))
	}
	if v.Survivals > 0 {
		c.Caption += fmt.Sprintf(" %s after idling (their idle times are not recorded one by one; the longest is the bracket's lower end).",
			plural(v.Survivals, "reuse worked", "reuses worked"))
	}
	c.Desc = fmt.Sprintf("Idle ladder chart: %d rungs, %s", len(v.Rungs), c.Caption)
	return c
}

func behaviourVerb(b string) string {
	switch b {
	case "drop":
		return "are dropped silently"
	case "close":
		return "are closed"
	}
	return "are reset"
}

// niceAxis is the axis end at or above top: a multiple of the smallest
// 1-2-5 step that needs at most 8 intervals.
func niceAxis(top float64) (end, step float64) {
	if top <= 0 {
		return 10, 2
	}
	ticks := func(step float64) float64 { return math.Ceil(top/step - 1e-9) }
	for _, base := range []float64{0.1, 1, 10, 100, 1000, 10000} {
		for _, m := range []float64{1, 2, 5} {
			step = base * m
			if ticks(step) <= 8 {
				break
			}
		}
		if ticks(step) <= 8 {
			break
		}
	}
	return math.Round(ticks(step)*step*1000) / 1000, step
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func circlePath(x, y, r int) string {
	return fmt.Sprintf("M%d,%d a%d,%d 0 1,0 %d,0 a%d,%d 0 1,0 %d,0 Z", x-r, y, r, r, 2*r, r, r, -2*r)
}

// ringPath is a circle drawn as an outline only (by CSS class).
func ringPath(x, y, r int) string { return circlePath(x, y, r) }

func squarePath(x, y, r int) string {
	return fmt.Sprintf("M%d,%d h%d v%d h%d Z", x-r, y-r, 2*r, 2*r, -2*r)
}

func crossPath(x, y, r int) string {
	return fmt.Sprintf("M%d,%d L%d,%d M%d,%d L%d,%d", x-r, y-r, x+r, y+r, x-r, y+r, x+r, y-r)
}
