package evidence

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hopcheck/hopcheck/probe"
)

// IndexSchemaVersion is the version of index.json (docs/evidence.md).
const IndexSchemaVersion = 1

// Capture roles.
const (
	// RoleFailedConnection: a connection behind the finding, from its SYN
	// to the RST, FIN or the unanswered segment's retransmissions.
	RoleFailedConnection = "failed-connection"
	// RoleInFlowConfirmation: the connection the in-flow confirmation
	// held idle and probed with TTL-limited segments of its own.
	RoleInFlowConfirmation = "in-flow-confirmation"
)

// Entry is one capture written for a finding: what BuildIndex indexes.
type Entry struct {
	Finding    int // position of the finding in the report, from 1
	Kind       string
	Target     string
	Address    string
	Hop        int
	File       string // name inside the evidence directory
	Role       string
	Connection int // connection id in the report's test results, 0 none
	Capture    probe.FlowCapture
}

// Index maps each finding to its capture files and the frames to look at.
type Index struct {
	SchemaVersion int            `json:"schema_version"`
	Bounds        Bounds         `json:"bounds"`
	Findings      []IndexFinding `json:"findings"`
}

// Bounds are the capture bounds the files were written with.
type Bounds struct {
	FirstPackets int `json:"first_packets"`
	LastPackets  int `json:"last_packets"`
	SnapLen      int `json:"snaplen"`
}

// IndexFinding is one finding and its captures.
type IndexFinding struct {
	Finding  int            `json:"finding"` // position in the report's findings, from 1
	Kind     string         `json:"kind"`
	Target   string         `json:"target,omitempty"`
	Address  string         `json:"address,omitempty"`
	Hop      int            `json:"hop,omitempty"`
	Captures []IndexCapture `json:"captures"`
}

// IndexCapture is one file.
type IndexCapture struct {
	File       string `json:"file"`
	Role       string `json:"role"`
	Connection int    `json:"connection,omitempty"`
	Flow       string `json:"flow"`
	Packets    int    `json:"packets"`
	Omitted    int    `json:"omitted,omitempty"` // packets between the first and last kept, not kept
	Frames     Frames `json:"frames"`
}

// BuildIndex groups entries by finding (in finding order, captures in the
// order given) and reads each capture's frames with Annotate. Pure.
func BuildIndex(entries []Entry) Index {
	idx := NewIndex()
	for _, e := range entries {
		idx.Add(e)
	}
	return idx
}

// NewIndex is an empty index.
func NewIndex() Index {
	return Index{SchemaVersion: IndexSchemaVersion, Findings: []IndexFinding{},
		Bounds: Bounds{FirstPackets: probe.HistoryFirst, LastPackets: probe.HistoryLast, SnapLen: probe.HistorySnapLen}}
}

// Add indexes one more capture (keeping findings in order); the index
// keeps the frames, not the capture.
func (idx *Index) Add(e Entry) {
	i := -1
	for k := range idx.Findings {
		if idx.Findings[k].Finding == e.Finding {
			i = k
		}
	}
	if i < 0 {
		idx.Findings = append(idx.Findings, IndexFinding{Finding: e.Finding, Kind: e.Kind, Target: e.Target, Address: e.Address, Hop: e.Hop, Captures: []IndexCapture{}})
		sort.SliceStable(idx.Findings, func(a, b int) bool { return idx.Findings[a].Finding < idx.Findings[b].Finding })
		for k := range idx.Findings {
			if idx.Findings[k].Finding == e.Finding {
				i = k
			}
		}
	}
	idx.Findings[i].Captures = append(idx.Findings[i].Captures, IndexCapture{File: e.File, Role: e.Role, Connection: e.Connection,
		Flow: fmt.Sprintf("%s > %s", e.Capture.Local, e.Capture.Remote), Packets: len(e.Capture.Packets), Omitted: e.Capture.Omitted,
		Frames: Annotate(e.Capture).Frames})
}

// Text renders the index for people: per finding, per file, the frames to
// look at. Pure.
func (idx Index) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hopcheck evidence: %d finding(s). Frame numbers as Wireshark counts them (tshark: frame.number).\n", len(idx.Findings))
	fmt.Fprintf(&b, "Each capture keeps a flow's first %d and last %d packets, %d bytes of each from its IP header on.\n",
		idx.Bounds.FirstPackets, idx.Bounds.LastPackets, idx.Bounds.SnapLen)
	for _, f := range idx.Findings {
		fmt.Fprintf(&b, "\nfinding %d: %s", f.Finding, f.Kind)
		if f.Address != "" {
			fmt.Fprintf(&b, " toward %s", f.Address)
		}
		if f.Hop > 0 {
			fmt.Fprintf(&b, " at hop %d", f.Hop)
		}
		b.WriteString("\n")
		for _, c := range f.Captures {
			fmt.Fprintf(&b, "  %s (%s", c.File, c.Role)
			if c.Connection > 0 {
				fmt.Fprintf(&b, ", connection %d", c.Connection)
			}
			fmt.Fprintf(&b, "; %s; %d packets", c.Flow, c.Packets)
			if c.Omitted > 0 {
				fmt.Fprintf(&b, ", %d more not kept", c.Omitted)
			}
			b.WriteString(")\n")
			for _, l := range frameLines(c.Frames) {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
	}
	return b.String()
}

func frameLines(f Frames) []string {
	var out []string
	add := func(label string, frames ...int) {
		if len(frames) > 0 && frames[0] != 0 {
			out = append(out, fmt.Sprintf("%-28s %s", label+":", joinInts(frames)))
		}
	}
	add("SYN", f.SYN)
	if f.SynAck != 0 {
		out = append(out, fmt.Sprintf("%-28s %d (TTL %d, hop %d: the baseline)", "SYN-ACK:", f.SynAck, f.SynAckTTL, probe.SenderHop(f.SynAckTTL)))
	}
	if len(f.BeforeIdleGap) > 0 {
		out = append(out, fmt.Sprintf("%-28s %s, then %.1f s idle", "last before the idle gap:", joinInts(f.BeforeIdleGap), f.IdleGapS))
	}
	switch {
	case f.Trigger != 0 && f.Unanswered:
		add("unanswered segment", f.Trigger)
	case f.Trigger != 0:
		add("segment that drew the end", f.Trigger)
	}
	add("its retransmissions", f.Retransmissions...)
	add("RST", f.Resets...)
	add("FIN", f.Fins...)
	add("in-flow probes", f.InFlowProbes...)
	add("answers to them (ICMP)", f.InFlowAnswers...)
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
