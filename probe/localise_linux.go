package probe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LocaliseOptions tune the localisation probes. Zero values mean the
// defaults.
type LocaliseOptions struct {
	// Timeout is how long to wait for an answer that may not come
	// (default 2 s). ProbeInFlow waits less once it knows the path's RTT
	// (5 RTTs, at least 500 ms).
	Timeout time.Duration
	// Attempts is how often a silent in-flow probe is sent (default 2), so
	// that one lost ICMP message does not look like a dropping box.
	Attempts int
	// Log receives progress lines; nil: silent.
	Log func(format string, args ...any)
}

func (o LocaliseOptions) withDefaults() LocaliseOptions {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 2
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	return o
}

// ---------------------------------------------------------------------------
// Raw sockets toward one destination

// rawPath is the raw sockets of one localisation run toward one
// destination, their events queued for the probe loop to read with next.
type rawPath struct {
	*rawSockets
	events chan pathEvent
}

// openPath opens the sockets of cfg; a zero cfg.src is the kernel's
// choice toward cfg.dst.
func openPath(cfg rawSocketsConfig) (*rawPath, error) {
	dst := cfg.dst.Unmap()
	if !dst.IsValid() {
		return nil, fmt.Errorf("raw path: no destination")
	}
	src := cfg.src.Unmap()
	if !src.IsValid() {
		var err error
		if src, err = SourceFor(dst); err != nil {
			return nil, fmt.Errorf("raw path: %w", err)
		}
	}
	if _, err := addrFamily(src, dst); err != nil {
		return nil, fmt.Errorf("raw path: %w", err)
	}
	cfg.dst, cfg.src = dst, src
	socks, err := openRawSockets(cfg)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("raw path toward %s: %w", dst, ErrNoRawAccess)
		}
		return nil, fmt.Errorf("raw path toward %s: %w", dst, err)
	}
	p := &rawPath{rawSockets: socks, events: make(chan pathEvent, 512)}
	p.startReaders(p.emit)
	return p, nil
}

func (p *rawPath) emit(ev pathEvent) {
	select {
	case p.events <- ev:
	case <-p.stopping():
	}
}

// send transmits one probe toward the path's destination (see sendTo).
func (p *rawPath) send(transport []byte, ttl int, ipid uint16, df bool) error {
	return p.sendTo(p.dst, transport, ttl, ipid, df)
}

// next returns the next event, or false at the deadline or when ctx ends.
func (p *rawPath) next(ctx context.Context, deadline time.Time) (pathEvent, bool) {
	d := time.Until(deadline)
	if d <= 0 {
		select {
		case ev := <-p.events:
			return ev, true
		default:
			return pathEvent{}, false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case ev := <-p.events:
		return ev, true
	case <-t.C:
	case <-ctx.Done():
	}
	return pathEvent{}, false
}

// Close stops the readers and closes the sockets.
func (p *rawPath) Close() error {
	p.stop()
	p.waitReaders()
	return nil
}

// referenceQuote is the quote an untouched probe produces at the hop where
// it expires (TTL 1 as Linux quotes it): compared field by field with the
// real quotes through the same decoder.
func referenceQuote(src, dst netip.Addr, proto int, ipid uint16, df bool, transport []byte) (*Quoted, error) {
	if dst.Is4() {
		pkt, err := BuildIPv4(src, dst, proto, 1, ipid, df, transport)
		if err != nil {
			return nil, err
		}
		return decodeQuotedIPv4(pkt)
	}
	h := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(transport))
	h[0] = 6 << 4
	h[4], h[5] = byte(len(transport)>>8), byte(len(transport))
	h[6], h[7] = byte(proto), 1
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return decodeQuotedIPv6(append(h, transport...))
}

// ---------------------------------------------------------------------------
// Quoted-header comparison (tracebox)

// rewriteProbe is one SYN of ProbeRewrites.
type rewriteProbe struct {
	ttl   int
	seq   uint32
	ipid  uint16
	tsval uint32
	ref   *Quoted
}

