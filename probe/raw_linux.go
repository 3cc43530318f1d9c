package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
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

	raw4  *ipv4.RawConn    // IPv4: sends all probes, reads ICMP
	tcp4  *ipv4.RawConn    // IPv4 TCP: reads SYN-ACK/RST
	icmp6 *ipv6.PacketConn // IPv6: reads ICMPv6, sends echo
	send6 *ipv6.PacketConn // IPv6 TCP/UDP: sends (and reads TCP)
	// Raw connections of the reading sockets, for kernel receive stamps.
	stampICMP4, stampTCP4, stampICMP6, stampSend6 syscall.RawConn

	pending   *pendingTable
	responses chan Response
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	sendMu    sync.Mutex
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
		done:      make(chan struct{}),
	}
	if err := p.open(); err != nil {
		p.closeSockets()
		return nil, fmt.Errorf("raw prober toward %s: %w", cfg.Dst, err)
	}
	p.startReaders()
	return p, nil
}

func (p *rawProber) Privilege() Privilege       { return PrivilegeRaw }
func (p *rawProber) Responses() <-chan Response { return p.responses }

func (p *rawProber) open() error {
	if p.cfg.Protocol != ICMP {
		ports, holders, err := reservePorts(p.cfg.Protocol, p.src, p.cfg.Flows)
		p.holders = holders
		if err != nil {
			return err
		}
		p.ports = ports
	}
	if p.cfg.Dst.Is4() {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("open raw icmp socket: %w", err)
		}
		if p.raw4, err = ipv4.NewRawConn(c); err != nil {
			c.Close()
			return fmt.Errorf("raw icmp socket: %w", err)
		}
		p.stampICMP4 = syscallConn(c)
		if p.cfg.Protocol == TCP {
			c, err := net.ListenPacket("ip4:tcp", p.src.String())
			if err != nil {
				return fmt.Errorf("open raw tcp socket: %w", err)
			}
			if p.tcp4, err = ipv4.NewRawConn(c); err != nil {
				c.Close()
				return fmt.Errorf("raw tcp socket: %w", err)
			}
			p.stampTCP4 = syscallConn(c)
		}
		return nil
	}
	c6, err := listenICMP6("::")
	if err != nil {
		return err
	}
	p.icmp6 = c6
	p.stampICMP6 = syscallConn(p.icmp6.PacketConn)
	if p.cfg.Protocol == ICMP {
		return nil
	}
	network := "ip6:tcp"
	if p.cfg.Protocol == UDP {
		network = "ip6:udp"
	}
	sc, err := net.ListenPacket(network, p.src.String())
	if err != nil {
		return fmt.Errorf("open raw %s socket: %w", p.cfg.Protocol, err)
	}
	p.send6 = ipv6.NewPacketConn(sc)
	p.stampSend6 = syscallConn(sc)
	if err := p.send6.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		return fmt.Errorf("ipv6 hop limit control messages: %w", err)
	}
	return nil
}

// listenICMP6 opens a raw ICMPv6 socket on laddr that passes only what a
// probe can provoke (errors and echo replies), with the hop limit of each
// message as ancillary data.
func listenICMP6(laddr string) (*ipv6.PacketConn, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", laddr)
	if err != nil {
		return nil, fmt.Errorf("open raw icmpv6 socket: %w", err)
	}
	pc := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	for _, t := range []ipv6.ICMPType{ipv6.ICMPTypeDestinationUnreachable, ipv6.ICMPTypePacketTooBig,
		ipv6.ICMPTypeTimeExceeded, ipv6.ICMPTypeParameterProblem, ipv6.ICMPTypeEchoReply} {
		f.Accept(t)
	}
	if err := pc.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("icmpv6 filter: %w", err)
	}
	if err := pc.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		c.Close()
		return nil, fmt.Errorf("icmpv6 hop limit control messages: %w", err)
	}
	return pc, nil
}

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
	pkt, proto, err := p.buildTransport(pr)
	if err != nil {
		p.pending.take(pr.ID)
		return err
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	// Record the send time before the packet leaves: the answer can be
	// read before Send returns.
	now := time.Now()
	pr.SentAt = now
	p.pending.setSent(pr.ID, now)
	if p.cfg.Dst.Is4() {
		h := &ipv4.Header{
			Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(pkt),
			ID: int(pr.ID), Flags: ipv4.DontFragment, TTL: pr.TTL, Protocol: proto,
			Src: net.IP(p.src.AsSlice()), Dst: net.IP(p.cfg.Dst.AsSlice()),
		}
		err = p.raw4.WriteTo(h, pkt, nil)
	} else {
		conn := p.send6
		if proto == 58 {
			conn = p.icmp6
		}
		_, err = conn.WriteTo(pkt, &ipv6.ControlMessage{HopLimit: pr.TTL}, &net.IPAddr{IP: net.IP(p.cfg.Dst.AsSlice())})
	}
	if err != nil {
		p.pending.take(pr.ID)
		return fmt.Errorf("send %s probe ttl %d to %s: %w", pr.Protocol, pr.TTL, pr.Dst, err)
	}
	p.pending.expire(now.Add(-2 * time.Minute))
	return nil
}

