package tcpcheck

import (
	"fmt"
	"net/netip"

	"github.com/hopcheck/hopcheck/evidence"
)

// EvidencePerFinding bounds the failed-connection captures written for
// one finding (`--evidence`).
const EvidencePerFinding = 3

// ConnectionsBehind picks the failed connections with a capture behind a
// finding of kind, at most EvidencePerFinding: those whose outcome is the
// finding's (a reset for a reset finding...) first, and for idle findings
// those that failed after idling first. Pure.
func ConnectionsBehind(kind string, conns []ConnRecord) []ConnRecord {
	rank := func(c ConnRecord) int {
		r := 0
		if !outcomeOfKind(kind, c.Outcome) {
			r += 2
		}
		if isIdleKind(kind) && c.IdleS == 0 {
			r++
		}
		return r
	}
	var byRank [4][]ConnRecord
	for _, c := range conns {
		if c.Outcome == OutcomeOK || c.Capture == nil {
			continue
		}
		byRank[rank(c)] = append(byRank[rank(c)], c)
	}
	var out []ConnRecord
	for _, cs := range byRank {
		out = append(out, cs...)
	}
	return out[:min(len(out), EvidencePerFinding)]
}

func isIdleKind(kind string) bool {
	return kind == KindIdleReset || kind == KindIdleDrop || kind == KindIdleClose
}

// outcomeOfKind reports whether a connection that ended with o is what a
// finding of kind is about (false: unknown kinds).
func outcomeOfKind(kind string, o Outcome) bool {
	switch kind {
	case KindIdleReset, KindConnectReset, KindMidstreamReset, KindConcurrencyLimit:
		return o.IsReset()
	case KindIdleDrop, KindConnectTimeout, KindDataStall, KindPMTUBlackhole:
		return o == OutcomeTimeout
	case KindIdleClose, KindMidstreamClose:
		return o == OutcomeClosed
	}
	return false
}

// WriteEvidence writes, for every finding, a pcapng file (Wireshark,
// tshark) per failed connection behind it (ConnectionsBehind) from the
// flow observer's bounded history of the connection, names each file in
// its finding's evidence, and writes index.json and index.txt
// (docs/evidence.md): the files and index of `hopcheck run --evidence`.
// local gives the client's address toward a server when a capture lacks
// it. Returns the files written.
func WriteEvidence(dir string, rep *Report, local func(netip.Addr) netip.Addr) ([]string, error) {
	w, err := evidence.NewWriter(dir, local)
	if err != nil {
		return nil, err
	}
	for i := range rep.Findings {
		f := &rep.Findings[i]
		for _, res := range rep.Results {
			if res.Address != f.Address || res.Target != f.Target {
				continue
			}
			for _, c := range ConnectionsBehind(f.Kind, res.Connections) {
				what := fmt.Sprintf("%s: connection %d, local port %d", f.Kind, c.ID, c.LocalPort)
				line, err := w.Write(evidence.Entry{Finding: i + 1, Kind: f.Kind, Target: f.Target, Address: f.Address, Hop: f.Hop,
					File: evidence.FileName(res.Address, res.Port, f.Kind, fmt.Sprintf("conn%d", c.ID)), Role: evidence.RoleFailedConnection,
					Connection: c.ID, Capture: *c.Capture}, what)
				if err != nil {
					return w.Files(), err
				}
				f.Evidence = append(f.Evidence, line)
			}
		}
	}
	return w.Files(), w.Close()
}

// CaptureErr is why the packet capture for evidence could not be opened
// toward the first address where it could not (nil: it was everywhere,
// or was not asked for).
func CaptureErr(results []Result) error {
	for _, r := range results {
		if r.CaptureErr != nil {
			return fmt.Errorf("%s: %w", r.Address, r.CaptureErr)
		}
	}
	return nil
}
