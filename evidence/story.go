// Package evidence turns the flow observer's bounded packet history of a
// failed connection into what a network owner accepts: a pcapng file that
// opens in Wireshark/tshark, with a comment on each packet that matters,
// and an index naming, per finding, the files and the frame numbers to
// look at. Everything here is pure: capture in, bytes and index out.
package evidence

import (
	"fmt"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// MinIdleGap is the shortest pause between two segments of a flow that is
// called its idle gap.
const MinIdleGap = time.Second

// Frames names the frames of a capture (1-based, as Wireshark and tshark's
// frame.number count them) that tell the connection's story; 0 or empty:
// not in the capture.
type Frames struct {
	// SYN is our first SYN; SynAck the server's SYN-ACK, the TTL baseline
	// that RSTs and FINs are compared with.
	SYN       int `json:"syn,omitempty"`
	SynAck    int `json:"syn_ack,omitempty"`
	SynAckTTL int `json:"syn_ack_ttl,omitempty"`
	// BeforeIdleGap are the last segments before the longest pause (at
	// least MinIdleGap) ahead of the failure; IdleGapS its length.
	BeforeIdleGap []int   `json:"before_idle_gap,omitempty"`
	IdleGapS      float64 `json:"idle_gap_s,omitempty"`
	// Trigger is our segment that drew the RST or FIN, or that went
	// unanswered (then Unanswered); Retransmissions are its copies.
	Trigger         int   `json:"trigger,omitempty"`
	Retransmissions []int `json:"retransmissions,omitempty"`
	Unanswered      bool  `json:"unanswered,omitempty"`
	// Resets and Fins are the RSTs and FINs from the remote end's side.
	Resets []int `json:"resets,omitempty"`
	Fins   []int `json:"fins,omitempty"`
	// InFlowProbes are our TTL-limited segments of the flow (in-flow
	// trace), InFlowAnswers the ICMP errors quoting the flow.
	InFlowProbes  []int `json:"in_flow_probes,omitempty"`
	InFlowAnswers []int `json:"in_flow_answers,omitempty"`
}

// Story is the reading of one capture: its frames and a note per packet
// ("" for packets without one), written as pcapng packet comments.
type Story struct {
	Frames Frames
	Notes  []string
}

type decoded struct {
	info  probe.CapturedInfo
	ok    bool
	probe bool // an in-flow probe of ours
}

// Annotate reads a flow capture. Pure.
func Annotate(c probe.FlowCapture) Story {
	st := Story{Notes: make([]string, len(c.Packets))}
	ds := make([]decoded, len(c.Packets))
	ownTTL := 0
	for i, p := range c.Packets {
		info, err := probe.DecodeCaptured(p.Data)
		ds[i] = decoded{info: info, ok: err == nil || info.TCP != nil || info.ICMP != nil}
		if ds[i].ok && p.Out && info.TCP != nil && ownTTL == 0 && info.TCP.Flags&probe.FlagSYN != 0 {
			ownTTL = info.TTL
		}
	}
	if ownTTL == 0 {
		for i, p := range c.Packets { // no SYN kept: our highest TTL is the normal one
			if ds[i].ok && p.Out && ds[i].info.TCP != nil {
				ownTTL = max(ownTTL, ds[i].info.TTL)
			}
		}
	}
	f := &st.Frames
	var regular []int           // indices of the connection's own segments (not probes, not ICMP)
	answeredBy := map[int]int{} // probe index -> frame of its ICMP answer
	firstEnd := -1
	for i, p := range c.Packets {
		d := &ds[i]
		if !d.ok {
			continue
		}
		t, m := d.info.TCP, d.info.ICMP
		switch {
		case t != nil && p.Out && d.info.TTL < ownTTL:
			d.probe = true
			f.InFlowProbes = append(f.InFlowProbes, i+1)
			st.Notes[i] = fmt.Sprintf("in-flow probe: our segment of the flow with TTL %d", d.info.TTL)
		case t != nil && p.Out:
			regular = append(regular, i)
			if t.Flags&probe.FlagSYN != 0 && f.SYN == 0 {
				f.SYN = i + 1
				st.Notes[i] = "SYN: the connection opens"
			}
		case t != nil:
			regular = append(regular, i)
			hop := probe.SenderHop(d.info.TTL)
			switch {
			case t.Flags.Has(probe.FlagSYN|probe.FlagACK) && f.SynAck == 0:
				f.SynAck, f.SynAckTTL = i+1, d.info.TTL
				st.Notes[i] = fmt.Sprintf("SYN-ACK: the server's TTL baseline, TTL %d (sender at hop %d)", d.info.TTL, hop)
			case t.Flags&probe.FlagRST != 0:
				f.Resets = append(f.Resets, i+1)
				st.Notes[i] = fmt.Sprintf("RST: TTL %d (sender at hop %d)%s", d.info.TTL, hop, baseline(f.SynAck, f.SynAckTTL))
			case t.Flags&probe.FlagFIN != 0:
				f.Fins = append(f.Fins, i+1)
				st.Notes[i] = fmt.Sprintf("FIN: TTL %d (sender at hop %d)%s", d.info.TTL, hop, baseline(f.SynAck, f.SynAckTTL))
			}
			if t.Flags&(probe.FlagRST|probe.FlagFIN) != 0 && firstEnd < 0 {
				firstEnd = i
			}
		case m != nil && m.Quoted != nil:
			f.InFlowAnswers = append(f.InFlowAnswers, i+1)
			j, what := quotedProbe(c, ds, i, m.Quoted)
			st.Notes[i] = fmt.Sprintf("%s from %s (hop %d by its TTL %d) quoting %s", m.Kind, d.info.Src, probe.SenderHop(d.info.TTL), d.info.TTL, what)
			if j >= 0 && answeredBy[j] == 0 {
				answeredBy[j] = i + 1
			}
		}
	}
	for _, n := range f.InFlowProbes {
		if a := answeredBy[n-1]; a > 0 {
			st.Notes[n-1] += fmt.Sprintf("; answered by frame %d", a)
		} else {
			st.Notes[n-1] += "; no ICMP answer"
		}
	}
	// The failure is the first RST or FIN, else the end of the capture.
	failIdx := len(c.Packets)
	if firstEnd >= 0 {
		failIdx = firstEnd
	}
	// Own segments before the failure, without retransmissions (whose
	// backoff pauses are no idle gap).
	var before []int
	for _, i := range regular {
		if i < failIdx && !isCopy(c, ds, before, i) {
			before = append(before, i)
		}
	}
	// Idle gap: the longest pause between consecutive own segments before
	// the failure.
	// The RST or FIN itself ends a pause too (a box that resets flows
	// while they idle).
	span := before
	if firstEnd >= 0 {
		span = append(append([]int(nil), before...), firstEnd)
	}
	gapAt := -1 // position in span of the first packet after the gap
	var gap time.Duration
	for k := 1; k < len(span); k++ {
		if d := c.Packets[span[k]].At.Sub(c.Packets[span[k-1]].At); d >= MinIdleGap && d > gap {
			gap, gapAt = d, k
		}
	}
	if gapAt > 0 {
		f.IdleGapS = gap.Seconds()
		for k := max(0, gapAt-3); k < gapAt; k++ {
			i := span[k]
			f.BeforeIdleGap = append(f.BeforeIdleGap, i+1)
			if st.Notes[i] == "" {
				st.Notes[i] = "last segments before the idle gap"
			}
		}
		if gapAt < len(before) && st.Notes[before[gapAt]] == "" {
			st.Notes[before[gapAt]] = fmt.Sprintf("first segment after %.1f s idle", gap.Seconds())
		}
	}
	trigger := triggerOf(c, ds, before, gapAt)
	if trigger < 0 {
		return st
	}
	tt := ds[trigger].info.TCP
	end := tt.Seq + uint32(tt.PayloadLen)
	if tt.Flags&(probe.FlagSYN|probe.FlagFIN) != 0 {
		end++
	}
	answered := false
	var retrans []int
	for _, i := range regular {
		if i <= trigger {
			continue
		}
		p, t := c.Packets[i], ds[i].info.TCP
		if isCopy(c, ds, []int{trigger}, i) {
			retrans = append(retrans, i)
			continue
		}
		if !p.Out && t.Flags&probe.FlagRST == 0 && t.Flags&probe.FlagACK != 0 && int32(t.Ack-end) >= 0 {
			answered = true
		}
	}
	if firstEnd < trigger && answered {
		return st // answered and nothing ended the flow: no failure to point at
	}
	for _, i := range regular {
		if i > trigger && i < firstEnd && !c.Packets[i].Out && ds[i].info.TCP.PayloadLen > 0 {
			return st // the RST or FIN came in the middle of the remote end's data: nothing of ours drew it
		}
	}
	f.Trigger = trigger + 1
	for k, i := range retrans {
		f.Retransmissions = append(f.Retransmissions, i+1)
		st.Notes[i] = fmt.Sprintf("retransmission %d of frame %d", k+1, f.Trigger)
	}
	switch {
	case firstEnd > trigger:
		what := "RST"
		if len(f.Resets) == 0 || f.Resets[0] != firstEnd+1 {
			what = "FIN"
		}
		st.Notes[trigger] = fmt.Sprintf("the segment that drew the %s (frame %d)", what, firstEnd+1)
	case !answered:
		f.Unanswered = true
		st.Notes[trigger] = fmt.Sprintf("unanswered: never acknowledged, %d retransmissions", len(f.Retransmissions))
	}
	return st
}

// triggerOf is our segment the failure answered: the first carrying data
// (or SYN/FIN) after the idle gap, else the last such before the failure.
func triggerOf(c probe.FlowCapture, ds []decoded, before []int, gapAt int) int {
	carries := func(i int) bool {
		t := ds[i].info.TCP
		return c.Packets[i].Out && (t.PayloadLen > 0 || t.Flags&(probe.FlagSYN|probe.FlagFIN) != 0)
	}
	if gapAt > 0 {
		// After an idle gap the failure answers the first use; a RST or
		// FIN while still idle answers nothing of ours.
		for _, i := range before[min(gapAt, len(before)):] {
			if carries(i) {
				return i
			}
		}
		return -1
	}
	for k := len(before) - 1; k >= 0; k-- {
		if carries(before[k]) {
			return before[k]
		}
	}
	return -1
}

// isCopy: packet i is ours and repeats the sequence number, length and
// SYN/FIN of one of ours among kept (a retransmission).
func isCopy(c probe.FlowCapture, ds []decoded, kept []int, i int) bool {
	ti := ds[i].info.TCP
	if !c.Packets[i].Out || (ti.PayloadLen == 0 && ti.Flags&(probe.FlagSYN|probe.FlagFIN) == 0) {
		return false
	}
	for _, j := range kept {
		tj := ds[j].info.TCP
		if c.Packets[j].Out && tj.Seq == ti.Seq && tj.PayloadLen == ti.PayloadLen && tj.Flags&(probe.FlagSYN|probe.FlagFIN) == ti.Flags&(probe.FlagSYN|probe.FlagFIN) {
			return true
		}
	}
	return false
}

func baseline(synAck, ttl int) string {
	if synAck == 0 {
		return "; no SYN-ACK in the capture to compare with"
	}
	return fmt.Sprintf("; SYN-ACK (frame %d) TTL %d = hop %d", synAck, ttl, probe.SenderHop(ttl))
}

// quotedProbe names the frame of ours an ICMP error quotes: the latest
// earlier outgoing segment with the quoted IP ID (IPv4) or length.
func quotedProbe(c probe.FlowCapture, ds []decoded, at int, q *probe.Quoted) (int, string) {
	for j := at - 1; j >= 0; j-- {
		if !c.Packets[j].Out || !ds[j].ok || ds[j].info.TCP == nil {
			continue
		}
		same := ds[j].info.IPID == int(q.IPID)
		if q.Family == 6 {
			same = c.Packets[j].Length == q.TotalLen
		}
		if same && ds[j].info.TCP.Seq == q.TCPSeq {
			return j, fmt.Sprintf("frame %d (TTL %d)", j+1, ds[j].info.TTL)
		}
	}
	return -1, "a segment of the flow"
}

// Title is the one-line description of a capture (pcapng section comment).
func Title(c probe.FlowCapture, what string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hopcheck: %s; flow %s > %s; %d packets", what, c.Local, c.Remote, len(c.Packets))
	if c.Omitted > 0 {
		fmt.Fprintf(&b, " (%d between frames %d and %d not kept: bounded capture)", c.Omitted, c.OmittedAfter, c.OmittedAfter+1)
	}
	return b.String()
}
