// Package texttable lays out the aligned plain-text tables of hopcheck's
// trace and run reports.
package texttable

import (
	"strings"
	"unicode/utf8"
)

// Table is a minimal aligned text Table: columns separated by two spaces,
// the last Column unpadded, trailing blanks trimmed.
type Table struct {
	Cols []Column
	Rows [][]Cell
	// freeLines are written after row index (len(rows) when added),
	// starting at Column col, without affecting the widths.
	freeLines []freeLine
}

type freeLine struct {
	after int
	col   int
	Text  string
}

// Free adds a line that starts at Column col after the current rows.
func (tb *Table) Free(col int, text string) {
	tb.freeLines = append(tb.freeLines, freeLine{after: len(tb.Rows), col: col, Text: text})
}

// Column is a column title and its alignment.
type Column struct {
	Title string
	Right bool
}

// Cell is one cell: its text and an optional ANSI colour.
type Cell struct {
	Text  string
	Color string // ANSI colour, applied after padding so alignment holds
}

// Render lays the table out; paint colours a cell after padding.
func (tb *Table) Render(paint func(color, s string) string) []string {
	widths := make([]int, len(tb.Cols))
	for i, c := range tb.Cols {
		widths[i] = utf8.RuneCountInString(c.Title)
	}
	for _, row := range tb.Rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.Text))
		}
	}
	header := make([]Cell, len(tb.Cols))
	for i, c := range tb.Cols {
		header[i] = Cell{Text: c.Title}
	}
	lines := make([]string, 0, len(tb.Rows)+len(tb.freeLines)+1)
	free := tb.freeLines
	writeFree := func(f freeLine) {
		indent := 0
		for _, w := range widths[:f.col] {
			indent += w + 2
		}
		lines = append(lines, strings.Repeat(" ", indent)+f.Text)
	}
	for r, row := range append([][]Cell{header}, tb.Rows...) {
		// r counts the header: free lines added after n rows go before row n+1.
		for ; len(free) > 0 && free[0].after < r; free = free[1:] {
			writeFree(free[0])
		}
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.Text))
			switch {
			case i == len(tb.Cols)-1 && !tb.Cols[i].Right:
				b.WriteString(paint(c.Color, c.Text)) // nothing follows: no padding
			case tb.Cols[i].Right:
				b.WriteString(pad + paint(c.Color, c.Text))
			default:
				b.WriteString(paint(c.Color, c.Text) + pad)
			}
		}
		lines = append(lines, strings.TrimRight(b.String(), " "))
	}
	for _, f := range free {
		writeFree(f)
	}
	return lines
}
