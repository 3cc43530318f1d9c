package diagnose

import (
	"fmt"
	"net/netip"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// EvidencePerFinding bounds the failed-connection captures written for
// one finding.
const EvidencePerFinding = tcpcheck.EvidencePerFinding

// WriteEvidence writes, for every finding about connections, a pcapng file
// (Wireshark, tshark) per failed connection behind it, at most
// EvidencePerFinding (tcpcheck.ConnectionsBehind), from the flow
// observer's bounded history of the connection: both directions from the
// SYN on, the ICMP errors quoting it, a comment on each packet that
// matters. An idle-reset or idle-drop finding also gets the in-flow
// confirmation's connection with its probes and their answers, when that
// ran. index.json and index.txt map each finding to its files and the
// frames to look at (docs/evidence.md). Each file is named in its
// finding's evidence. local gives the client's address toward a server
// when a capture lacks it. Returns the files written. `hopcheck tcp
// --evidence` writes the same files with tcpcheck.WriteEvidence.
func WriteEvidence(dir string, rep *Report, local func(netip.Addr) netip.Addr) ([]string, error) {
	w, err := evidence.NewWriter(dir, local)
	if err != nil {
		return nil, err
	}
	for i := range rep.Findings {
		f := &rep.Findings[i]
		test := testOfKind(f.Kind)
		if test == "" {
			continue
		}
		for ti := range rep.Targets {
			t := &rep.Targets[ti]
			if t.Address != f.Address || t.Target != f.Target {
				continue
			}
			if _, err := netip.ParseAddr(t.Address); err != nil {
				continue
			}
			entry := evidence.Entry{Finding: i + 1, Kind: f.Kind, Target: f.Target, Address: f.Address, Hop: f.Hop}
			for _, c := range tcpcheck.ConnectionsBehind(f.Kind, t.Tests[test].Connections) {
				e := entry
				e.File, e.Role, e.Connection, e.Capture = evidence.FileName(t.Address, t.Port, f.Kind, fmt.Sprintf("conn%d", c.ID)),
					evidence.RoleFailedConnection, c.ID, *c.Capture
				line, err := w.Write(e, fmt.Sprintf("%s: connection %d, local port %d", f.Kind, c.ID, c.LocalPort))
				if err != nil {
					return w.Files(), err
				}
				f.Evidence = append(f.Evidence, line)
			}
			if in := inFlowOf(t); in != nil && t.inFlowCapture != nil && (f.Kind == tcpcheck.KindIdleReset || f.Kind == tcpcheck.KindIdleDrop) {
				e := entry
				e.File, e.Role, e.Capture = evidence.FileName(t.Address, t.Port, f.Kind, "inflow"), evidence.RoleInFlowConfirmation, *t.inFlowCapture
				line, err := w.Write(e, fmt.Sprintf("%s: in-flow confirmation, flow %s", f.Kind, in.Flow))
				if err != nil {
					return w.Files(), err
				}
				f.Evidence = append(f.Evidence, line)
			}
		}
	}
	return w.Files(), w.Close()
}

// CaptureErr is why the connection tests' packet capture for evidence
// could not be opened toward the first address where it could not (nil:
// it was everywhere, or was not asked for).
func CaptureErr(rep Report) error {
	for _, t := range rep.Targets {
		for _, name := range tcpcheck.TestNames() {
			if res, ok := t.Tests[name]; ok {
				if err := tcpcheck.CaptureErr([]tcpcheck.Result{res}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// CaptureWarning is the run's one warning about packet captures that
// could not be opened when --evidence dir was asked for ("" none): the
// connection tests' (evidence.CaptureWarning: none of their pcapng
// files), else the first in-flow confirmation's (no file of its probes),
// not one per target.
func CaptureWarning(dir string, rep Report) string {
	if err := CaptureErr(rep); err != nil {
		return evidence.CaptureWarning(dir, err)
	}
	for _, t := range rep.Targets {
		if t.inFlowCaptureErr != nil {
			return fmt.Sprintf("the packet capture of the in-flow confirmation toward %s is unavailable (%v): --evidence %s gets no pcapng file of its probes and their answers",
				t.Address, t.inFlowCaptureErr, dir)
		}
	}
	return ""
}

func inFlowOf(t *TargetReport) *InFlow {
	if t.Localisation == nil {
		return nil
	}
	return t.Localisation.InFlow
}

// testOfKind names the connection test whose connections a finding of
// kind is about ("" for path findings).
func testOfKind(kind string) string {
	switch kind {
	case tcpcheck.KindIdleReset, tcpcheck.KindIdleDrop, tcpcheck.KindIdleClose:
		return "idle"
	case tcpcheck.KindConnectReset, tcpcheck.KindConnectTimeout:
		return "connect"
	case tcpcheck.KindConcurrencyLimit:
		return "concurrency"
	case tcpcheck.KindMidstreamReset, tcpcheck.KindMidstreamClose, tcpcheck.KindDataStall:
		return "data"
	}
	return ""
}
