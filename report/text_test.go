package report

import (
	"bytes"
	"testing"
)

func TestWriteTextGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, demoReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "text.golden", b.Bytes())
}
