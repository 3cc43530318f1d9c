package report

import (
	"bytes"
	"testing"
)

func TestWriteHTMLGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, demoReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.html.golden", b.Bytes())
}
