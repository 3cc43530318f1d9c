package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Observer captures, beside the kernel's own sockets, every TCP segment
// that one remote endpoint (address and port) sends to this host, through
// a raw IPPROTO_TCP socket with a BPF filter on the remote endpoint, and
// keeps per local port what identifies the senders of FINs and RSTs.
// It needs CAP_NET_RAW.
type Observer struct {
	remote netip.AddrPort
	fd     int
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	flows map[uint16]*FlowRecord
	err   error // last read error other than timeouts

	// capFd is a packet socket that sees the flows' packets in both
	// directions and the ICMP errors quoting them, for evidence (-1 when
	// it could not be opened: capErr says why); hist keeps them, bounded.
	capFd  int
	capErr error
	hist   *flowHistories
}

// observerReadTimeout bounds each blocking read so that Close is noticed.
const observerReadTimeout = 100 * time.Millisecond

// NewObserver opens the capture for segments from remote.
func NewObserver(remote netip.AddrPort) (*Observer, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	family, v6 := unix.AF_INET, false
	if remote.Addr().Is6() {
		family, v6 = unix.AF_INET6, true
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("flow observer: %w", ErrNoRawAccess)
		}
		return nil, fmt.Errorf("flow observer: raw tcp socket: %w", err)
	}
	o := &Observer{remote: remote, fd: fd, done: make(chan struct{}), flows: map[uint16]*FlowRecord{},
		capFd: -1, hist: newFlowHistories(remote)}
	if err := o.setup(v6); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("flow observer: %w", err)
	}
	o.wg.Add(1)
	go o.read(v6)
	if cfd, err := openFlowCapture(remote, v6); err != nil {
		o.capErr = err
	} else {
		o.capFd = cfd
		o.wg.Add(1)
		go o.readCapture()
	}
	return o, nil
}

// openFlowCapture opens a packet socket (cooked: packets from the IP
// header on, both directions) whose filter keeps the TCP packets between
// this host and remote and every ICMP message; the user-space side keeps
// the ICMP errors that quote a flow toward remote. Needs CAP_NET_RAW.
func openFlowCapture(remote netip.AddrPort, v6 bool) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, fmt.Errorf("flow capture: packet socket: %w", err)
	}
	prog, err := bpf.Assemble(captureFilter(remote, v6, HistorySnapLen))
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("flow capture: assemble filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("flow capture: attach filter: %w", err)
	}
	tv := unix.NsecToTimeval(observerReadTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("flow capture: receive timeout: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) // kernel receive times; time.Now() otherwise
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 2<<20)
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// readCapture files every captured packet in its flow's history.
func (o *Observer) readCapture() {
	defer o.wg.Done()
	buf := make([]byte, HistorySnapLen)
	oob := make([]byte, 128)
	for {
		if o.closed() {
			return
		}
		n, oobn, _, from, err := unix.Recvmsg(o.capFd, buf, oob, 0)
		if err != nil {
			if retryable(err) {
				continue
			}
			if o.closed() {
				return
			}
			if errors.Is(err, unix.EBADF) {
				return
			}
			continue
		}
		at := packetTime(oob[:oobn])
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING && ll.Hatype == unix.ARPHRD_LOOPBACK {
			continue // loopback shows each packet twice: keep the incoming copy
		}
		o.mu.Lock()
		o.hist.ingest(at, buf[:n])
		o.mu.Unlock()
	}
}

// packetTime is the kernel's receive time from an SCM_TIMESTAMPNS control
// message, or now.
func packetTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Now()
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		switch len(m.Data) {
		case 16:
			return time.Unix(int64(binary.NativeEndian.Uint64(m.Data[0:8])), int64(binary.NativeEndian.Uint64(m.Data[8:16])))
		case 8:
			return time.Unix(int64(int32(binary.NativeEndian.Uint32(m.Data[0:4]))), int64(int32(binary.NativeEndian.Uint32(m.Data[4:8]))))
		}
	}
	return time.Now()
}

func (o *Observer) setup(v6 bool) error {
	prog, err := bpf.Assemble(observerFilter(o.remote, v6))
	if err != nil {
		return fmt.Errorf("assemble filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(o.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	tv := unix.NsecToTimeval(observerReadTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(o.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("receive timeout: %w", err)
	}
	_ = unix.SetsockoptInt(o.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	if v6 {
		if err := unix.SetsockoptInt(o.fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
			return fmt.Errorf("hop limit control messages: %w", err)
		}
	}
	return nil
}

// observerFilter is the classic BPF program that keeps only segments from
// remote: IPv4 sockets see the IP header (source address, then the TCP
// source port after the variable-length header); IPv6 raw sockets see
// only the TCP header, so the address is checked in user space.
func observerFilter(remote netip.AddrPort, v6 bool) []bpf.Instruction {
	port := uint32(remote.Port())
	if v6 {
		return []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipFalse: 1},
			bpf.RetConstant{Val: 0xffff},
			bpf.RetConstant{Val: 0},
		}
	}
	a := remote.Addr().As4()
	src := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: src, SkipFalse: 3},
		bpf.LoadMemShift{Off: 0},
		bpf.LoadIndirect{Off: 0, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
}

