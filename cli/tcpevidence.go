package cli

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// textReport reports whether format is the human text report.
func textReport(format string) bool { return format == "text" || format == "auto" }

// evidenceWarning is the warning of an --evidence DIR that gets no packets
// because the packet capture could not be opened (err); the caller adds
// it to the report's warnings, which every report of run and tcp (text
// too) prints: not on stderr as well.
func evidenceWarning(dir string, err error) string { return evidence.CaptureWarning(dir, err) }

// tcpEvidence is `hopcheck tcp --evidence DIR`: the pcapng files of the
// connections behind each finding and the index, as `run --evidence`
// writes them, named in the findings' evidence; a warning in the report
// when the capture could not be opened or a file not written.
func tcpEvidence(dir string, rep *tcpcheck.Report, local func(netip.Addr) netip.Addr) {
	if err := tcpcheck.CaptureErr(rep.Results); err != nil {
		rep.Warnings = append(rep.Warnings, evidenceWarning(dir, err))
	}
	if _, err := tcpcheck.WriteEvidence(dir, rep, local); err != nil {
		rep.Warnings = append(rep.Warnings, err.Error())
	}
}

// sourceToward is this host's address toward a server (for captures
// that lack it).
func sourceToward(a netip.Addr) netip.Addr { src, _ := probe.SourceFor(a); return src }

// captureErrToward opens the flow observer toward dst as a soak's workers
// do (tcpcheck.NewAttributor) and says why its packet capture cannot be
// opened (nil: it can). Nothing is sent.
func captureErrToward(dst netip.AddrPort) error {
	a, err := tcpcheck.NewAttributor(dst, true)
	defer a.Close()
	if err != nil {
		return err
	}
	return a.CaptureErr()
}

// evidenceCaptureCheck is soak's check before it starts (its observers
// are opened by its workers, hours of empty evidence later): open
// (captureErrToward) opens a capture toward dst; the warning, if it
// cannot, also on stderr for the text report (soak's text report does not
// list warnings, and the soak has hours to go).
func evidenceCaptureCheck(errw io.Writer, format, dir string, dst netip.AddrPort, open func(netip.AddrPort) error) []string {
	if err := open(dst); err != nil {
		w := evidenceWarning(dir, err)
		if textReport(format) {
			fmt.Fprintf(errw, "hopcheck: %s\n", w)
		}
		return []string{w}
	}
	return nil
}
