package report

import (
	"bytes"
	"testing"
)

func TestWriteMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, demoReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.md.golden", b.Bytes())
}
