package probe

import (
	"errors"
	"fmt"
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

// rawSockets are the raw sockets toward one destination that the raw
// prober and the localisation probes share; each matches what they read
// in its own way. IPv4 probes are sent whole (IP_HDRINCL) through a raw
// ICMP socket that also reads every ICMP message; IPv6 probes go through
// a raw socket of their protocol with the hop limit as ancillary data,
// and a filtered raw ICMPv6 socket reads what probes provoke. Every
// socket is opened on the calling goroutine (so a caller that switched
// its thread into a network namespace gets them there).
type rawSockets struct {
	dst, src netip.Addr
	proto    int // IP protocol of the probes (ICMPv6 for an IPv6 ICMP probe)

	icmp4 *ipv4.RawConn    // IPv4: sends every probe, reads ICMP
	tcp4  *ipv4.RawConn    // IPv4: reads TCP (readTCP)
	icmp6 *ipv6.PacketConn // IPv6: reads ICMPv6, sends echo requests
	send6 *ipv6.PacketConn // IPv6: sends TCP/UDP, reads TCP (readTCP)
	// The sockets' own connections, for socket options and receive stamps.
	sysICMP4, sysTCP4, sysICMP6, sysSend6 syscall.RawConn

	readTCP      bool
	kernelStamps bool
	done         chan struct{}
	stopOnce     sync.Once
	readers      sync.WaitGroup
}

type rawSocketsConfig struct {
	dst, src netip.Addr // of one family (OpenRawPath fills in a zero src)
	proto    int        // protoTCP, protoUDP, protoICMP (ICMPv6 for an IPv6 dst)
	readTCP  bool       // read TCP segments from dst
	// icmp6AllLocal leaves the ICMPv6 socket unbound, so that it reads what
	// reaches every local address, not only src.
	icmp6AllLocal bool
	// dontFrag: never fragment locally and ignore a cached path MTU
	// (IP(V6)_PMTUDISC_PROBE, IPV6_DONTFRAG); IPv4 probes carry DF anyway
	// and raw IP_HDRINCL sends are only checked against the device MTU.
	dontFrag bool
	// kernelStamps: events carry the kernel's receive time (SIOCGSTAMPNS)
	// rather than the time the reader got them.
	kernelStamps bool
}

// openRawSockets opens the sockets of cfg; on failure it closes those it
// opened.
func openRawSockets(cfg rawSocketsConfig) (*rawSockets, error) {
	proto := cfg.proto
	if cfg.dst.Is6() && proto == protoICMP {
		proto = protoICMPv6
	}
	s := &rawSockets{dst: cfg.dst, src: cfg.src, proto: proto, readTCP: cfg.readTCP, kernelStamps: cfg.kernelStamps, done: make(chan struct{})}
	var err error
	if cfg.dst.Is4() {
		err = s.open4(cfg)
	} else {
		err = s.open6(cfg)
	}
	if err != nil {
		s.closeSockets()
		return nil, err
	}
	return s, nil
}

// Raw socket networks by protocol number rather than name: a name makes
// Go read /etc/protocols first, about 0.2 ms of every trace's start-up.
const (
	netICMP4 = "ip4:1"
	netTCP4  = "ip4:6"
	netTCP6  = "ip6:6"
	netUDP6  = "ip6:17"
	netICMP6 = "ip6:58"
)

// netNames names the networks above in error messages.
var netNames = map[string]string{netICMP4: "icmp", netTCP4: "tcp", netTCP6: "ipv6 tcp", netUDP6: "ipv6 udp", netICMP6: "icmpv6"}

func (s *rawSockets) open4(cfg rawSocketsConfig) error {
	var err error
	if s.icmp4, s.sysICMP4, err = listenIPv4Raw(netICMP4, "0.0.0.0"); err != nil {
		return err
	}
	if cfg.dontFrag {
		// Raw IP_HDRINCL packets still meet ip_fragment, which refuses
		// DF packets above a cached path MTU (EMSGSIZE) unless the
		// socket only probes: then the device MTU counts. INTERFACE, not
		// PROBE: the frag-needed our probes draw must not feed the
		// kernel's path MTU cache either (raw_err updates it for sockets
		// that accept PMTU), or every later connection to the address
		// advertises a smaller MSS for 10 min and hides a black hole
		// toward the client (e2e TestRunLeavesNoPathMTUCached).
		if err := setSockInt(s.sysICMP4, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_INTERFACE); err != nil {
			return fmt.Errorf("ipv4 path MTU probing: %w", err)
		}
	}
	if cfg.readTCP {
		if s.tcp4, s.sysTCP4, err = listenIPv4Raw(netTCP4, s.src.String()); err != nil {
			return err
		}
		// The reader of quoted TCP probes: frag-needed it receives must
		// not feed the kernel's path MTU cache (see above).
		if err := setSockInt(s.sysTCP4, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_INTERFACE); err != nil {
			return fmt.Errorf("ipv4 raw tcp socket: path MTU discovery off: %w", err)
		}
	}
	return nil
}

// listenIPv4Raw opens a raw IPv4 socket (network netICMP4 or netTCP4)
// on laddr that sends whole IP packets (IP_HDRINCL), and returns it with
// its own connection.
func listenIPv4Raw(network, laddr string) (*ipv4.RawConn, syscall.RawConn, error) {
	c, err := net.ListenPacket(network, laddr)
	if err != nil {
		return nil, nil, fmt.Errorf("open raw %s socket: %w", netNames[network], err)
	}
	rc, err := ipv4.NewRawConn(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("raw %s socket: %w", netNames[network], err)
	}
	return rc, syscallConn(c), nil
}

func (s *rawSockets) open6(cfg rawSocketsConfig) error {
	laddr := s.src.String()
	if cfg.icmp6AllLocal {
		laddr = "::"
	}
	c6, err := listenICMP6(laddr)
	if err != nil {
		return err
	}
	s.icmp6 = c6
	s.sysICMP6 = syscallConn(c6.PacketConn)
	sender := s.sysICMP6
	if s.proto != protoICMPv6 {
		network := netTCP6
		if s.proto == protoUDP {
			network = netUDP6
		}
		sc, err := net.ListenPacket(network, s.src.String())
		if err != nil {
			return fmt.Errorf("open raw %s socket: %w", netNames[network], err)
		}
		s.send6 = ipv6.NewPacketConn(sc)
		s.sysSend6 = syscallConn(sc)
		sender = s.sysSend6
		if err := s.send6.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
			return fmt.Errorf("ipv6 hop limit control messages: %w", err)
		}
	}
	if cfg.dontFrag {
		if err := setSockInt(sender, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1); err != nil {
			return fmt.Errorf("ipv6 don't-fragment: %w", err)
		}
		if err := setSockInt(sender, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE); err != nil {
			return fmt.Errorf("ipv6 path MTU probing: %w", err)
		}
	}
	return nil
}

