package report

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

func TestWriteHTMLGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, demoReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.html.golden", b.Bytes())
}

func renderHTML(t *testing.T, r diagnose.Report) (string, *html.Node) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("the HTML does not parse: %v", err)
	}
	return b.String(), doc
}

// elements lists every element node for which keep is true.
func elements(n *html.Node, keep func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && keep(d) {
			out = append(out, d)
		}
	}
	return out
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, classes ...string) bool {
	v, _ := attr(n, "class")
	have := strings.Fields(v)
	for _, c := range classes {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

func textOf(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func byClass(classes ...string) func(*html.Node) bool {
	return func(n *html.Node) bool { return hasClass(n, classes...) }
}

func TestHTMLCulpritHop(t *testing.T) {
	_, doc := renderHTML(t, demoReport())
	culprits := elements(doc, byClass("hop", "culprit"))
	if len(culprits) != 1 {
		t.Fatalf("%d elements with class hop culprit, want exactly 1", len(culprits))
	}
	c := culprits[0]
	if ttl, _ := attr(c, "data-ttl"); ttl != "3" {
		t.Errorf("culprit data-ttl=%q, want 3", ttl)
	}
	if c.Data != "g" || c.Parent == nil || !hasClass(c.Parent, "path-diagram") {
		t.Errorf("culprit is <%s> in %v, want a <g> of the path diagram", c.Data, c.Parent)
	}
	for _, want := range []string{"hop 3", "198.18.2.2", "CULPRIT: idle-reset"} {
		if !strings.Contains(textOf(c), want) {
			t.Errorf("culprit element text %q lacks %q", textOf(c), want)
		}
	}
	if n := len(elements(doc, byClass("path-diagram"))); n != 2 {
		t.Errorf("%d path diagrams, want one per target (2)", n)
	}
	// Every hop box of both paths: routers 1-5 of each (the server is an
	// endpoint), silent router 2 of the second path dashed.
	hops := elements(doc, byClass("hop"))
	if len(hops) != 10 {
		t.Errorf("%d hop elements, want 10", len(hops))
	}
	silentHops := elements(doc, byClass("hop", "silent"))
	if len(silentHops) != 1 {
		t.Fatalf("%d silent hops, want 1", len(silentHops))
	}
	if ttl, _ := attr(silentHops[0], "data-ttl"); ttl != "2" {
		t.Errorf("silent hop data-ttl=%q, want 2", ttl)
	}
	servers := elements(doc, byClass("endpoint", "server", "flagged"))
	if len(servers) != 1 || !strings.Contains(textOf(servers[0]), "SERVER: concurrency-limit") {
		t.Errorf("want one flagged server naming concurrency-limit, got %d", len(servers))
	}
}

func TestHTMLIdleLadder(t *testing.T) {
	_, doc := renderHTML(t, demoReport())
	charts := elements(doc, byClass("ladder-chart"))
	if len(charts) != 1 {
		t.Fatalf("%d idle ladder charts, want 1 (only the first target ran the idle test)", len(charts))
	}
	var failed []string
	for _, p := range elements(charts[0], byClass("rung", "failed", "reset")) {
		v, _ := attr(p, "data-idle-s")
		failed = append(failed, v)
	}
	if want := []string{"8.45", "8.9", "10.13"}; !slices.Equal(failed, want) {
		t.Errorf("failed rungs %v, want %v", failed, want)
	}
	longest := elements(charts[0], byClass("rung", "survived", "longest"))
	if len(longest) != 1 {
		t.Fatalf("%d longest-survived marks, want 1", len(longest))
	}
	if v, _ := attr(longest[0], "data-idle-s"); v != "7.95" {
		t.Errorf("longest survived at %s, want the bracket's lower end 7.95", v)
	}
	text := textOf(charts[0])
	for _, want := range []string{"T ≈ 8.2 s", "bracket 7.95 to 8.45 s"} {
		if !strings.Contains(text, want) {
			t.Errorf("ladder chart lacks %q", want)
		}
	}
}

func TestHTMLCleanReport(t *testing.T) {
	page, doc := renderHTML(t, cleanReport())
	if n := len(elements(doc, byClass("culprit"))); n != 0 {
		t.Errorf("%d culprit elements in a report without findings", n)
	}
	if n := len(elements(doc, byClass("ladder-chart"))); n != 0 {
		t.Errorf("%d ladder charts without an idle test", n)
	}
	if !strings.Contains(page, "No findings for this address.") || !strings.Contains(page, `class="verdict good"`) {
		t.Error("a clean report says so")
	}
}

// hostileReport carries markup and control characters in every string a
// remote party can choose: reverse DNS names, ASNs, target names, errors
// and (through the server's responses) evidence.
func hostileReport() diagnose.Report {
	r := demoReport()
	mq := &r.Targets[1]
	mq.Target = `amqps://mq.example"><svg onload=alert(1)>:5671`
	mq.Host = `mq.example</title><script>alert(2)</script>`
	for i := range mq.Traces {
		h := &mq.Traces[i].Hops[0].Responders[0]
		h.Hostname = `<script>alert("x")</script>.example`
		h.ASN = "AS1|\x1b[31mred\x1b[0m"
	}
	mq.Error = `</style><img src=http://evil.example/x.png onerror=alert(3)>`
	api := &r.Targets[0]
	api.Traces[2].Hops[2].Responders[0].Hostname = "r3-<b>bold</b>|pipe"
	r.Findings[0].Evidence = append(r.Findings[0].Evidence, `server said <a href="http://evil.example">click</a> & more`)
	r.Findings = append(r.Findings, diagnose.Finding{
		Finding: tcpcheck.Finding{Kind: "data-stall", Target: mq.Target, Address: mq.Address, Origin: probe.OriginUnknown,
			Confidence: "low", Evidence: []string{"<iframe src=//evil.example>"}, Advice: "javascript:alert(4)"},
		Severity: "warning",
	})
	r.Warnings = []string{"<script>alert(5)</script>"}
	return r
}

func TestHTMLEscapesHostileStrings(t *testing.T) {
	page, doc := renderHTML(t, hostileReport())
	for _, tag := range []string{"script", "img", "iframe", "a", "b"} {
		if n := elements(doc, func(n *html.Node) bool { return n.Data == tag }); len(n) > 0 {
			t.Errorf("hostile input produced %d <%s> element(s)", len(n), tag)
		}
	}
	for _, n := range elements(doc, func(*html.Node) bool { return true }) {
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s> has event handler attribute %s", n.Data, a.Key)
			}
		}
	}
	// The strings are shown as written, as text.
	all := textOf(doc)
	for _, want := range []string{`<script>alert("x")</script>.example`, `<a href="http://evil.example">click</a> & more`} {
		if !strings.Contains(all, want) {
			t.Errorf("hostile string %q not shown as text", want)
		}
	}
	if strings.Contains(page, "\x1b") {
		t.Error("an escape character reached the HTML")
	}
	if n := len(elements(doc, byClass("hop", "culprit"))); n != 1 {
		t.Errorf("%d culprit hops, want 1", n)
	}
}

// externalRef matches anything a browser would fetch: URLs in src/href
// and friends, CSS url() and @import.
var externalRef = regexp.MustCompile(`(?i)(url\s*\(|@import|\bsrc\s*=|\bhref\s*=|xlink:href|\bposter\s*=|\baction\s*=)`)

func TestHTMLSelfContained(t *testing.T) {
	for name, r := range map[string]diagnose.Report{"demo": demoReport(), "hostile": hostileReport()} {
		page, doc := renderHTML(t, r)
		for _, n := range elements(doc, func(*html.Node) bool { return true }) {
			switch n.Data {
			case "script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignObject", "base":
				t.Errorf("%s: <%s> element in a self-contained report", name, n.Data)
			}
			for _, a := range n.Attr {
				switch strings.ToLower(a.Key) {
				case "src", "href", "xlink:href", "srcset", "poster", "action", "formaction", "data":
					t.Errorf("%s: <%s %s=%q>: no references allowed", name, n.Data, a.Key, a.Val)
				}
			}
		}
		// Outside the escaped text, no fetchable reference either (the
		// hostile strings are text, with < and " escaped).
		markup := regexp.MustCompile(`>[^<]*<`).ReplaceAllString(page, "><")
		if m := externalRef.FindString(markup); m != "" {
			t.Errorf("%s: markup references something outside the file: %q", name, m)
		}
		if !strings.Contains(page, `http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"`) {
			t.Errorf("%s: no CSP forbidding external loads", name)
		}
	}
}

func TestHTMLUnreachedServerAndLongPath(t *testing.T) {
	r := demoReport()
	api := &r.Targets[0]
	var hops []trace.Hop
	for ttl := 1; ttl <= 20; ttl++ {
		if ttl%4 == 0 {
			hops = append(hops, silentHop(ttl))
			continue
		}
		hops = append(hops, hop(ttl, "203.0.113."+strconvItoa(ttl), "", float64(ttl), "time-exceeded"))
	}
	api.Traces = []trace.Trace{{Target: trace.Target{Host: apiAddr, Address: apiAddr, Port: 443, Protocol: "tcp"},
		Privilege: "raw", Hops: hops}}
	api.CulpritHop = 17
	r.Findings[0].Hop, r.Findings[0].HopAddress = 17, "203.0.113.17"
	_, doc := renderHTML(t, r)
	diagram := elements(doc, byClass("path-diagram"))[0]
	boxes := elements(diagram, func(n *html.Node) bool { return n.Data == "g" && (hasClass(n, "hop") || hasClass(n, "endpoint")) })
	if len(boxes) != 22 {
		t.Errorf("%d boxes, want client + 20 hops + server", len(boxes))
	}
	width, _ := attr(diagram, "width")
	for _, rect := range elements(diagram, func(n *html.Node) bool { return n.Data == "rect" }) {
		x, _ := attr(rect, "x")
		if atoi(x)+nodeW > atoi(width) {
			t.Errorf("box at x=%s overflows the drawing (width %s)", x, width)
		}
	}
	if s := elements(diagram, byClass("endpoint", "server", "unreached")); len(s) != 1 {
		t.Errorf("want the unreached server drawn dashed (class unreached), got %d", len(s))
	}
	c := elements(diagram, byClass("hop", "culprit"))
	if len(c) != 1 {
		t.Fatalf("%d culprits, want 1", len(c))
	}
	if ttl, _ := attr(c[0], "data-ttl"); ttl != "17" {
		t.Errorf("culprit data-ttl %s, want 17", ttl)
	}
}
