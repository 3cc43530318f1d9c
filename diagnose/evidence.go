package diagnose

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// EvidencePerFinding bounds the pcap files written for one finding.
const EvidencePerFinding = 3

// WriteEvidence writes, for every finding about connections, a pcap file
// (openable in Wireshark) per failed connection behind it, at most
// EvidencePerFinding, rebuilt from what the flow observer recorded of the
// remote end: every FIN and RST with its TTL, IP ID and DF bit as received.
// local gives the client's address toward a server. Each file is named in
// its finding's evidence. Returns the files written.
func WriteEvidence(dir string, rep *Report, local func(netip.Addr) netip.Addr) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence dir: %w", err)
	}
	var files []string
	for i := range rep.Findings {
		f := &rep.Findings[i]
		test := testOfKind(f.Kind)
		if test == "" {
			continue
		}
		for _, t := range rep.Targets {
			if t.Address != f.Address || t.Target != f.Target {
				continue
			}
			res, ok := t.Tests[test]
			if !ok {
				continue
			}
			server, err := netip.ParseAddr(t.Address)
			if err != nil {
				continue
			}
			client := local(server)
			n := 0
			for _, c := range res.Connections {
				if n >= EvidencePerFinding {
					break
				}
				if c.Outcome == tcpcheck.OutcomeOK || len(c.Packets) == 0 {
					continue
				}
				segs := segmentsOf(c, rep.StartedAt, netip.AddrPortFrom(server, uint16(t.Port)), netip.AddrPortFrom(client, c.LocalPort))
				data, err := soak.PcapOf(segs)
				if err != nil {
					return files, fmt.Errorf("evidence: %w", err)
				}
				name := fmt.Sprintf("%s-%d-%s-conn%d.pcap", safeName(t.Address), t.Port, f.Kind, c.ID)
				path := filepath.Join(dir, name)
				if err := os.WriteFile(path, data, 0o644); err != nil {
					return files, fmt.Errorf("evidence: %w", err)
				}
				files = append(files, path)
				f.Evidence = append(f.Evidence, fmt.Sprintf("pcap: %s (connection %d, local port %d)", path, c.ID, c.LocalPort))
				n++
			}
		}
	}
	return files, nil
}

// segmentsOf rebuilds the FINs and RSTs the observer saw on a connection.
func segmentsOf(c tcpcheck.ConnRecord, start time.Time, server, client netip.AddrPort) []probe.Segment {
	var segs []probe.Segment
	for _, p := range c.Packets {
		segs = append(segs, probe.Segment{
			At:  start.Add(time.Duration(p.AtS * float64(time.Second))),
			Src: server, Dst: client, TTL: p.TTL, IPID: p.IPID, DF: p.DF, Seq: p.Seq,
			Flags: flagsOf(p.Flags),
		})
	}
	return segs
}

// flagsOf parses "RST+ACK"-style flag names.
func flagsOf(s string) probe.TCPFlags {
	var f probe.TCPFlags
	for _, name := range strings.Split(s, "+") {
		switch strings.TrimSpace(strings.ToUpper(name)) {
		case "FIN":
			f |= probe.FlagFIN
		case "SYN":
			f |= probe.FlagSYN
		case "RST":
			f |= probe.FlagRST
		case "PSH":
			f |= probe.FlagPSH
		case "ACK":
			f |= probe.FlagACK
		}
	}
	return f
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
