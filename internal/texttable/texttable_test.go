package texttable

import (
	"strings"
	"testing"
)

func TestRenderAlignsAndPlacesFreeLines(t *testing.T) {
	tb := &Table{Cols: []Column{{Title: "HOP", Right: true}, {Title: "ADDRESS"}, {Title: "NOTE"}}}
	tb.Rows = append(tb.Rows, []Cell{{Text: "1"}, {Text: "198.18.0.2"}, {Text: ""}})
	tb.Free(1, "[MPLS: L=16005]")
	tb.Rows = append(tb.Rows, []Cell{{Text: "12"}, {Text: "*", Color: "red"}, {Text: "no reply"}})
	got := strings.Join(tb.Render(func(color, s string) string {
		if color == "" {
			return s
		}
		return "<" + s + ">"
	}), "\n")
	want := strings.Join([]string{
		"HOP  ADDRESS     NOTE",
		"  1  198.18.0.2",
		"     [MPLS: L=16005]",
		" 12  <*>           no reply",
	}, "\n")
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