func (o *Observer) read(v6 bool) {
	defer o.wg.Done()
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	for {
		if o.closed() {
			return
		}
		var seg Segment
		var err error
		if v6 {
			var n, oobn int
			var from unix.Sockaddr
			n, oobn, _, from, err = unix.Recvmsg(o.fd, buf, oob, 0)
			if err == nil {
				at := time.Now()
				src := netip.Addr{}
				if sa, ok := from.(*unix.SockaddrInet6); ok {
					src = netip.AddrFrom16(sa.Addr).Unmap()
				}
				if src != o.remote.Addr() {
					continue
				}
				seg, err = DecodeObservedTCP(buf[:n], src, netip.IPv6Unspecified(), hopLimitFrom(oob[:oobn]), at)
			}
		} else {
			var n int
			n, _, err = unix.Recvfrom(o.fd, buf, 0)
			if err == nil {
				seg, err = DecodeObservedIPv4(buf[:n], time.Now())
			}
		}
		if err != nil {
			if retryable(err) {
				continue
			}
			if o.closed() {
				return
			}
			o.mu.Lock()
			o.err = err
			o.mu.Unlock()
			if errors.Is(err, unix.EBADF) {
				return
			}
			continue
		}
		if seg.Src != o.remote {
			continue
		}
		o.mu.Lock()
		r := o.flows[seg.Dst.Port()]
		if r == nil {
			r = &FlowRecord{}
			o.flows[seg.Dst.Port()] = r
		}
		r.add(seg)
		o.mu.Unlock()
	}
}

func hopLimitFrom(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4 {
			return int(m.Data[0]) | int(m.Data[1])<<8 | int(m.Data[2])<<16 | int(m.Data[3])<<24
		}
	}
	return -1
}

// Flow returns a copy of what was seen toward local port port so far.
func (o *Observer) Flow(port uint16) FlowRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.flows[port]; r != nil {
		return r.clone()
	}
	return FlowRecord{}
}

// WaitFinRst waits up to wait for a FIN or RST toward port that arrived
// at or after since (the kernel hands the raw copy out before the socket
// reports the error, but our reader may lag a little), and returns the
// flow record. Once one is there it waits finRstSettle more, so that
// what a box sends with it (HAProxy's `option nolinger`: a FIN and, at
// once, a RST) is in the record too.
func (o *Observer) WaitFinRst(port uint16, since time.Time, wait time.Duration) FlowRecord {
	deadline := time.Now().Add(wait)
	var settled time.Time // when the first FIN or RST was seen, plus finRstSettle
	for {
		r := o.Flow(port)
		if settled.IsZero() {
			for _, s := range r.FinRst {
				if !s.At.Before(since) {
					settled = time.Now().Add(finRstSettle)
					break
				}
			}
		}
		now := time.Now()
		if (!settled.IsZero() && !now.Before(settled)) || now.After(deadline) {
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finRstSettle is how long WaitFinRst waits after the first FIN or RST
// for the packets sent with it.
const finRstSettle = 50 * time.Millisecond

// WaitSynAck waits up to wait for the SYN-ACK toward port and returns the
// flow record. A connect() that just returned had its SYN-ACK copied to
// the raw socket first, but our reader may not have decoded it yet.
func (o *Observer) WaitSynAck(port uint16, wait time.Duration) FlowRecord {
	deadline := time.Now().Add(wait)
	for {
		r := o.Flow(port)
		if r.SynAck != nil || time.Now().After(deadline) {
			return r
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Forget drops the record and the packet history of port (after its
// connection is done).
func (o *Observer) Forget(port uint16) {
	o.mu.Lock()
	delete(o.flows, port)
	o.hist.forget(port)
	o.mu.Unlock()
}

// Capture returns the bounded packet history of the flow on local port
// port: both directions and the ICMP errors quoting it (see HistoryFirst
// and the other bounds). Empty when the capture socket could not be
// opened (CaptureErr) or nothing was seen.
//
// The FINs and RSTs of the flow record and the packet history are read
// from two sockets by two goroutines, so a RST the record already holds
// may not be in the history yet: Capture waits up to captureCatchUp for
// the history to hold as many inbound FINs and RSTs as the record.
func (o *Observer) Capture(port uint16) FlowCapture {
	deadline := time.Now().Add(captureCatchUp)
	for {
		o.mu.Lock()
		c := o.hist.snapshot(port)
		want := 0
		if r, ok := o.flows[port]; ok {
			want = len(r.FinRst)
		}
		o.mu.Unlock()
		if o.capErr != nil || inboundFinRst(c) >= want || time.Now().After(deadline) {
			return c
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// captureCatchUp bounds how long Capture waits for the capture socket's
// reader to catch up with the raw socket's.
const captureCatchUp = 250 * time.Millisecond

// CaptureErr says why the flows' packets are not captured (nil: they are).
func (o *Observer) CaptureErr() error { return o.capErr }

// Close stops the capture.
func (o *Observer) Close() error {
	if o.closed() {
		return nil
	}
	close(o.done)
	o.wg.Wait()
	if o.capFd >= 0 {
		unix.Close(o.capFd)
	}
	return unix.Close(o.fd)
}

// closed reports whether Close has stopped the observer.
func (o *Observer) closed() bool {
	select {
	case <-o.done:
		return true
	default:
		return false
	}
}

// retryable reports whether a read failed only for now (nothing queued
// yet, or a signal) and is simply tried again.
func retryable(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)
}
