package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// HasRawAccess reports whether this process may open raw sockets
// (CAP_NET_RAW in its network namespace).
func HasRawAccess() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// rawProber sends hand-built packets through raw sockets and reads every
// ICMP message (and, for TCP, every TCP segment) the host receives,
// keeping those that carry its identity.
type rawProber struct {
	cfg   Config
	ident Ident
	src   netip.Addr
	// ports are the reserved source ports, one per Paris flow.
	ports   []uint16
	holders []io.Closer
	socks   *rawSockets

	pending   *pendingTable
	responses chan Response
	closeOnce sync.Once
	// sendMu serialises sends; readers pass it before matching, so that a
	// probe's send time is final when its answer is timed.
	sendMu sync.Mutex
	// tx sends with kernel transmit stamps; nil: through socks, stamped
	// right before the send.
	tx *txSender
}

func newRawProber(ctx context.Context, cfg Config, ident Ident) (Prober, error) {
	src, err := SourceFor(cfg.Dst)
	if err != nil {
		return nil, fmt.Errorf("raw prober: %w", err)
	}
	p := &rawProber{
		cfg: cfg, ident: ident, src: src,
		pending:   newPendingTable(),
		responses: make(chan Response, 256),
	}
	if cfg.Protocol != ICMP {
		ports, holders, err := reservePorts(cfg.Protocol, src, cfg.Flows)
		p.holders = holders
		if err != nil {
			p.closeHolders()
			return nil, fmt.Errorf("raw prober toward %s: %w", cfg.Dst, err)
		}
		p.ports = ports
	}
	// Kernel receive stamps keep the reading goroutines' scheduling lag
	// out of the RTTs.
	p.socks, err = openRawSockets(rawSocketsConfig{dst: cfg.Dst, src: src, proto: ipProto(cfg.Protocol, cfg.Dst),
		readTCP: cfg.Protocol == TCP, icmp6AllLocal: true, kernelStamps: true})
	if err != nil {
		p.closeHolders()
		return nil, fmt.Errorf("raw prober toward %s: %w", cfg.Dst, err)
	}
	if tx, err := openTxSender(src, ipProto(cfg.Protocol, cfg.Dst)); err == nil {
		p.tx = tx
	}
	p.socks.startReaders(p.handle)
	go func() {
		p.socks.waitReaders()
		close(p.responses)
	}()
	return p, nil
}

func (p *rawProber) Privilege() Privilege       { return PrivilegeRaw }
func (p *rawProber) Responses() <-chan Response { return p.responses }

// reservePorts binds one socket per flow so that no other program (or
// the kernel's ephemeral allocator) uses our source ports meanwhile.
func reservePorts(proto Protocol, src netip.Addr, n int) ([]uint16, []io.Closer, error) {
	var ports []uint16
	var holders []io.Closer
	for i := 0; i < n; i++ {
		switch proto {
		case UDP:
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
			if err != nil {
				return nil, holders, fmt.Errorf("reserve udp port: %w", err)
			}
			holders = append(holders, c)
			ports = append(ports, uint16(c.LocalAddr().(*net.UDPAddr).Port))
		case TCP:
			port, h, err := reserveTCPPort(src)
			if err != nil {
				return nil, holders, err
			}
			holders = append(holders, h)
			ports = append(ports, port)
		}
	}
	return ports, holders, nil
}

type fdCloser int

func (f fdCloser) Close() error { return unix.Close(int(f)) }

