package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// unprivProber needs no capability: UDP and ICMP (ping socket) probes go
// through connected datagram sockets whose TTL is set per probe, and the
// ICMP errors they provoke are read from the socket error queue
// (IP_RECVERR, tracepath's method). TCP probes are non-blocking connect()s
// with a small TTL: in SYN_SENT the kernel queues the ICMP error with the
// quoted TCP header, and a SYN-ACK or RST completes or refuses the connect.
type unprivProber struct {
	cfg   Config
	ident Ident

	flows []*dgramFlow // UDP: one connected socket per Paris flow; ICMP: one ping socket

	pending   *pendingTable
	responses chan Response
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// dgramFlow is one connected datagram socket.
type dgramFlow struct {
	mu   sync.Mutex // serialises set-TTL + write
	conn *net.UDPConn
	raw  syscall.RawConn
}

func newUnprivProber(ctx context.Context, cfg Config, ident Ident) (Prober, error) {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Second
	}
	p := &unprivProber{cfg: cfg, ident: ident, pending: newPendingTable(),
		responses: make(chan Response, 256), done: make(chan struct{})}
	switch cfg.Protocol {
	case UDP:
		for i := 0; i < cfg.Flows; i++ {
			f, err := openUDPFlow(cfg.Dst, cfg.DstPort)
			if err != nil {
				p.Close()
				return nil, err
			}
			p.flows = append(p.flows, f)
		}
	case ICMP:
		f, err := openPingFlow(cfg.Dst)
		if err != nil {
			return nil, err
		}
		p.flows = append(p.flows, f)
	}
	for _, f := range p.flows {
		p.wg.Add(1)
		go p.readDgram(f)
	}
	go func() {
		<-p.done
		p.wg.Wait()
		close(p.responses)
	}()
	return p, nil
}

func (p *unprivProber) Privilege() Privilege       { return PrivilegeUnprivileged }
func (p *unprivProber) Responses() <-chan Response { return p.responses }

func openUDPFlow(dst netip.Addr, port uint16) (*dgramFlow, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
	if err != nil {
		return nil, fmt.Errorf("udp socket toward %s: %w", dst, err)
	}
	f, err := newDgramFlow(c, dst)
	if err != nil {
		c.Close()
		return nil, err
	}
	return f, nil
}

// openPingFlow opens an ICMP "ping socket" (SOCK_DGRAM, IPPROTO_ICMP),
// which Linux grants to groups in net.ipv4.ping_group_range.
func openPingFlow(dst netip.Addr) (*dgramFlow, error) {
	network, laddr := "udp4", "0.0.0.0"
	if dst.Is6() {
		network, laddr = "udp6", "::"
	}
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if dst.Is6() {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	_ = network
	_ = laddr
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("icmp probes without CAP_NET_RAW need a ping socket, which net.ipv4.ping_group_range (%s) does not grant to gid %d: %w",
			pingGroupRange(), os.Getgid(), err)
	}
	file := os.NewFile(uintptr(fd), "ping")
	fc, err := net.FilePacketConn(file)
	file.Close()
	if err != nil {
		return nil, fmt.Errorf("ping socket: %w", err)
	}
	uc, ok := fc.(*net.UDPConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("ping socket: unexpected connection type %T", fc)
	}
	fl, err := newDgramFlow(uc, dst)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return fl, nil
}

func pingGroupRange() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func newDgramFlow(c *net.UDPConn, dst netip.Addr) (*dgramFlow, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = setRecvErr(int(fd), dst.Is6())
		if serr == nil {
			// Kernel receive stamps keep the reader's scheduling lag out
			// of the RTTs.
			serr = enableCmsgStamps(int(fd))
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("enable IP_RECVERR: %w", err)
	}
	return &dgramFlow{conn: c, raw: raw}, nil
}

// setRecvErr asks the kernel to queue ICMP errors on the socket and to
// tell the TTL of the packets that carried them.
func setRecvErr(fd int, v6 bool) error {
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
		return err
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
}

func setTTL(fd int, v6 bool, ttl int) error {
	if v6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttl)
}