// ProbeRewrites sends TCP SYNs with known options (MSS 1460, SACK
// permitted, timestamps, window scale 7) toward dst with TTL 1..maxTTL, all
// at once, and compares the quote of every time-exceeded answer with what
// was sent (tracebox's method): per hop, the differences from the probe
// (Changes) and the rewrites attributed to the box at that hop (Rewrites).
// Rows run up to the TTL at which the destination answered (SYN-ACK or
// RST), else to maxTTL. It needs CAP_NET_RAW.
//
// Each probe has its own sequence number, IPv4 ID and TSval (nonce plus
// TTL), so a quote is matched when at least one of them survived. Limits:
// a router quoting only 8 bytes shows ports and seq, not options (Quote
// "partial"); a box rewriting only what the destination sees (after the
// last router that answers) is invisible here; Linux NAT translates the
// quotes of the ICMP errors it forwards back, so a masquerading Linux box
// leaves no trace in them — use ProbeNAT for translation.
func ProbeRewrites(ctx context.Context, dst netip.AddrPort, maxTTL int, opt LocaliseOptions) ([]HopRewrite, error) {
	opt = opt.withDefaults()
	daddr := dst.Addr().Unmap()
	if !daddr.IsValid() || dst.Port() == 0 {
		return nil, fmt.Errorf("probe rewrites: destination %s needs an address and a port", dst)
	}
	if maxTTL < 1 || maxTTL > 255 {
		return nil, fmt.Errorf("probe rewrites: max TTL %d outside 1-255", maxTTL)
	}
	src, err := SourceFor(daddr)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	// A bound, not listening, socket keeps the port ours; the kernel
	// answers the destination's SYN-ACKs with a RST.
	sport, holder, err := reserveTCPPort(src)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	defer holder.Close()
	path, err := openPath(rawSocketsConfig{dst: daddr, src: src, proto: protoTCP, readTCP: true})
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	defer path.Close()
	ident, err := NewIdent(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}

	probes := make([]rewriteProbe, 0, maxTTL)
	for ttl := 1; ttl <= maxTTL; ttl++ {
		pr := rewriteProbe{ttl: ttl, seq: ident.TCPSeq(uint16(ttl)), ipid: uint16(ident.Nonce) + uint16(ttl),
			tsval: ident.Nonce<<16 | uint32(ttl)}
		o := DefaultSYNOptions()
		o.TSVal = pr.tsval
		seg, err := BuildTCPSYN(src, daddr, sport, dst.Port(), pr.seq, 64240, o)
		if err != nil {
			return nil, fmt.Errorf("probe rewrites: %w", err)
		}
		if pr.ref, err = referenceQuote(src, daddr, protoTCP, pr.ipid, true, seg); err != nil {
			return nil, fmt.Errorf("probe rewrites: reference quote: %w", err)
		}
		if err := path.send(seg, ttl, pr.ipid, true); err != nil {
			return nil, fmt.Errorf("probe rewrites: %w", err)
		}
		probes = append(probes, pr)
	}
	opt.Log("rewrites: %d SYNs sent toward %s from port %d", maxTTL, dst, sport)

	rows := make([]HopRewrite, maxTTL)
	for i := range rows {
		rows[i] = HopRewrite{TTL: i + 1, Answer: AnswerNone, Quote: QuoteNone}
	}
	quotes := make([]*Quoted, maxTTL)
	destTTL := 0
	deadline := time.Now().Add(opt.Timeout)
	for !rewritesComplete(rows, destTTL) {
		ev, ok := path.next(ctx, deadline)
		if !ok {
			break
		}
		switch {
		case ev.TCP != nil:
			s := ev.TCP
			if s.SrcPort != dst.Port() || s.DstPort != sport || !(s.Flags.Has(FlagSYN|FlagACK) || s.Flags.Has(FlagRST)) {
				continue
			}
			for _, pr := range probes {
				if s.Ack == pr.seq+1 && (destTTL == 0 || pr.ttl < destTTL) {
					destTTL = pr.ttl
					rows[pr.ttl-1].From, rows[pr.ttl-1].Answer = ev.From, AnswerDestination
				}
			}
		case ev.ICMP != nil && ev.ICMP.Quoted != nil:
			q := ev.ICMP.Quoted
			if q.Protocol != protoTCP || (q.Dst.Unmap() != daddr && q.DstPort != dst.Port()) {
				continue
			}
			pr, ok := matchRewriteProbe(probes, q)
			if !ok || rows[pr.ttl-1].Answer != AnswerNone {
				continue
			}
			row := &rows[pr.ttl-1]
			row.From = ev.From
			row.Answer = AnswerUnreachable
			if ev.ICMP.Kind == KindTimeExceeded {
				row.Answer = AnswerTimeExceeded
			}
			quotes[pr.ttl-1] = q
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe rewrites toward %s: %w", dst, err)
	}
	last := maxTTL
	if destTTL > 0 {
		last = destTTL
	}
	rows = rows[:last]
	for i := range rows {
		if q := quotes[i]; q != nil && rows[i].Answer != AnswerDestination {
			rows[i].Quote, rows[i].fields = compareQuote(probes[i].ref, q)
		}
	}
	finishRewrites(rows)
	return rows, nil
}

// rewritesComplete: every TTL below the destination's has its answer.
func rewritesComplete(rows []HopRewrite, destTTL int) bool {
	if destTTL == 0 {
		return false
	}
	for _, r := range rows[:destTTL-1] {
		if r.Answer == AnswerNone {
			return false
		}
	}
	return true
}

// matchRewriteProbe finds the probe a quote belongs to by whichever of
// its identities survived: sequence number, IPv4 ID, TSval.
func matchRewriteProbe(probes []rewriteProbe, q *Quoted) (rewriteProbe, bool) {
	for _, pr := range probes {
		if len(q.Transport) >= 8 && q.TCPSeq == pr.seq {
			return pr, true
		}
	}
	for _, pr := range probes {
		if q.Family == 4 && q.IPID == pr.ipid {
			return pr, true
		}
		if q.TCP != nil && q.TCP.Options.Timestamps && q.TCP.Options.TSVal == pr.tsval {
			return pr, true
		}
	}
	return rewriteProbe{}, false
}

// ---------------------------------------------------------------------------
// NAT

// ProbeNAT compares our end of a connection (sent) with the same end as
// the server reported it (seen, e.g. from an echo of the peer address; zero
// if unknown) and, when the address was translated, locates the box that
// owns the translated address: ICMP echo requests to it with TTL
// 1..maxTTL, the smallest TTL it answers at being its hop, and a
// time-exceeded probe toward dst at that TTL for the address the hop shows
// in a trace.
//
// Why not the quotes: Linux conntrack translates the quoted header of the
// ICMP errors it forwards back (nf_nat_icmp_reply_translation), addresses,
// ports and checksums alike, so behind a masquerading Linux box every quote
// looks untouched. Limits: the translated address must answer ping (a
// masquerading router answers for its own interface address; a NAT pool
// address may not), and a NAT that keeps the address and changes only the
// port cannot be located this way (Hop 0). Without a server view, a
// private source talking to a public destination still proves a NAT, not
// where.
func ProbeNAT(ctx context.Context, sent, seen netip.AddrPort, dst netip.Addr, maxTTL int, opt LocaliseOptions) (NATResult, error) {
	opt = opt.withDefaults()
	r := natVerdict(sent, seen, dst)
	if r.Translated != TriYes || !r.Seen.IsValid() {
		return r, nil
	}
	if r.Seen.Addr() == r.Sent.Addr() {
		r.Evidence += "; only the port changed, so the translating box cannot be located by its address"
		return r, nil
	}
	if maxTTL < 1 || maxTTL > 255 {
		return r, fmt.Errorf("probe nat: max TTL %d outside 1-255", maxTTL)
	}
	public := r.Seen.Addr()
	if !public.IsGlobalUnicast() || public.Is4() != dst.Unmap().Is4() {
		r.Evidence += fmt.Sprintf("; %s cannot be probed toward %s", public, dst)
		return r, nil
	}
	hop, hopAddr, err := echoDistance(ctx, public, dst.Unmap(), maxTTL, opt)
	if err != nil {
		return r, fmt.Errorf("probe nat: %w", err)
	}
	if hop == 0 {
		r.Evidence += fmt.Sprintf("; %s did not answer echo requests with TTL up to %d, so the NAT is not located", public, maxTTL)
		return r, nil
	}
	r.Hop, r.HopAddress = hop, hopAddr
	r.Evidence += fmt.Sprintf("; %s answers echo requests from TTL %d on, so the box owning it is hop %d", public, hop, hop)
	if hopAddr.IsValid() {
		r.Evidence += fmt.Sprintf(" (time-exceeded from %s toward %s)", hopAddr, dst.Unmap())
	}
	return r, nil
}

// echoDistance sends ICMP echo requests to target with TTL 1..maxTTL and
// to dst with the same TTLs, and returns the smallest TTL at which target
// itself replied and the address that answered time-exceeded toward dst
// at that TTL (zero if none).
func echoDistance(ctx context.Context, target, dst netip.Addr, maxTTL int, opt LocaliseOptions) (int, netip.Addr, error) {
	path, err := openPath(rawSocketsConfig{dst: dst, proto: protoICMP})
	if err != nil {
		return 0, netip.Addr{}, err
	}
	defer path.Close()
	ident, err := NewIdent(rand.Reader)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	family := 4
	if dst.Is6() {
		family = 6
	}
	// Index ttl: toward dst; 256+ttl: toward target.
	for ttl := 1; ttl <= maxTTL; ttl++ {
		for _, to := range []struct {
			addr netip.Addr
			idx  uint16
		}{{dst, uint16(ttl)}, {target, uint16(256 + ttl)}} {
			b, err := BuildICMPEcho(family, path.src, to.addr, ident.ICMPID(), to.idx, ident.FlowChecksum(int(to.idx)), ident.Payload(to.idx, 16))
			if err != nil {
				return 0, netip.Addr{}, err
			}
			if err := path.sendTo(to.addr, b, ttl, to.idx, true); err != nil {
				return 0, netip.Addr{}, err
			}
		}
	}
	hop := 0
	teFrom := map[int]netip.Addr{}
	deadline := time.Now().Add(opt.Timeout)
	for !echoDistanceComplete(hop, teFrom) {
		ev, ok := path.next(ctx, deadline)
		if !ok {
			break
		}
		m := ev.ICMP
		if m == nil {
			continue
		}
		switch {
		case m.Kind == KindEchoReply && m.EchoID == ident.ICMPID() && ev.From == target && m.EchoSeq > 256:
			if t := int(m.EchoSeq) - 256; hop == 0 || t < hop {
				hop = t
			}
		case m.Kind == KindTimeExceeded && m.Quoted != nil:
			idx, ok := ident.IndexFromQuoted(m.Quoted, ICMP)
			if ok && idx >= 1 && int(idx) <= maxTTL && m.Quoted.Dst.Unmap() == dst {
				teFrom[int(idx)] = ev.From
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, netip.Addr{}, err
	}
	return hop, teFrom[hop], nil
}

// echoDistanceComplete: the target answered at hop, and every smaller TTL
// expired on the way toward dst (so none of them reached the target).
func echoDistanceComplete(hop int, teFrom map[int]netip.Addr) bool {
	if hop == 0 {
		return false
	}
	for t := 1; t <= hop; t++ {
		if !teFrom[t].IsValid() {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// In-flow TTL-limited probes

// FlowStateFromConn reads the state of an idle, established connection:
// both initial sequence numbers from its SYN-ACK (as a flow observer
// captured it, e.g. Observer.Flow(port).SynAck) and the bytes sent and
// received since from the kernel (TCP_INFO, no privilege needed). The
// window to send is ours as the kernel last advertised it (Linux 6.2+).
//
// Why this way: TCP_INFO has no sequence numbers, and TCP_REPAIR (which
// has) needs CAP_NET_ADMIN and freezes the socket; capturing the flow's
// segments needs a capture running since its last exchange, while the
// observer already records every SYN-ACK and the counters are the
// kernel's own, exact even when a capture missed a packet. The connection
// must be idle (nothing unacknowledged or unsent) and established.
func FlowStateFromConn(conn *net.TCPConn, synAck Segment) (FlowState, error) {
	local, remote := conn.LocalAddr().(*net.TCPAddr).AddrPort(), conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	rc, err := conn.SyscallConn()
	if err != nil {
		return FlowState{}, fmt.Errorf("flow state of %s: %w", local, err)
	}
	var raw []byte
	var gerr error
	if err := rc.Control(func(fd uintptr) { raw, gerr = getTCPInfo(int(fd)) }); err != nil {
		return FlowState{}, fmt.Errorf("flow state of %s: %w", local, err)
	}
	if gerr != nil {
		return FlowState{}, fmt.Errorf("flow state of %s: TCP_INFO: %w", local, gerr)
	}
	info, err := decodeTCPInfo(raw)
	if err != nil {
		return FlowState{}, fmt.Errorf("flow state of %s: %w", local, err)
	}
	return flowStateFromInfo(local, remote, synAck, info)
}

// getTCPInfo returns the raw struct tcp_info of a socket (the kernel's
// size: x/sys's TCPInfo hides the window scale bit fields).
func getTCPInfo(fd int) ([]byte, error) {
	buf := make([]byte, 512)
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return nil, errno
	}
	return buf[:min(int(n), len(buf))], nil
}

// ProbeInFlow sends segments of flow's own 5-tuple with TTL 1..maxTTL,
// one TTL at a time, and records per TTL what answered: time-exceeded
// (from a router), a RST or an ICMP unreachable (from a box that lost or
// refuses the flow), the server's ACK, or nothing. Probing stops at the
// first TCP answer: every larger TTL meets the same box. It needs
// CAP_NET_RAW.
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
func ProbeInFlow(ctx context.Context, flow FlowState, maxTTL int, opt LocaliseOptions) ([]InFlowAnswer, error) {
	opt = opt.withDefaults()
	local, remote := netip.AddrPortFrom(flow.Local.Addr().Unmap(), flow.Local.Port()), netip.AddrPortFrom(flow.Remote.Addr().Unmap(), flow.Remote.Port())
	if !local.IsValid() || !remote.IsValid() || local.Port() == 0 || remote.Port() == 0 {
		return nil, fmt.Errorf("probe in-flow: flow %s > %s needs addresses and ports", flow.Local, flow.Remote)
	}
	if _, err := addrFamily(local.Addr(), remote.Addr()); err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	if maxTTL < 1 || maxTTL > 255 {
		return nil, fmt.Errorf("probe in-flow: max TTL %d outside 1-255", maxTTL)
	}
	if err := checkLocalAddr(local.Addr()); err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	path, err := openPath(rawSocketsConfig{dst: remote.Addr(), src: local.Addr(), proto: protoTCP, readTCP: true})
	if err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	defer path.Close()
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
	for ttl := 1; ttl <= maxTTL; ttl++ {
		n := 1
		if v6 {
			n = ttl
		}
		seg, err := BuildTCPSegment(local.Addr(), remote.Addr(), local.Port(), remote.Port(), flow.Seq-uint32(n), flow.Ack, FlagACK, window, make([]byte, n))
		if err != nil {
			return answers, fmt.Errorf("probe in-flow: %w", err)
		}
		ans := InFlowAnswer{TTL: ttl, Kind: InFlowNone, ReplyTTL: -1}
		for attempt := 0; attempt < opt.Attempts && ans.Kind == InFlowNone; attempt++ {
			sentAt := time.Now()
			if err := path.send(seg, ttl, ipidBase+uint16(ttl), true); err != nil {
				return answers, fmt.Errorf("probe in-flow: %w", err)
			}
			deadline := sentAt.Add(wait)
			for ans.Kind == InFlowNone {
				ev, ok := path.next(ctx, deadline)
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
		}
		answers = append(answers, ans)
		opt.Log("in-flow %s > %s ttl %d: %s %s", local, remote, ttl, ans.Kind, ans.From)
		if ans.Kind == InFlowRST || ans.Kind == InFlowACK {
			break
		}
	}
	return answers, nil
}

// inFlowAnswerOf classifies an event as the answer to the in-flow probe
// with ttl or, for an ICMP error whose quote identifies it, to one with a
// smaller TTL; false when it belongs to something else. A RST or ACK
// cannot tell which probe it answers: it goes to the one in flight.
func inFlowAnswerOf(ev pathEvent, local, remote netip.AddrPort, flow FlowState, ttl int, ipidBase uint16, v6 bool) (InFlowAnswer, bool) {
	a := InFlowAnswer{TTL: ttl, From: ev.From, ReplyTTL: ev.ReplyTTL}
	if s := ev.TCP; s != nil {
		if ev.From != remote.Addr() || s.SrcPort != remote.Port() || s.DstPort != local.Port() {
			return InFlowAnswer{}, false
		}
		switch {
		case s.Flags.Has(FlagRST):
			a.Kind = InFlowRST
		case s.Flags.Has(FlagACK) && s.PayloadLen == 0 && s.Ack == flow.Seq:
			a.Kind = InFlowACK
		default:
			return InFlowAnswer{}, false // the flow's own traffic
		}
		a.SenderHop = SenderHop(ev.ReplyTTL)
		return a, true
	}
	m := ev.ICMP
	if m == nil || m.Quoted == nil {
		return InFlowAnswer{}, false
	}
	q := m.Quoted
	if q.Protocol != protoTCP || q.Dst.Unmap() != remote.Addr() || q.SrcPort != local.Port() || q.DstPort != remote.Port() {
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
	case KindTimeExceeded:
		a.Kind = InFlowTimeExceeded
	case KindDestUnreachable, KindParamProblem, KindPacketTooBig:
		a.Kind = InFlowUnreachable
	default:
		return InFlowAnswer{}, false
	}
	return a, true
}

// checkLocalAddr fails unless a is an address of this host: in-flow
// probes are sent in the name of a connection of ours, never anyone
// else's.
func checkLocalAddr(a netip.Addr) error {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		return fmt.Errorf("%s is not an address of this host: %w", a, err)
	}
	return c.Close()
}