// reserveTCPPort binds (without listening) a TCP socket to an ephemeral
// port: the kernel answers SYN-ACKs to it with a RST, as traceroute -T's
// do, and never hands the port to another connection meanwhile.
func reserveTCPPort(src netip.Addr) (uint16, io.Closer, error) {
	family := unix.AF_INET
	if src.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("reserve tcp port: %w", err)
	}
	var sa unix.Sockaddr
	if src.Is4() {
		sa = &unix.SockaddrInet4{Addr: src.As4()}
	} else {
		sa = &unix.SockaddrInet6{Addr: src.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return 0, nil, fmt.Errorf("reserve tcp port: bind: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return 0, nil, fmt.Errorf("reserve tcp port: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return uint16(port), fdCloser(fd), nil
}

func (p *rawProber) flowPort(flow int) uint16 {
	if len(p.ports) == 0 {
		return 0
	}
	return p.ports[flow%len(p.ports)]
}

func (p *rawProber) Send(pr *Probe) error {
	if err := p.cfg.accepts(pr); err != nil {
		return err
	}
	pr.DstPort = p.cfg.DstPort
	p.pending.add(pr)
	pkt, err := p.buildTransport(pr)
	if err != nil {
		p.pending.take(pr.ID)
		return err
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	// A send time before the packet leaves, final once the kernel's
	// transmit stamp is read (readers wait for sendMu before timing).
	now := time.Now()
	pr.SentAt = now
	p.pending.setSent(pr.ID, now)
	if p.tx != nil {
		at, _, err := p.tx.send(p.src, p.cfg.Dst, ipProto(p.cfg.Protocol, p.cfg.Dst), pkt, pr.TTL, pr.ID, true)
		if err != nil {
			p.pending.take(pr.ID)
			return fmt.Errorf("send %s probe: %w", pr.Protocol, err)
		}
		now = at
		pr.SentAt = now
		p.pending.setSent(pr.ID, now)
	} else if err := p.socks.sendTo(p.cfg.Dst, pkt, pr.TTL, pr.ID, true); err != nil {
		p.pending.take(pr.ID)
		return fmt.Errorf("send %s probe: %w", pr.Protocol, err)
	}
	p.pending.expire(now.Add(-2 * time.Minute))
	return nil
}

// buildTransport returns the transport packet of pr.
func (p *rawProber) buildTransport(pr *Probe) ([]byte, error) {
	switch pr.Protocol {
	case TCP:
		return BuildTCPSYN(p.src, p.cfg.Dst, p.flowPort(pr.Flow), p.cfg.DstPort, p.ident.TCPSeq(pr.ID), 64240, DefaultSYNOptions())
	case UDP:
		return BuildUDP(p.src, p.cfg.Dst, p.flowPort(pr.Flow), p.cfg.DstPort, p.ident.UDPChecksum(pr.ID), p.ident.Payload(pr.ID, 16))
	case ICMP:
		family := 4
		if p.cfg.Dst.Is6() {
			family = 6
		}
		return BuildICMPEcho(family, p.src, p.cfg.Dst, p.ident.ICMPID(), pr.ID, p.ident.FlowChecksum(pr.Flow), p.ident.Payload(pr.ID, 16))
	}
	return nil, fmt.Errorf("build probe: unknown protocol %q", pr.Protocol)
}

// handle matches an event of the raw sockets to a pending probe.
func (p *rawProber) handle(ev pathEvent) {
	// A probe being sent has its final send time once sendMu is free.
	p.sendMu.Lock()
	p.sendMu.Unlock() //nolint:staticcheck // a barrier, not a critical section
	if ev.TCP != nil {
		p.handleTCP(ev)
		return
	}
	p.handleICMP(ev)
}

func (p *rawProber) isOurPort(port uint16) bool {
	for _, q := range p.ports {
		if q == port {
			return true
		}
	}
	return false
}

// handleICMP matches an ICMP message to a pending probe.
func (p *rawProber) handleICMP(ev pathEvent) {
	m, from := *ev.ICMP, ev.From
	var idx uint16
	switch {
	case m.Kind == KindEchoReply:
		if p.cfg.Protocol != ICMP || from != p.cfg.Dst || m.EchoID != p.ident.ICMPID() {
			return
		}
		idx = m.EchoSeq
	case m.Quoted != nil:
		q := m.Quoted
		if q.Dst.Unmap() != p.cfg.Dst || q.Protocol != ipProto(p.cfg.Protocol, p.cfg.Dst) {
			return
		}
		if p.cfg.Protocol != ICMP && (!p.isOurPort(q.SrcPort) || q.DstPort != p.cfg.DstPort) {
			return
		}
		var ok bool
		if idx, ok = p.ident.IndexFromQuoted(q, p.cfg.Protocol); !ok {
			return
		}
	default:
		return
	}
	pr, ok := p.pending.take(idx)
	if !ok {
		return
	}
	r := Response{ProbeID: idx, Protocol: pr.Protocol, From: from, Received: ev.At,
		RTT: ev.At.Sub(pr.SentAt), ReplyTTL: ev.ReplyTTL, ReplyIPID: ev.ReplyIPID}
	fillFromICMP(&r, m)
	deliver(p.responses, p.socks.stopping(), r)
}

// handleTCP matches a SYN-ACK or RST from the destination to a probe.
func (p *rawProber) handleTCP(ev pathEvent) {
	s := ev.TCP
	if s.SrcPort != p.cfg.DstPort || !p.isOurPort(s.DstPort) {
		return
	}
	kind := KindOther
	switch {
	case s.Flags.Has(FlagSYN | FlagACK):
		kind = KindSynAck
	case s.Flags.Has(FlagRST):
		kind = KindRST
	default:
		return
	}
	idx, ok := p.ident.IndexFromTCPAck(s.Ack)
	if !ok {
		return
	}
	pr, ok := p.pending.take(idx)
	if !ok {
		return
	}
	deliver(p.responses, p.socks.stopping(), Response{ProbeID: idx, Protocol: TCP, From: ev.From, Kind: kind,
		Received: ev.At, RTT: ev.At.Sub(pr.SentAt), ReplyTTL: ev.ReplyTTL, ReplyIPID: ev.ReplyIPID, QuotedTTL: -1, TCP: s})
}

func ipProto(p Protocol, dst netip.Addr) int {
	switch p {
	case TCP:
		return protoTCP
	case UDP:
		return protoUDP
	}
	if dst.Is6() {
		return protoICMPv6
	}
	return protoICMP
}

func (p *rawProber) Close() error {
	p.closeOnce.Do(func() {
		p.socks.stop()
		p.closeHolders()
		if p.tx != nil {
			p.tx.close()
		}
	})
	return nil
}

func (p *rawProber) closeHolders() {
	for _, h := range p.holders {
		h.Close()
	}
}

// txSender sends a raw prober's packets through a socket of its own that
// no reader polls, so that the kernel's transmit stamp of each packet can
// be read from its error queue right after the send: the RTT starts when
// the packet left, not when we decided to send it (a polled socket with a
// non-empty error queue would wake Go's poller with an error).
type txSender struct {
	fd   int
	v6   bool
	next uint32 // SOF_TIMESTAMPING_OPT_ID of the next send
	oob  []byte
}

func openTxSender(src netip.Addr, proto int) (*txSender, error) {
	t := &txSender{v6: src.Is6(), oob: make([]byte, 512)}
	var err error
	if !t.v6 {
		// IPPROTO_RAW sends whole IPv4 packets (IP_HDRINCL) and receives
		// nothing.
		t.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	} else {
		t.fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	}
	if err != nil {
		return nil, fmt.Errorf("tx socket: %w", err)
	}
	fail := func(what string, err error) (*txSender, error) {
		unix.Close(t.fd)
		return nil, fmt.Errorf("tx socket: %s: %w", what, err)
	}
	if t.v6 {
		if err := unix.Bind(t.fd, &unix.SockaddrInet6{Addr: src.As16()}); err != nil {
			return fail("bind", err)
		}
		if proto == protoICMPv6 {
			// Receive nothing: block every ICMPv6 type.
			var f unix.ICMPv6Filter
			for i := range f.Data {
				f.Data[i] = 0xffffffff
			}
			if err := unix.SetsockoptICMPv6Filter(t.fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
				return fail("icmpv6 filter", err)
			}
		}
		// A raw IPv6 socket gets a copy of what arrives for its protocol:
		// a filter that drops everything keeps its receive buffer, which
		// the error queue's stamps count against, empty.
		dropAll := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
		if err := unix.SetsockoptSockFprog(t.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &dropAll[0]}); err != nil {
			return fail("drop filter", err)
		}
	}
	if err := unix.SetsockoptInt(t.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPING, txStampFlags); err != nil {
		return fail("SO_TIMESTAMPING", err)
	}
	return t, nil
}

// send transmits transport toward dst with ttl and returns when it left
// by the kernel's stamp (stamped), or by a stamp taken just before the
// send when none came.
func (t *txSender) send(src, dst netip.Addr, proto int, transport []byte, ttl int, ipid uint16, df bool) (at time.Time, stamped bool, err error) {
	id := t.next
	t.next++
	before := time.Now()
	if !t.v6 {
		h := &ipv4.Header{Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(transport),
			ID: int(ipid), TTL: ttl, Protocol: proto, Src: net.IP(src.AsSlice()), Dst: net.IP(dst.AsSlice())}
		if df {
			h.Flags = ipv4.DontFragment
		}
		hb, err := h.Marshal()
		if err != nil {
			return before, false, fmt.Errorf("ipv4 header: %w", err)
		}
		before = time.Now()
		if err := unix.Sendto(t.fd, append(hb, transport...), 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			return before, false, fmt.Errorf("send %d bytes ttl %d to %s: %w", len(hb)+len(transport), ttl, dst, err)
		}
	} else {
		oob := make([]byte, unix.CmsgSpace(4))
		ch := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		ch.Level, ch.Type = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
		ch.SetLen(unix.CmsgLen(4))
		*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = int32(ttl)
		before = time.Now()
		if err := unix.Sendmsg(t.fd, transport, oob, &unix.SockaddrInet6{Addr: dst.As16()}, 0); err != nil {
			return before, false, fmt.Errorf("send %d bytes hop limit %d to %s: %w", len(transport), ttl, dst, err)
		}
	}
	// The stamps are made within the send (the device layer runs in it);
	// older ones (a late driver stamp of an earlier packet) are skipped.
	at = before
	for range 4 {
		_, oobn, _, _, rerr := unix.Recvmsg(t.fd, nil, t.oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if rerr != nil {
			break
		}
		if st, ok := decodeTxStamp(t.oob[:oobn]); ok && st.id == id {
			if d := st.at.Sub(before); d >= 0 && d < time.Second {
				at, stamped = st.at, true
			}
			break
		}
	}
	return at, stamped, nil
}

func (t *txSender) close() { unix.Close(t.fd) }
