package report

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestWriteTextGolden(t *testing.T) {
	for name, r := range map[string]diagnose.Report{"text.golden": demoReport(), "clean.txt.golden": cleanReport()} {
		var b bytes.Buffer
		if err := WriteText(&b, r, TextOptions{}); err != nil {
			t.Fatal(err)
		}
		golden(t, name, b.Bytes())
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

func TestTextPlainASCIIAndColor(t *testing.T) {
	var plain, color bytes.Buffer
	if err := WriteText(&plain, demoReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WriteText(&color, demoReport(), TextOptions{Color: true}); err != nil {
		t.Fatal(err)
	}
	for i, c := range plain.Bytes() {
		if c >= 0x80 || (c < 0x20 && c != '\n') {
			t.Fatalf("byte %#x at %d: the plain report is not plain ASCII", c, i)
		}
	}
	if !strings.Contains(color.String(), ansiRed+ansiBold+culpritMark+ansiReset) {
		t.Error("the colour report does not paint the culprit's mark red")
	}
	// Colours are applied after alignment: without them, the same text.
	if got := ansi.ReplaceAllString(color.String(), ""); got != plain.String() {
		t.Errorf("colour report without its escapes differs from the plain one:\n%s", got)
	}
}

func TestTextCulpritRow(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, demoReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	var marked []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, culpritMark) {
			marked = append(marked, l)
		}
	}
	if len(marked) != 1 {
		t.Fatalf("%d rows marked %s, want 1: %q", len(marked), culpritMark, marked)
	}
	if f := strings.Fields(marked[0]); len(f) < 3 || f[1] != "3" || f[2] != "198.18.2.2" || !strings.HasSuffix(marked[0], "CULPRIT: idle-reset") {
		t.Errorf("culprit row %q, want hop 3, 198.18.2.2, CULPRIT: idle-reset", marked[0])
	}
	if !strings.HasSuffix(b.String(), "\n2 findings (2 critical); culprit: hop 3 (198.18.2.2) toward 198.18.5.2\n") {
		t.Errorf("summary line missing or wrong:\n%s", b.String())
	}
}

func TestTextHostileStrings(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, hostileReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(b.String(), "\x1b\x07\r") {
		t.Error("control characters of measured strings reached the terminal")
	}
	if !strings.Contains(b.String(), "AS1|?[31mred?[0m") {
		t.Error("the ASN's escape sequence is not shown neutralised")
	}
}

// pathReport has the finding kinds with rate, MTU and a finding about an
// address that is not in the report.
func pathReport() diagnose.Report {
	r := demoReport()
	r.Findings = append(r.Findings,
		diagnose.Finding{Finding: tcpcheck.Finding{Kind: tcpcheck.KindConnectReset, Target: r.Targets[1].Target, Address: mqAddr,
			Hop: 3, HopAddress: routerAddr(3), Origin: probe.OriginMiddlebox, Confidence: "medium",
			Evidence: []string{"2 of 500 connects were reset"}, Advice: "Ask the owner of hop 3.",
			Rate: 0.004, RateCI: []float64{0.0011, 0.0145}}, Phase: "setup", Severity: "critical"},
		diagnose.Finding{Finding: tcpcheck.Finding{Kind: diagnose.KindPMTUBlackhole, Target: r.Targets[1].Target, Address: mqAddr,
			Hop: 4, HopAddress: routerAddr(4), Origin: probe.OriginMiddlebox, Confidence: "high", Evidence: []string{}},
			MTU: 1400, Phase: "transfer", Severity: "critical"},
		diagnose.Finding{Finding: tcpcheck.Finding{Kind: diagnose.KindNotReachable, Target: "https://gone.example", Address: "198.18.9.9",
			Origin: probe.OriginUnknown, Confidence: "high", Evidence: []string{"no address answered"}}, Severity: "critical"},
	)
	r.Targets[1].CulpritHop = 3
	return r
}

func TestRenderersShowEveryFindingField(t *testing.T) {
	r := pathReport()
	var text, mdoc, page bytes.Buffer
	if err := WriteText(&text, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarkdown(&mdoc, r); err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(&page, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"0.40% [0.11%, 1.45%] (95% interval)",
		"1400",
		"between 7.95 s (survived) and 8.45 s (failed)",
		"10 connections at once",
		"not-reachable",
		"198.18.9.9",
		"CULPRIT: connect-reset",
	} {
		// Markdown escapes brackets; drop its backslashes to compare.
		unescaped := strings.ReplaceAll(mdoc.String(), `\`, "")
		for name, out := range map[string]string{"text": text.String(), "markdown": unescaped, "html": page.String()} {
			if !strings.Contains(out, want) {
				t.Errorf("%s report lacks %q", name, want)
			}
		}
	}
	if !strings.Contains(text.String(), "findings about no diagnosed address:") {
		t.Error("text report drops the finding about an address it does not list")
	}
	if !strings.HasSuffix(text.String(), "5 findings (5 critical); culprit: hop 3 (198.18.2.2) toward 198.18.5.2, 198.18.5.3\n") {
		t.Errorf("summary: %q", text.String()[strings.LastIndex(strings.TrimSuffix(text.String(), "\n"), "\n"):])
	}
}

func TestWrap(t *testing.T) {
	for _, c := range []struct {
		text  string
		width int
		want  []string
	}{
		{"", 10, []string{""}},
		{"one two three", 7, []string{"one two", "three"}},
		{"averyveryverylongword x", 5, []string{"averyveryverylongword", "x"}},
		{"a  b\n c", 10, []string{"a b c"}},
	} {
		if got := wrap(c.text, c.width); strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("wrap(%q, %d) = %q, want %q", c.text, c.width, got, c.want)
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"mss 1460→1200":         "mss 1460->1200",
		"T ≈ 8 s, ≥ 2 × faster": "T ~ 8 s, >= 2 x faster",
		"esc\x1b[2Jclear":       "esc?[2Jclear",
		"rtl\u202egnp.exe":      "rtl?gnp.exe",
		"bücher.example":        "bücher.example",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}
