package localise

// In-flow TTL-limited probes (intrace / 0trace): segments of an existing
// flow's own 5-tuple, TTL 1..n, and what answers them.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// FlowState is an established TCP flow as its probes must look: the
// 5-tuple and the sequence numbers that make a segment valid for the
// server and for every stateful box on the path.
type FlowState struct {
	Local, Remote netip.AddrPort
	Seq           uint32 // next sequence number we send (snd.nxt; snd.una of a flow with data in flight)
	Ack           uint32 // next sequence number we expect (rcv.nxt)
	// Window is the raw window field to send (already scaled down); 0:
	// 1024. The probes rarely update the server's view of it (see
	// ProbeInFlow).
	Window uint16
}

// InFlowKind is what answered an in-flow probe.
type InFlowKind string

// In-flow answers.
const (
	InFlowTimeExceeded InFlowKind = "time-exceeded"
	InFlowRST          InFlowKind = "rst"
	InFlowACK          InFlowKind = "ack"         // the server's acknowledgment: it has the flow
	InFlowUnreachable  InFlowKind = "unreachable" // an ICMP error other than time-exceeded
	InFlowNone         InFlowKind = "none"
)

// InFlowAnswer is what came back for the segments sent with one TTL
// (docs/schema-run.md, InFlowAnswer).
type InFlowAnswer struct {
	TTL  int        `json:"ttl"`
	From string     `json:"from"` // "": nothing; for rst/ack the (claimed) sender
	Kind InFlowKind `json:"kind"`
	// ReplyTTL is the IP TTL of the answer as received (-1 unknown);
	// SenderHop the hop it implies for a RST or ACK (0 unknown).
	ReplyTTL  int `json:"reply_ttl,omitempty"`
	SenderHop int `json:"sender_hop,omitempty"`
}

// InFlowNotTested is the behaviour of an in-flow confirmation that did
// not run (Reason says why).
const InFlowNotTested = "not-tested"

// InFlow compares, per TTL, what answered a segment of a flow before and
// after it went idle past the timeout, as the run report holds it
// (docs/schema-run.md, InFlow).
type InFlow struct {
	Flow    string         `json:"flow"` // "client:port > server:port"
	Healthy []InFlowAnswer `json:"healthy"`
	Expired []InFlowAnswer `json:"expired"`
	// Hop is where the state was lost (ExplainStateLoss): the box that
	// resets (the RST's TTL places it; else the last hop answering
	// time-exceeded before the first RST), or the last hop that still
	// answered time-exceeded before the silence (drop).
	Hop        int    `json:"hop"`
	HopAddress string `json:"hop_address"`
	// HopUpTo: when the evidence allows several hops (silent routers, a RST
	// of unknown TTL), the box is one of Hop..HopUpTo; equal when exact.
	HopUpTo int `json:"hop_up_to,omitempty"`
	// Behaviour is a LossBehaviour, or InFlowNotTested.
	Behaviour string `json:"behaviour"`
	Reason    string `json:"reason,omitempty"`
	// Outcome: yes when a hop (or the server) lost the flow, no when the
	// expired flow was answered like the healthy one, not-tested when not
	// run, undetermined or failed (Error).
	Outcome
}

// NewInFlow is the in-flow record of a flow from its two runs.
func NewInFlow(flow string, healthy, expired []InFlowAnswer) InFlow {
	loss := ExplainStateLoss(healthy, expired)
	in := InFlow{Flow: flow, Healthy: healthy, Expired: expired,
		Behaviour: string(loss.Behaviour), Hop: loss.Hop, HopUpTo: loss.UpTo, Reason: loss.Reason}
	for _, a := range healthy {
		if a.TTL == loss.Hop && a.From != "" {
			in.HopAddress = a.From
		}
	}
	switch loss.Behaviour {
	case LossNone:
		in.Status = tri.No
	case LossUndetermined:
		in.Status = tri.NotTested
	default:
		in.Status = tri.Yes
	}
	return in
}

