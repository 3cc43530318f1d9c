package cli

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

var errNoPacketSocket = errors.New("flow capture: packet socket: address family not supported by protocol")

// The flow observer's capture error (injected as the session records it)
// becomes one warning in the report, whatever the format (the text report
// prints it: tcpcheck.WriteText); the evidence directory still gets its
// index.
func TestTCPEvidenceWarnsWithoutCapture(t *testing.T) {
	dir := t.TempDir()
	rep := tcpcheck.Report{Test: "idle", Results: []tcpcheck.Result{
		{Target: "https://198.18.5.2", Address: "198.18.5.2", Port: 443, CaptureErr: errNoPacketSocket,
			Connections: []tcpcheck.ConnRecord{{ID: 1, Outcome: tcpcheck.OutcomeReset, IdleS: 12}}}},
		Findings: []tcpcheck.Finding{{Kind: tcpcheck.KindIdleReset, Target: "https://198.18.5.2", Address: "198.18.5.2"}}}
	tcpEvidence(dir, &rep, nil)
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "packet captures are unavailable") ||
		!strings.Contains(rep.Warnings[0], "198.18.5.2: "+errNoPacketSocket.Error()) || !strings.Contains(rep.Warnings[0], dir) {
		t.Fatalf("warnings %q; want one naming the capture error and %s", rep.Warnings, dir)
	}
	if idx, err := evidence.ReadIndex(dir); err != nil || len(idx.Findings) != 0 {
		t.Errorf("index %+v, %v; want one without captures", idx, err)
	}
}

// With the capture open there is no warning, and the captures are written.
func TestTCPEvidenceWithCapture(t *testing.T) {
	dir := t.TempDir()
	rep := tcpcheck.Report{Test: "idle", Results: []tcpcheck.Result{{Target: "https://198.18.5.2", Address: "198.18.5.2", Port: 443}}}
	tcpEvidence(dir, &rep, nil)
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings %q", rep.Warnings)
	}
	if _, err := os.Stat(filepath.Join(dir, evidence.IndexJSON)); err != nil {
		t.Error(err)
	}
}

// soak checks the capture before it starts, toward its first address.
func TestEvidenceCaptureCheck(t *testing.T) {
	dst := netip.MustParseAddrPort("198.18.5.2:443")
	var asked netip.AddrPort
	var stderr bytes.Buffer
	w := evidenceCaptureCheck(&stderr, "text", "/tmp/ev", dst, func(d netip.AddrPort) error { asked = d; return errNoPacketSocket })
	if asked != dst || len(w) != 1 || w[0] != evidence.CaptureWarning("/tmp/ev", errNoPacketSocket) || stderr.String() != "hopcheck: "+w[0]+"\n" {
		t.Errorf("asked %s, warnings %q, stderr %q", asked, w, stderr.String())
	}
	stderr.Reset()
	if w := evidenceCaptureCheck(&stderr, "text", "/tmp/ev", dst, func(netip.AddrPort) error { return nil }); len(w) != 0 || stderr.Len() != 0 {
		t.Errorf("capture open: warnings %q, stderr %q", w, stderr.String())
	}
}