// listenICMP6 opens a raw ICMPv6 socket on laddr that passes only what a
// probe can provoke (errors and echo replies), with the hop limit of each
// message as ancillary data.
func listenICMP6(laddr string) (*ipv6.PacketConn, error) {
	c, err := icmp.ListenPacket(netICMP6, laddr)
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

// setSockInt sets an integer socket option through rc.
func setSockInt(rc syscall.RawConn, level, opt, value int) error {
	if rc == nil {
		return fmt.Errorf("no raw connection")
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

// startReaders reads every reading socket on a goroutine of its own and
// hands each event to handle on that goroutine, until stop. Events of
// different sockets are not ordered with each other.
func (s *rawSockets) startReaders(handle func(pathEvent)) {
	if s.kernelStamps {
		for _, rc := range []syscall.RawConn{s.sysICMP4, s.sysTCP4, s.sysICMP6, s.sysSend6} {
			enableStamps(rc)
		}
	}
	if s.icmp4 != nil {
		s.readers.Add(1)
		go s.read(readIPv4(s.icmp4), s.sysICMP4, decodeICMPv4Event, handle)
	}
	if s.tcp4 != nil {
		s.readers.Add(1)
		go s.read(readIPv4(s.tcp4), s.sysTCP4, s.decodeTCPEvent, handle)
	}
	if s.icmp6 != nil {
		s.readers.Add(1)
		go s.read(readIPv6(s.icmp6), s.sysICMP6, decodeICMPv6Event, handle)
	}
	if s.send6 != nil && s.readTCP && s.proto == protoTCP {
		s.readers.Add(1)
		go s.read(readIPv6(s.send6), s.sysSend6, s.decodeTCPEvent, handle)
	}
}

// packetReader reads one packet from a socket: its sender, TTL / hop
// limit and IPv4 ID as an event, and its IP payload.
type packetReader func(buf []byte) (pathEvent, []byte, error)

func readIPv4(conn *ipv4.RawConn) packetReader {
	return func(buf []byte) (pathEvent, []byte, error) {
		h, payload, _, err := conn.ReadFrom(buf)
		if err != nil {
			return pathEvent{}, nil, err
		}
		from, _ := netip.AddrFromSlice(h.Src.To4())
		return pathEvent{From: from, ReplyTTL: h.TTL, ReplyIPID: h.ID}, payload, nil
	}
}

func readIPv6(conn *ipv6.PacketConn) packetReader {
	return func(buf []byte) (pathEvent, []byte, error) {
		n, cm, src, err := conn.ReadFrom(buf)
		if err != nil {
			return pathEvent{}, nil, err
		}
		hopLimit := -1
		if cm != nil {
			hopLimit = cm.HopLimit
		}
		return pathEvent{From: addrOf(src), ReplyTTL: hopLimit, ReplyIPID: -1}, buf[:n], nil
	}
}

// eventDecoder adds the decoded payload to an event read from one
// socket; false: not one to hand on.
type eventDecoder func(ev pathEvent, payload []byte) (pathEvent, bool)

func decodeICMPv4Event(ev pathEvent, payload []byte) (pathEvent, bool) {
	m, err := DecodeICMPv4(payload)
	ev.ICMP = &m
	return ev, err == nil
}

func decodeICMPv6Event(ev pathEvent, payload []byte) (pathEvent, bool) {
	m, err := DecodeICMPv6(payload)
	ev.ICMP = &m
	return ev, err == nil
}

// decodeTCPEvent keeps only segments from dst: a raw TCP socket reads
// every TCP segment the host receives.
func (s *rawSockets) decodeTCPEvent(ev pathEvent, payload []byte) (pathEvent, bool) {
	if ev.From != s.dst {
		return ev, false
	}
	seg, err := DecodeTCPSegment(payload)
	ev.TCP = &seg
	return ev, err == nil
}

// read hands every packet of one socket that decode keeps to handle,
// until stop.
func (s *rawSockets) read(readPacket packetReader, sys syscall.RawConn, decode eventDecoder, handle func(pathEvent)) {
	defer s.readers.Done()
	buf := make([]byte, 9000)
	for {
		ev, payload, err := readPacket(buf)
		if err != nil {
			if s.stopped(err) {
				return
			}
			continue
		}
		ev.At = s.receivedAt(sys)
		if decoded, ok := decode(ev, payload); ok {
			handle(decoded)
		}
	}
}

// receivedAt is the receive time of the packet just read through sys.
func (s *rawSockets) receivedAt(sys syscall.RawConn) time.Time {
	if s.kernelStamps {
		return kernelStamp(sys, time.Now())
	}
	return time.Now()
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

// stopped tells a reader's read error caused by stop from a passing one.
func (s *rawSockets) stopped(err error) bool {
	select {
	case <-s.done:
		return true
	default:
	}
	return errors.Is(err, net.ErrClosed)
}

// sendTo transmits one probe toward dst, of the family of s.dst (toward
// another address: ICMP echo probes only, the other sockets are bound to
// s.proto). transport is the transport header and payload, checksummed for
// src and dst; ipid and df apply to IPv4.
func (s *rawSockets) sendTo(dst netip.Addr, transport []byte, ttl int, ipid uint16, df bool) error {
	if dst.Is4() != s.dst.Is4() {
		return fmt.Errorf("send to %s: not of the family of %s", dst, s.dst)
	}
	if s.dst.Is4() {
		h := &ipv4.Header{
			Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(transport),
			ID: int(ipid), TTL: ttl, Protocol: s.proto,
			Src: net.IP(s.src.AsSlice()), Dst: net.IP(dst.AsSlice()),
		}
		if df {
			h.Flags = ipv4.DontFragment
		}
		if err := s.icmp4.WriteTo(h, transport, nil); err != nil {
			return fmt.Errorf("send %d bytes ttl %d to %s: %w", h.TotalLen, ttl, dst, err)
		}
		return nil
	}
	conn := s.send6
	if s.proto == protoICMPv6 {
		conn = s.icmp6
	}
	if _, err := conn.WriteTo(transport, &ipv6.ControlMessage{HopLimit: ttl}, &net.IPAddr{IP: net.IP(dst.AsSlice())}); err != nil {
		return fmt.Errorf("send %d bytes hop limit %d to %s: %w", ipv6HeaderLen+len(transport), ttl, dst, err)
	}
	return nil
}

// stopping is closed once stop was called.
func (s *rawSockets) stopping() <-chan struct{} { return s.done }

// stop closes the sockets, which ends the readers; wait for them with
// waitReaders.
func (s *rawSockets) stop() {
	s.stopOnce.Do(func() {
		close(s.done)
		s.closeSockets()
	})
}

func (s *rawSockets) waitReaders() { s.readers.Wait() }

func (s *rawSockets) closeSockets() {
	if s.icmp4 != nil {
		s.icmp4.Close()
	}
	if s.tcp4 != nil {
		s.tcp4.Close()
	}
	if s.icmp6 != nil {
		s.icmp6.Close()
	}
	if s.send6 != nil {
		s.send6.Close()
	}
}