// InFlowFailed is the in-flow record of a confirmation that stopped on
// err (reason: the report's words for it, as before the Error field).
func InFlowFailed(flow, reason string, err error) InFlow {
	in := InFlow{Flow: flow, Behaviour: string(LossUndetermined), Reason: reason, Outcome: Outcome{Status: tri.NotTested}}
	if err != nil {
		in.Error = err.Error()
	}
	return in
}

// InFlowSkipped is the in-flow record of a confirmation not run.
func InFlowSkipped(reason string) InFlow {
	return InFlow{Behaviour: InFlowNotTested, Reason: reason, Outcome: Outcome{Status: tri.NotTested}}
}

// TimeExceededFrom returns, by TTL, the routers that answered with
// time-exceeded.
func TimeExceededFrom(answers []InFlowAnswer) map[int]string {
	found := map[int]string{}
	for _, a := range answers {
		if a.Kind == InFlowTimeExceeded {
			found[a.TTL] = a.From
		}
	}
	return found
}

// FlowStateFromConn reads the state of an idle, established connection:
// both initial sequence numbers from its SYN-ACK (as a flow observer
// captured it, e.g. probe.Observer.Flow(port).SynAck) and the bytes sent
// and received since from the kernel (TCP_INFO, no privilege needed). The
// window to send is ours as the kernel last advertised it (Linux 6.2+).
//
// Why this way: TCP_INFO has no sequence numbers, and TCP_REPAIR (which
// has) needs CAP_NET_ADMIN and freezes the socket; capturing the flow's
// segments needs a capture running since its last exchange, while the
// observer already records every SYN-ACK and the counters are the
// kernel's own, exact even when a capture missed a packet. The connection
// must be idle (nothing unacknowledged or unsent) and established.
func FlowStateFromConn(conn *net.TCPConn, synAck probe.Segment) (FlowState, error) {
	local, remote := conn.LocalAddr().(*net.TCPAddr).AddrPort(), conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	info, err := probe.ReadTCPInfo(conn)
	if err != nil {
		return FlowState{}, fmt.Errorf("flow state of %s: %w", local, err)
	}
	return flowStateFromInfo(local, remote, synAck, info)
}

// flowStateFromInfo derives the sequence numbers of an idle flow from
// its SYN-ACK (both initial sequence numbers) and the kernel's byte
// counters. Linux counts our SYN in bytes_acked (tcp_ack runs on the
// SYN-ACK) but not the server's in bytes_received; the SYN's share is
// measured rather than assumed: with nothing unacknowledged, bytes_acked
// is the data sent once (bytes_sent - bytes_retrans) plus 0 or 1.
func flowStateFromInfo(local, remote netip.AddrPort, synAck probe.Segment, info probe.TCPInfo) (FlowState, error) {
	if !synAck.Flags.Has(probe.FlagSYN | probe.FlagACK) {
		return FlowState{}, fmt.Errorf("flow state of %s: the segment given is not a SYN-ACK (flags %s)", local, flagNames(synAck.Flags))
	}
	if synAck.Src.Port() != remote.Port() || synAck.Dst.Port() != local.Port() {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: the SYN-ACK is of %s > %s", local, remote, synAck.Src, synAck.Dst)
	}
	if info.State != probe.TCPStateEstablished {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: TCP state %d, not established", local, remote, info.State)
	}
	if info.Unacked != 0 || info.NotSent != 0 {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: not idle (%d segments unacknowledged, %d bytes not sent): the next sequence number is unknown", local, remote, info.Unacked, info.NotSent)
	}
	once := info.BytesSent - info.BytesRetrans
	syn := info.BytesAcked - once
	if info.BytesRetrans > info.BytesSent || info.BytesAcked < once || syn > 1 {
		return FlowState{}, fmt.Errorf("flow state of %s > %s: TCP_INFO counters disagree (acked %d, sent %d, retransmitted %d)", local, remote, info.BytesAcked, info.BytesSent, info.BytesRetrans)
	}
	w := uint16(0xffff)
	if info.RcvWnd > 0 {
		if v := info.RcvWnd >> info.RcvWScale; v < 0xffff {
			w = uint16(max(v, 1))
		}
	} else {
		w = 0
	}
	return FlowState{
		Local: local, Remote: remote,
		Seq:    synAck.Ack + uint32(info.BytesAcked-syn),
		Ack:    synAck.Seq + 1 + uint32(info.BytesReceived),
		Window: w,
	}, nil
}