func (p *unprivProber) Send(pr *Probe) error {
	if err := p.cfg.accepts(pr); err != nil {
		return err
	}
	pr.DstPort = p.cfg.DstPort
	p.pending.add(pr)
	var err error
	if p.cfg.Protocol == TCP {
		err = p.sendTCP(pr)
	} else {
		err = p.sendDgram(pr)
	}
	if err != nil {
		p.pending.take(pr.ID)
		return fmt.Errorf("send %s probe ttl %d to %s: %w", pr.Protocol, pr.TTL, pr.Dst, err)
	}
	p.pending.expire(pr.SentAt.Add(-2 * time.Minute))
	return nil
}

func (p *unprivProber) sendDgram(pr *Probe) error {
	f := p.flows[pr.Flow%len(p.flows)]
	payload := p.ident.Payload(pr.ID, 16)
	if p.cfg.Protocol == ICMP {
		typ := 8
		if p.cfg.Dst.Is6() {
			typ = 128
		}
		// The kernel sets the ID of ping sockets; seq and payload carry
		// our identity.
		b := make([]byte, 8+len(payload))
		b[0] = byte(typ)
		b[6], b[7] = byte(pr.ID>>8), byte(pr.ID)
		copy(b[8:], payload)
		payload = b
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var serr error
	if err := f.raw.Control(func(fd uintptr) { serr = setTTL(int(fd), p.cfg.Dst.Is6(), pr.TTL) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set ttl: %w", serr)
	}
	var now time.Time
	var err error
	// A send on a socket with a pending ICMP error fails with that error
	// (and clears it) without sending: the error is already queued, so
	// send again.
	for attempt := 0; attempt < 4; attempt++ {
		// Recorded before the write: the answer can be read before it returns.
		now = time.Now()
		pr.SentAt = now
		p.pending.setSent(pr.ID, now)
		if p.cfg.Protocol == ICMP {
			_, err = f.conn.WriteTo(payload, net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.cfg.Dst, 0)))
		} else {
			_, err = f.conn.Write(payload)
		}
		if err == nil || !isTransientSendErr(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	return nil
}

// isTransientSendErr: a connected socket reports an earlier ICMP error on
// the next send; that error is already in the error queue.
func isTransientSendErr(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EMSGSIZE)
}

// readDgram reads the error queue and normal data of one socket.
func (p *unprivProber) readDgram(f *dgramFlow) {
	defer p.wg.Done()
	buf := make([]byte, 2048)
	oob := make([]byte, 512)
	for {
		var n, oobn int
		var rerr error
		var errq bool
		err := f.raw.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if rerr == nil {
				errq = true
				return true
			}
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return // closed
		}
		at := cmsgStamp(oob[:oobn], time.Now())
		if rerr != nil {
			continue // e.g. ECONNREFUSED reported on the normal path
		}
		if errq {
			p.handleErrQueue(buf[:n], oob[:oobn], at)
		} else {
			p.handleData(buf[:n], at)
		}
	}
}

func (p *unprivProber) handleErrQueue(orig, oob []byte, at time.Time) {
	e, err := DecodeErrQueue(oob)
	if err != nil || e.Origin == soEEOriginLocal {
		return
	}
	payload := orig
	if p.cfg.Protocol == ICMP && len(orig) >= 8 {
		payload = orig[8:]
	}
	idx, ok := p.ident.IndexFromPayload(payload)
	if !ok {
		return
	}
	pr, ok := p.pending.take(idx)
	if !ok {
		return
	}
	r := responseFromErrQueue(e)
	r.ProbeID, r.Protocol, r.Received, r.RTT = idx, pr.Protocol, at, at.Sub(pr.SentAt)
	deliver(p.responses, p.done, r)
}

// handleData handles a normal datagram: an echo reply on a ping socket,
// or a UDP answer from the destination itself.
func (p *unprivProber) handleData(b []byte, at time.Time) {
	var idx uint16
	var ok bool
	kind := KindOther
	if p.cfg.Protocol == ICMP {
		if len(b) < 8 {
			return
		}
		idx, ok = p.ident.IndexFromPayload(b[8:])
		kind = KindEchoReply
	} else {
		idx, ok = p.ident.IndexFromPayload(b)
	}
	if !ok {
		return
	}
	pr, ok := p.pending.take(idx)
	if !ok {
		return
	}
	deliver(p.responses, p.done, Response{ProbeID: idx, Protocol: pr.Protocol, From: p.cfg.Dst, Kind: kind,
		Received: at, RTT: at.Sub(pr.SentAt), ReplyTTL: -1, ReplyIPID: -1, QuotedTTL: -1})
}

