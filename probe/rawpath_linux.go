package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawPathConfig says which raw sockets a RawPath opens.
type RawPathConfig struct {
	// Dst is the destination; Src the address probes leave from (zero:
	// the kernel's choice toward Dst).
	Dst, Src netip.Addr
	// Protocol of the probes: ICMP (echo, also toward other addresses
	// than Dst), UDP or TCP.
	Protocol Protocol
	// ReadTCP reads TCP segments from Dst (SYN-ACKs, RSTs, ACKs).
	ReadTCP bool
	// DontFrag never fragments locally and ignores a cached path MTU
	// (path MTU probes).
	DontFrag bool
}

// RawPath is the raw sockets of one localisation run toward one
// destination, their events queued for the probe loop to read with Next.
// It is the one socket implementation of the localisation probes' path
// (localise.Path).
type RawPath struct {
	socks  *rawSockets
	events chan PathEvent
}

// OpenRawPath opens the sockets of cfg. It needs CAP_NET_RAW
// (ErrNoRawAccess without).
func OpenRawPath(cfg RawPathConfig) (*RawPath, error) {
	dst := cfg.Dst.Unmap()
	if !dst.IsValid() {
		return nil, fmt.Errorf("raw path: no destination")
	}
	src := cfg.Src.Unmap()
	if !src.IsValid() {
		var err error
		if src, err = SourceFor(dst); err != nil {
			return nil, fmt.Errorf("raw path: %w", err)
		}
	}
	if _, err := addrFamily(src, dst); err != nil {
		return nil, fmt.Errorf("raw path: %w", err)
	}
	proto := protoICMP
	switch cfg.Protocol {
	case TCP:
		proto = protoTCP
	case UDP:
		proto = protoUDP
	case ICMP, "":
	default:
		return nil, fmt.Errorf("raw path: protocol %q: want icmp, udp or tcp", cfg.Protocol)
	}
	socks, err := openRawSockets(rawSocketsConfig{dst: dst, src: src, proto: proto, readTCP: cfg.ReadTCP, dontFrag: cfg.DontFrag})
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("raw path toward %s: %w", dst, ErrNoRawAccess)
		}
		return nil, fmt.Errorf("raw path toward %s: %w", dst, err)
	}
	p := &RawPath{socks: socks, events: make(chan PathEvent, 512)}
	socks.startReaders(p.emit)
	return p, nil
}

func (p *RawPath) emit(ev PathEvent) {
	select {
	case p.events <- ev:
	case <-p.socks.stopping():
	}
}

// Src is the address the probes leave from.
func (p *RawPath) Src() netip.Addr { return p.socks.src }

// Send transmits one probe toward to, of the family of the path's
// destination (toward another address: ICMP echo probes only). transport
// is the transport header and payload, checksummed for Src and to; ipid
// and df apply to IPv4.
func (p *RawPath) Send(to netip.Addr, transport []byte, ttl int, ipid uint16, df bool) error {
	return p.socks.sendTo(to, transport, ttl, ipid, df)
}

// Next returns the next event, or false at the deadline or when ctx ends.
func (p *RawPath) Next(ctx context.Context, deadline time.Time) (PathEvent, bool) {
	d := time.Until(deadline)
	if d <= 0 {
		select {
		case ev := <-p.events:
			return ev, true
		default:
			return PathEvent{}, false
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
	return PathEvent{}, false
}

// Close stops the readers and closes the sockets.
func (p *RawPath) Close() error {
	p.socks.stop()
	p.socks.waitReaders()
	return nil
}

// ReservePort holds a source port of protocol (UDP or TCP) on src until
// the closer is closed, so that no other program uses it meanwhile; a TCP
// port is bound without listening, so the kernel answers SYN-ACKs to it
// with a RST.
func ReservePort(protocol Protocol, src netip.Addr) (uint16, io.Closer, error) {
	if protocol != UDP && protocol != TCP {
		return 0, nil, fmt.Errorf("reserve port: protocol %q has no ports", protocol)
	}
	ports, holders, err := reservePorts(protocol, src, 1)
	if err != nil {
		for _, h := range holders {
			h.Close()
		}
		return 0, nil, err
	}
	return ports[0], holders[0], nil
}

// InterfaceMTU is the MTU of the interface that holds src.
func InterfaceMTU(src netip.Addr) (int, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return 0, fmt.Errorf("interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == src {
					return ifc.MTU, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no interface holds %s", src)
}

// CheckLocalAddr fails unless a is an address of this host: in-flow
// probes are sent in the name of a connection of ours, never anyone
// else's.
func CheckLocalAddr(a netip.Addr) error {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		return fmt.Errorf("%s is not an address of this host: %w", a, err)
	}
	return c.Close()
}

// ReadTCPInfo reads the kernel's struct tcp_info of a connection (no
// privilege needed) and decodes it.
func ReadTCPInfo(conn *net.TCPConn) (TCPInfo, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return TCPInfo{}, err
	}
	var raw []byte
	var gerr error
	if err := rc.Control(func(fd uintptr) { raw, gerr = getTCPInfo(int(fd)) }); err != nil {
		return TCPInfo{}, err
	}
	if gerr != nil {
		return TCPInfo{}, fmt.Errorf("TCP_INFO: %w", gerr)
	}
	return DecodeTCPInfo(raw)
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