// ProbeInFlow sends segments of flow's own 5-tuple through path (a TCP
// path toward flow.Remote from flow.Local's address) with TTL 1..maxTTL,
// one TTL at a time, and records per TTL what answered: time-exceeded
// (from a router), a RST or an ICMP unreachable (from a box that lost or
// refuses the flow), the server's ACK, or nothing. A TTL left unanswered
// is sent again (Options.Attempts), no sooner than Options.Backoff after
// the previous segment that expired at the same router, so that a router
// whose ICMP rate limit is spent is not taken for a silent or dropping
// one. Probing stops at the first TCP answer: every larger TTL meets the
// same box.
//
// The segments carry already-acknowledged data ending at flow.Seq (seq =
// Seq-n, n bytes, ack = Ack): valid for every stateful box (conntrack
// accepts a retransmission), discarded by the server, which answers it at
// once with a duplicate ACK (Linux: quick ACK, not rate limited, since
// the segment ends exactly at rcv_nxt). Unlike a pure ACK, it normally
// leaves the server's view of our window alone (its seq is before the
// last window update) and it proves the server still has the flow. IPv4
// probes carry one byte and the TTL in the IP ID; IPv6 has no IP ID, so
// there the TTL is the number of bytes (the quoted payload length tells
// the probes apart). The bytes are zeros: the server does not compare
// retransmitted data, but a normalising IPS that does may object. No
// timestamp option is sent (Linux accepts segments without one; stacks
// enforcing RFC 7323's drop rule will not answer at the server's TTL).
func ProbeInFlow(ctx context.Context, path Path, flow FlowState, maxTTL int, opt Options) ([]InFlowAnswer, error) {
	opt = opt.withDefaults()
	local, remote, err := checkFlow(flow, maxTTL)
	if err != nil {
		return nil, err
	}
	var nonce [2]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	ipidBase := uint16(nonce[0])<<8 | uint16(nonce[1])
	window := flow.Window
	if window == 0 {
		window = 1024
	}
	v6 := remote.Addr().Is6()
	wait := opt.Timeout
	var maxRTT time.Duration
	answers := make([]InFlowAnswer, 0, maxTTL)
	silent := 0
	for ttl := 1; ttl <= maxTTL; ttl++ {
		n := 1
		if v6 {
			n = ttl
		}
		seg, err := probe.BuildTCPSegment(local.Addr(), remote.Addr(), local.Port(), remote.Port(), flow.Seq-uint32(n), flow.Ack, probe.FlagACK, window, make([]byte, n))
		if err != nil {
			return answers, fmt.Errorf("probe in-flow: %w", err)
		}
		ans := InFlowAnswer{TTL: ttl, Kind: InFlowNone, ReplyTTL: -1}
		for attempt := 1; attempt <= opt.Attempts && ans.Kind == InFlowNone; attempt++ {
			sentAt := time.Now()
			if err := path.Send(remote.Addr(), seg, ttl, ipidBase+uint16(ttl), true); err != nil {
				return answers, fmt.Errorf("probe in-flow: %w", err)
			}
			deadline := sentAt.Add(wait)
			for ans.Kind == InFlowNone {
				ev, ok := path.Next(ctx, deadline)
				if !ok {
					break
				}
				a, ok := inFlowAnswerOf(ev, local, remote, flow, ttl, ipidBase, v6)
				switch {
				case !ok:
				case a.TTL == ttl:
					ans = a
					maxRTT = max(maxRTT, ev.At.Sub(sentAt))
					wait = min(opt.Timeout, max(5*maxRTT, 500*time.Millisecond))
				case answers[a.TTL-1].Kind == InFlowNone:
					answers[a.TTL-1] = a // an earlier TTL's answer, late
				}
			}
			if err := ctx.Err(); err != nil {
				return answers, fmt.Errorf("probe in-flow %s > %s: %w", local, remote, err)
			}
			if ans.Kind == InFlowNone && attempt < opt.Attempts && !opt.Sleep(ctx, opt.Backoff-time.Since(sentAt)) {
				return answers, fmt.Errorf("probe in-flow %s > %s: %w", local, remote, ctx.Err())
			}
		}
		answers = append(answers, ans)
		opt.Log("in-flow %s > %s ttl %d: %s %s", local, remote, ttl, ans.Kind, ans.From)
		if ans.Kind == InFlowRST || ans.Kind == InFlowACK {
			break
		}
		if silent++; ans.Kind != InFlowNone {
			silent = 0
		}
		if opt.MaxSilentTTLs > 0 && silent >= opt.MaxSilentTTLs {
			opt.Log("in-flow %s > %s: %d TTLs in a row silent, stopping at TTL %d", local, remote, silent, ttl)
			break
		}
	}
	return answers, nil
}