// sendTCP starts a non-blocking connect with the probe's TTL and waits for
// its outcome in a goroutine. Each probe has its own socket (and source
// port): unprivileged TCP cannot keep a Paris flow.
func (p *unprivProber) sendTCP(pr *Probe) error {
	v6 := p.cfg.Dst.Is6()
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tcp socket: %w", err)
	}
	if err := setRecvErr(fd, v6); err != nil {
		unix.Close(fd)
		return fmt.Errorf("enable IP_RECVERR: %w", err)
	}
	if err := setTTL(fd, v6, pr.TTL); err != nil {
		unix.Close(fd)
		return fmt.Errorf("set ttl: %w", err)
	}
	if err := enableCmsgStamps(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("enable receive stamps: %w", err)
	}
	// Close with RST, so that a probe that reached the server leaves no
	// half-open connection behind.
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	var sa unix.Sockaddr
	if v6 {
		sa = &unix.SockaddrInet6{Port: int(p.cfg.DstPort), Addr: p.cfg.Dst.As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(p.cfg.DstPort), Addr: p.cfg.Dst.As4()}
	}
	now := time.Now()
	pr.SentAt = now
	p.pending.setSent(pr.ID, now)
	err = unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return fmt.Errorf("connect: %w", err)
	}
	p.wg.Add(1)
	go p.waitTCP(fd, pr.ID, now)
	return nil
}

// tcpEstablished is TCP_ESTABLISHED in struct tcp_info's state.
const tcpEstablished = 1

func (p *unprivProber) waitTCP(fd int, id uint16, sent time.Time) {
	defer p.wg.Done()
	defer unix.Close(fd)
	deadline := sent.Add(p.cfg.MaxWait)
	buf := make([]byte, 512)
	oob := make([]byte, 512)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, 50)
		if err == unix.EINTR {
			// The Go runtime's preemption signals interrupt poll often; the
			// socket has not changed.
			continue
		}
		if err != nil {
			return
		}
		if n == 0 || fds[0].Revents == 0 {
			continue
		}
		at := time.Now()
		if nb, oobn, _, _, rerr := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); rerr == nil {
			_ = nb
			at = cmsgStamp(oob[:oobn], at)
			e, derr := DecodeErrQueue(oob[:oobn])
			if derr != nil || e.Origin == soEEOriginLocal {
				return
			}
			if _, ok := p.pending.take(id); !ok {
				return
			}
			r := responseFromErrQueue(e)
			r.ProbeID, r.Protocol, r.Received, r.RTT = id, TCP, at, at.Sub(sent)
			deliver(p.responses, p.done, r)
			return
		}
		soErr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return
		}
		kind := KindSynAck
		rtt := at.Sub(sent)
		switch syscall.Errno(soErr) {
		case 0:
			// Writable without an error means connected: check it is, so
			// that a spurious wake-up is never taken for a SYN-ACK.
			info, ierr := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if ierr != nil || info.State != tcpEstablished {
				continue
			}
			// The kernel's own sample of the handshake: SYN sent to
			// SYN-ACK received (microseconds), free of our wake-up lag.
			if info.Rtt > 0 {
				rtt = time.Duration(info.Rtt) * time.Microsecond
				at = sent.Add(rtt)
			}
		case unix.ECONNREFUSED:
			kind = KindRST
		default:
			// An ICMP error without a queued entry (should not happen with
			// IP_RECVERR) or a local failure: no attributable answer.
			return
		}
		if _, ok := p.pending.take(id); !ok {
			return
		}
		deliver(p.responses, p.done, Response{ProbeID: id, Protocol: TCP, From: p.cfg.Dst, Kind: kind,
			Received: at, RTT: rtt, ReplyTTL: -1, ReplyIPID: -1, QuotedTTL: -1})
		return
	}
}

func (p *unprivProber) Close() error {
	p.closeOnce.Do(func() {
		close(p.done)
		for _, f := range p.flows {
			f.conn.Close()
		}
	})
	return nil
}

// PingGroupAllows reports whether the current gid may open ICMP ping
// sockets (net.ipv4.ping_group_range).
func PingGroupAllows() bool {
	fields := strings.Fields(pingGroupRange())
	if len(fields) != 2 {
		return false
	}
	lo, err1 := strconv.Atoi(fields[0])
	hi, err2 := strconv.Atoi(fields[1])
	if err1 != nil || err2 != nil {
		return false
	}
	gid := os.Getgid()
	return gid >= lo && gid <= hi
}
