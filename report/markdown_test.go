package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
)

func TestWriteMarkdownGolden(t *testing.T) {
	for name, r := range map[string]diagnose.Report{"report.md.golden": demoReport(), "clean.md.golden": cleanReport()} {
		var b bytes.Buffer
		if err := WriteMarkdown(&b, r); err != nil {
			t.Fatal(err)
		}
		golden(t, name, b.Bytes())
	}
}

// tableCells splits a Markdown table row into cells at unescaped pipes.
func tableCells(row string) []string {
	row = strings.TrimSpace(row)
	var cells []string
	var cur strings.Builder
	escaped := false
	for _, r := range row {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			cur.WriteRune(r)
			escaped = true
		case r == '|':
			cells = append(cells, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	cells = append(cells, cur.String())
	// A row starts and ends with a pipe: drop the empty outer pieces.
	if len(cells) >= 2 && strings.TrimSpace(cells[0]) == "" && strings.TrimSpace(cells[len(cells)-1]) == "" {
		cells = cells[1 : len(cells)-1]
	}
	return cells
}

// markdownTables returns each table (consecutive lines starting with |).
func markdownTables(doc string) [][]string {
	var tables [][]string
	var cur []string
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "|") {
			cur = append(cur, l)
			continue
		}
		if cur != nil {
			tables = append(tables, cur)
			cur = nil
		}
	}
	if cur != nil {
		tables = append(tables, cur)
	}
	return tables
}

func TestMarkdownTablesConsistent(t *testing.T) {
	for name, r := range map[string]diagnose.Report{"demo": demoReport(), "clean": cleanReport(), "hostile": hostileReport()} {
		var b bytes.Buffer
		if err := WriteMarkdown(&b, r); err != nil {
			t.Fatal(err)
		}
		tables := markdownTables(b.String())
		if len(tables) == 0 {
			t.Fatalf("%s: no tables", name)
		}
		for i, tb := range tables {
			if len(tb) < 3 {
				t.Errorf("%s table %d: %d lines, want header, delimiter and rows", name, i, len(tb))
				continue
			}
			want := len(tableCells(tb[0]))
			for _, d := range tableCells(tb[1]) {
				if strings.Trim(strings.TrimSpace(d), ":-") != "" || !strings.Contains(d, "---") {
					t.Errorf("%s table %d: bad delimiter row %q", name, i, tb[1])
				}
			}
			for _, row := range tb[1:] {
				if got := len(tableCells(row)); got != want {
					t.Errorf("%s table %d: row %q has %d cells, header %d", name, i, row, got, want)
				}
			}
		}
	}
}

func TestMarkdownEscapesHostileStrings(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, hostileReport()); err != nil {
		t.Fatal(err)
	}
	doc := b.String()
	if strings.Contains(doc, "\x1b") {
		t.Error("an escape character reached the Markdown")
	}
	// Every < of measured text is escaped, so no raw HTML tag remains.
	for i := 0; i < len(doc); i++ {
		if doc[i] == '<' && (i == 0 || doc[i-1] != '\\') {
			t.Errorf("unescaped < at %q", doc[max(0, i-20):min(len(doc), i+20)])
		}
	}
	for _, want := range []string{
		`\<script\>alert("x")\</script\>.example`, // hostname, in the hop table
		`r3-\<b\>bold\</b\>\|pipe`,                // the culprit's hostname, bold row
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("Markdown lacks the escaped %q", want)
		}
	}
}

func TestMarkdownEscape(t *testing.T) {
	for in, want := range map[string]string{
		"198.18.2.2":                  "198.18.2.2",
		"net.ipv4.tcp_keepalive_time": "net.ipv4.tcp_keepalive_time",
		"_private_":                   `\_private\_`,
		"a|b":                         `a\|b`,
		"*bold* `code` [link](x)":     "\\*bold\\* \\`code\\` \\[link\\](x)",
		"# heading":                   `\# heading`,
		"- item":                      `\- item`,
		"1. first":                    `1\. first`,
		"10 connections":              "10 connections",
		"line\nbreak":                 "line break",
		"bell\x07":                    "bell?",
		"<tag> & ~~strike~~":          `\<tag\> & \~\~strike\~\~`,
	} {
		if got := md(in); got != want {
			t.Errorf("md(%q) = %q, want %q", in, got, want)
		}
	}
}