// checkFlow validates a flow to probe and returns its ends, unmapped.
func checkFlow(flow FlowState, maxTTL int) (local, remote netip.AddrPort, err error) {
	local, remote = netip.AddrPortFrom(flow.Local.Addr().Unmap(), flow.Local.Port()), netip.AddrPortFrom(flow.Remote.Addr().Unmap(), flow.Remote.Port())
	if !local.IsValid() || !remote.IsValid() || local.Port() == 0 || remote.Port() == 0 {
		return local, remote, fmt.Errorf("probe in-flow: flow %s > %s needs addresses and ports", flow.Local, flow.Remote)
	}
	if local.Addr().Is4() != remote.Addr().Is4() {
		return local, remote, fmt.Errorf("probe in-flow: flow %s > %s mixes address families", local, remote)
	}
	if maxTTL < 1 || maxTTL > 255 {
		return local, remote, fmt.Errorf("probe in-flow: max TTL %d outside 1-255", maxTTL)
	}
	return local, remote, nil
}

// inFlowAnswerOf classifies an event as the answer to the in-flow probe
// with ttl or, for an ICMP error whose quote identifies it, to one with a
// smaller TTL; false when it belongs to something else. A RST or ACK
// cannot tell which probe it answers: it goes to the one in flight.
func inFlowAnswerOf(ev probe.PathEvent, local, remote netip.AddrPort, flow FlowState, ttl int, ipidBase uint16, v6 bool) (InFlowAnswer, bool) {
	a := InFlowAnswer{TTL: ttl, ReplyTTL: ev.ReplyTTL}
	if ev.From.IsValid() {
		a.From = ev.From.String()
	}
	if s := ev.TCP; s != nil {
		if ev.From != remote.Addr() || s.SrcPort != remote.Port() || s.DstPort != local.Port() {
			return InFlowAnswer{}, false
		}
		switch {
		case s.Flags.Has(probe.FlagRST):
			a.Kind = InFlowRST
		case s.Flags.Has(probe.FlagACK) && s.PayloadLen == 0 && s.Ack == flow.Seq:
			a.Kind = InFlowACK
		default:
			return InFlowAnswer{}, false // the flow's own traffic
		}
		a.SenderHop = probe.SenderHop(ev.ReplyTTL)
		return a, true
	}
	m := ev.ICMP
	if m == nil || m.Quoted == nil {
		return InFlowAnswer{}, false
	}
	q := m.Quoted
	if q.Protocol != ipProtoTCP || q.Dst.Unmap() != remote.Addr() || q.SrcPort != local.Port() || q.DstPort != remote.Port() {
		return InFlowAnswer{}, false
	}
	// The probe with TTL t carries t bytes (IPv6) or IP ID base+t (IPv4).
	t := int(q.IPID - ipidBase)
	if v6 {
		t = q.TotalLen - ipv6HeaderLen - tcpMinHeaderLen
	}
	if t < 1 || t > ttl {
		return InFlowAnswer{}, false
	}
	a.TTL = t
	switch m.Kind {
	case probe.KindTimeExceeded:
		a.Kind = InFlowTimeExceeded
	case probe.KindDestUnreachable, probe.KindParamProblem, probe.KindPacketTooBig:
		a.Kind = InFlowUnreachable
	default:
		return InFlowAnswer{}, false
	}
	return a, true
}
