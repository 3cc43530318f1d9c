package diagnose

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// EvidencePerFinding bounds the failed-connection captures written for
// one finding.
const EvidencePerFinding = 3

// WriteEvidence writes, for every finding about connections, a pcapng file
// (Wireshark, tshark) per failed connection behind it, at most
// EvidencePerFinding, from the flow observer's bounded history of the
// connection: both directions from the SYN on, the ICMP errors quoting
// it, a comment on each packet that matters. An idle-reset or idle-drop
// finding also gets the in-flow confirmation's connection with its probes
// and their answers, when that ran. index.json and index.txt map each
// finding to its files and the frames to look at (docs/evidence.md). Each
// file is named in its finding's evidence. local gives the client's
// address toward a server when a capture lacks it. Returns the files
// written.
func WriteEvidence(dir string, rep *Report, local func(netip.Addr) netip.Addr) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence dir: %w", err)
	}
	var files []string
	var entries []evidence.Entry
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
			server, err := netip.ParseAddr(t.Address)
			if err != nil {
				continue
			}
			write := func(c probe.FlowCapture, name, role, what string, conn int) error {
				if !c.Local.Addr().IsValid() {
					c.Local = netip.AddrPortFrom(local(server), c.Local.Port())
				}
				story := evidence.Annotate(c)
				data, err := evidence.Pcapng(c, story.Notes, evidence.Title(c, what))
				if err != nil {
					return fmt.Errorf("evidence %s: %w", name, err)
				}
				path := filepath.Join(dir, name)
				if err := evidence.WriteFile(path, data); err != nil {
					return fmt.Errorf("evidence: %w", err)
				}
				files = append(files, path)
				entries = append(entries, evidence.Entry{Finding: i + 1, Kind: f.Kind, Target: f.Target, Address: f.Address, Hop: f.Hop,
					File: name, Role: role, Connection: conn, Capture: c})
				f.Evidence = append(f.Evidence, fmt.Sprintf("pcapng: %s (%s; frames: %s; see %s)", path, what, frameSummary(story.Frames), evidence.IndexText))
				return nil
			}
			for _, c := range connectionsBehind(f.Kind, t.Tests[test].Connections) {
				what := fmt.Sprintf("%s: connection %d, local port %d", f.Kind, c.ID, c.LocalPort)
				name := fmt.Sprintf("%s-%d-%s-conn%d.pcapng", safeName(t.Address), t.Port, f.Kind, c.ID)
				if err := write(*c.Capture, name, evidence.RoleFailedConnection, what, c.ID); err != nil {
					return files, err
				}
			}
			if in := inFlowOf(t); in != nil && t.inFlowCapture != nil && (f.Kind == tcpcheck.KindIdleReset || f.Kind == tcpcheck.KindIdleDrop) {
				what := fmt.Sprintf("%s: in-flow confirmation, flow %s", f.Kind, in.Flow)
				name := fmt.Sprintf("%s-%d-%s-inflow.pcapng", safeName(t.Address), t.Port, f.Kind)
				if err := write(*t.inFlowCapture, name, evidence.RoleInFlowConfirmation, what, 0); err != nil {
					return files, err
				}
			}
		}
	}
	if err := evidence.WriteIndex(dir, evidence.BuildIndex(entries)); err != nil {
		return files, err
	}
	return files, nil
}

// connectionsBehind picks the failed connections with a capture behind a
// finding, at most EvidencePerFinding: for idle findings those that failed
// after idling first.
func connectionsBehind(kind string, conns []tcpcheck.ConnRecord) []tcpcheck.ConnRecord {
	var first, rest []tcpcheck.ConnRecord
	for _, c := range conns {
		if c.Outcome == tcpcheck.OutcomeOK || c.Capture == nil {
			continue
		}
		if testOfKind(kind) == "idle" && c.IdleS == 0 {
			rest = append(rest, c)
			continue
		}
		first = append(first, c)
	}
	all := append(first, rest...)
	return all[:min(len(all), EvidencePerFinding)]
}

func inFlowOf(t *TargetReport) *InFlow {
	if t.Localisation == nil {
		return nil
	}
	return t.Localisation.InFlow
}

// frameSummary names the key frames in a few words.
func frameSummary(f evidence.Frames) string {
	var parts []string
	if f.SynAck != 0 {
		parts = append(parts, fmt.Sprintf("SYN-ACK %d (TTL %d)", f.SynAck, f.SynAckTTL))
	}
	if f.Trigger != 0 {
		if f.Unanswered {
			parts = append(parts, fmt.Sprintf("unanswered %d, %d retransmissions", f.Trigger, len(f.Retransmissions)))
		} else {
			parts = append(parts, fmt.Sprintf("trigger %d", f.Trigger))
		}
	}
	if len(f.Resets) > 0 {
		parts = append(parts, fmt.Sprintf("RST %d", f.Resets[0]))
	}
	if len(f.Fins) > 0 {
		parts = append(parts, fmt.Sprintf("FIN %d", f.Fins[0]))
	}
	if len(f.InFlowProbes) > 0 {
		parts = append(parts, fmt.Sprintf("%d in-flow probes, %d ICMP answers", len(f.InFlowProbes), len(f.InFlowAnswers)))
	}
	if len(parts) == 0 {
		return "none identified"
	}
	return strings.Join(parts, ", ")
}

func safeName(addr string) string {
	return strings.NewReplacer(":", "_", ".", "_").Replace(addr)
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