// buildTransport returns the transport packet of pr and its IP protocol.
func (p *rawProber) buildTransport(pr *Probe) ([]byte, int, error) {
	switch pr.Protocol {
	case TCP:
		b, err := BuildTCPSYN(p.src, p.cfg.Dst, p.flowPort(pr.Flow), p.cfg.DstPort, p.ident.TCPSeq(pr.ID), 64240, DefaultSYNOptions())
		return b, 6, err
	case UDP:
		b, err := BuildUDP(p.src, p.cfg.Dst, p.flowPort(pr.Flow), p.cfg.DstPort, p.ident.UDPChecksum(pr.ID), p.ident.Payload(pr.ID, 16))
		return b, 17, err
	case ICMP:
		fam, proto := 4, 1
		if p.cfg.Dst.Is6() {
			fam, proto = 6, 58
		}
		b, err := BuildICMPEcho(fam, p.src, p.cfg.Dst, p.ident.ICMPID(), pr.ID, p.ident.FlowChecksum(pr.Flow), p.ident.Payload(pr.ID, 16))
		return b, proto, err
	}
	return nil, 0, fmt.Errorf("build probe: unknown protocol %q", pr.Protocol)
}

func (p *rawProber) startReaders() {
	for _, rc := range []syscall.RawConn{p.stampICMP4, p.stampTCP4, p.stampICMP6, p.stampSend6} {
		enableStamps(rc)
	}
	if p.raw4 != nil {
		p.wg.Add(1)
		go p.readICMP4()
	}
	if p.tcp4 != nil {
		p.wg.Add(1)
		go p.readTCP4()
	}
	if p.icmp6 != nil {
		p.wg.Add(1)
		go p.readICMP6()
	}
	if p.send6 != nil && p.cfg.Protocol == TCP {
		p.wg.Add(1)
		go p.readTCP6()
	}
	go func() {
		p.wg.Wait()
		close(p.responses)
	}()
}

func (p *rawProber) readICMP4() {
	defer p.wg.Done()
	buf := make([]byte, 9000)
	for {
		h, payload, _, err := p.raw4.ReadFrom(buf)
		if err != nil {
			if p.closing(err) {
				return
			}
			continue
		}
		at := kernelStamp(p.stampICMP4, time.Now())
		m, err := DecodeICMPv4(payload)
		if err != nil {
			continue
		}
		from, _ := netip.AddrFromSlice(h.Src.To4())
		p.handleICMP(m, from, h.TTL, h.ID, at)
	}
}

func (p *rawProber) readICMP6() {
	defer p.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, cm, src, err := p.icmp6.ReadFrom(buf)
		if err != nil {
			if p.closing(err) {
				return
			}
			continue
		}
		at := kernelStamp(p.stampICMP6, time.Now())
		m, err := DecodeICMPv6(buf[:n])
		if err != nil {
			continue
		}
		hl := -1
		if cm != nil {
			hl = cm.HopLimit
		}
		p.handleICMP(m, addrOf(src), hl, -1, at)
	}
}

func (p *rawProber) readTCP4() {
	defer p.wg.Done()
	buf := make([]byte, 9000)
	for {
		h, payload, _, err := p.tcp4.ReadFrom(buf)
		if err != nil {
			if p.closing(err) {
				return
			}
			continue
		}
		at := kernelStamp(p.stampTCP4, time.Now())
		from, _ := netip.AddrFromSlice(h.Src.To4())
		p.handleTCP(payload, from, h.TTL, h.ID, at)
	}
}

func (p *rawProber) readTCP6() {
	defer p.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, cm, src, err := p.send6.ReadFrom(buf)
		if err != nil {
			if p.closing(err) {
				return
			}
			continue
		}
		at := kernelStamp(p.stampSend6, time.Now())
		hl := -1
		if cm != nil {
			hl = cm.HopLimit
		}
		p.handleTCP(buf[:n], addrOf(src), hl, -1, at)
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (p *rawProber) closing(err error) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	return errors.Is(err, net.ErrClosed)
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
func (p *rawProber) handleICMP(m ICMPMessage, from netip.Addr, replyTTL, replyID int, at time.Time) {
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
	r := Response{ProbeID: idx, Protocol: pr.Protocol, From: from, Received: at,
		RTT: at.Sub(pr.SentAt), ReplyTTL: replyTTL, ReplyIPID: replyID}
	fillFromICMP(&r, m)
	deliver(p.responses, p.done, r)
}

// handleTCP matches a SYN-ACK or RST from the destination to a probe.
func (p *rawProber) handleTCP(seg []byte, from netip.Addr, replyTTL, replyID int, at time.Time) {
	if from != p.cfg.Dst {
		return
	}
	s, err := DecodeTCPSegment(seg)
	if err != nil || s.SrcPort != p.cfg.DstPort || !p.isOurPort(s.DstPort) {
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
	seg2 := s
	deliver(p.responses, p.done, Response{ProbeID: idx, Protocol: TCP, From: from, Kind: kind,
		Received: at, RTT: at.Sub(pr.SentAt), ReplyTTL: replyTTL, ReplyIPID: replyID, QuotedTTL: -1, TCP: &seg2})
}

func ipProto(p Protocol, dst netip.Addr) int {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	}
	if dst.Is6() {
		return 58
	}
	return 1
}

func (p *rawProber) Close() error {
	p.closeOnce.Do(func() {
		close(p.done)
		p.closeSockets()
	})
	return nil
}

func (p *rawProber) closeSockets() {
	for _, c := range []io.Closer{p.raw4, p.tcp4, p.icmp6, p.send6} {
		if c != nil && !isNilCloser(c) {
			c.Close()
		}
	}
	for _, h := range p.holders {
		h.Close()
	}
}

// isNilCloser catches typed nil pointers stored in the interface.
func isNilCloser(c io.Closer) bool {
	switch v := c.(type) {
	case *ipv4.RawConn:
		return v == nil
	case *ipv6.PacketConn:
		return v == nil
	}
	return false
}
