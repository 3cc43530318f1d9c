package e2e

import (
	binenc "encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/trace"
)

// wireCapture records, inside the client namespace, every packet of the
// client's lab interface with the kernel's timestamp (AF_PACKET with
// SO_TIMESTAMPNS): the wire's view of the probes, against which hopcheck's
// RTTs are checked.
type wireCapture struct {
	fd   int
	mu   sync.Mutex
	pkts []wirePacket
	done chan struct{}
}

type wirePacket struct {
	at       time.Time
	outgoing bool
	data     []byte // from the IP header on
}

func startCapture(t testing.TB, l *lab.Lab) *wireCapture {
	t.Helper()
	c := &wireCapture{fd: -1, done: make(chan struct{})}
	err := lab.InNamespace(l.ClientNS, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_RCVBUF: %w", err)
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture in %s: %v", l.ClientNS, err)
	}
	go c.read()
	t.Cleanup(func() { c.stop() })
	return c
}

// dropPrivileges runs hopcheck as nobody without capabilities.
var dropPrivileges = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *wireCapture) read() {
	defer close(c.done)
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				c.mu.Lock()
				stopped := c.fd < 0
				c.mu.Unlock()
				if stopped {
					return
				}
				continue
			}
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Ifindex == 1 { // loopback
			continue
		}
		at := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binenc.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binenc.NativeEndian.Uint64(m.Data[8:16]))
					at = time.Unix(sec, nsec)
				}
			}
		}
		c.mu.Lock()
		c.pkts = append(c.pkts, wirePacket{at: at, outgoing: ll.Pkttype == unix.PACKET_OUTGOING, data: append([]byte(nil), buf[:n]...)})
		c.mu.Unlock()
	}
}

func (c *wireCapture) stop() {
	c.mu.Lock()
	fd := c.fd
	c.fd = -1
	c.mu.Unlock()
	if fd >= 0 {
		<-c.done
		unix.Close(fd)
	}
}

// reset forgets what was captured so far.
func (c *wireCapture) reset() {
	c.mu.Lock()
	c.pkts = nil
	c.mu.Unlock()
}

// probeKey names a probe by its transport header: ports and sequence
// (TCP), ports, length and checksum (UDP), identifier and sequence (ICMP
// echo). An answer carries it: quoted in an ICMP error, or echoed in a
// SYN-ACK (ack-1) or echo reply.
type probeKey struct {
	dst   netip.Addr
	proto int
	b     [8]byte
}

// parseIP returns src, dst, protocol, TTL and the transport bytes.
func parseIP(p []byte) (src, dst netip.Addr, proto, ttl int, l4 []byte, ok bool) {
	if len(p) < 1 {
		return
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return
		}
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl {
			return
		}
		src, _ = netip.AddrFromSlice(p[12:16])
		dst, _ = netip.AddrFromSlice(p[16:20])
		return src, dst, int(p[9]), int(p[8]), p[ihl:], true
	case 6:
		if len(p) < 40 {
			return
		}
		src, _ = netip.AddrFromSlice(p[8:24])
		dst, _ = netip.AddrFromSlice(p[24:40])
		return src, dst, int(p[6]), int(p[7]), p[40:], true
	}
	return
}

func isICMP(proto int) bool { return proto == 1 || proto == 58 }

// keyOf the probe whose transport bytes are l4 (sent to dst).
func keyOf(dst netip.Addr, proto int, l4 []byte) (probeKey, bool) {
	if len(l4) < 8 {
		return probeKey{}, false
	}
	k := probeKey{dst: dst, proto: proto}
	copy(k.b[:], l4[:8])
	if isICMP(proto) {
		k.b[0], k.b[1], k.b[2], k.b[3] = 0, 0, 0, 0 // type, code, checksum
	}
	return k, true
}

// rttsByTTL pairs every probe sent toward dst with its answer on the wire
// and returns the RTTs (ms) by the probe's TTL.
func (c *wireCapture) rttsByTTL(dst netip.Addr, protocol string) map[int][]float64 {
	want := map[string]int{"tcp": 6, "udp": 17, "icmp": 1}[protocol]
	if want == 1 && dst.Is6() {
		want = 58
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	type sent struct {
		at  time.Time
		ttl int
	}
	probes := map[probeKey]sent{}
	out := map[int][]float64{}
	for _, p := range c.pkts {
		src, to, proto, ttl, l4, ok := parseIP(p.data)
		if !ok {
			continue
		}
		if p.outgoing {
			if to != dst {
				continue
			}
			if proto != want {
				continue
			}
			if k, ok := keyOf(to, proto, l4); ok {
				if isICMP(proto) && l4[0] != 8 && l4[0] != 128 {
					continue // only echo requests are probes
				}
				probes[k] = sent{p.at, ttl}
			}
			continue
		}
		var k probeKey
		if ok && isICMP(proto) && len(l4) > 8 && l4[0] != 0 && l4[0] != 129 {
			if _, _, qp, _, _, qok := parseIP(l4[8:]); qok && qp != want {
				continue
			}
		} else if proto != want {
			continue
		}
		switch {
		case isICMP(proto) && len(l4) >= 8 && (l4[0] == 0 || l4[0] == 129): // echo reply
			if src != dst {
				continue
			}
			k, ok = keyOf(dst, proto, l4)
		case isICMP(proto) && len(l4) > 8: // an error quoting the probe
			_, qdst, qproto, _, ql4, qok := parseIP(l4[8:])
			if !qok || qdst != dst {
				continue
			}
			k, ok = keyOf(qdst, qproto, ql4)
		case proto == 6 && src == dst && len(l4) >= 14 && l4[13]&0x12 == 0x12: // SYN-ACK
			var b [8]byte
			copy(b[0:2], l4[2:4])
			copy(b[2:4], l4[0:2])
			binenc.BigEndian.PutUint32(b[4:8], binenc.BigEndian.Uint32(l4[8:12])-1)
			k, ok = probeKey{dst: dst, proto: 6, b: b}, true
		default:
			continue
		}
		if !ok {
			continue
		}
		if s, found := probes[k]; found {
			delete(probes, k)
			out[s.ttl] = append(out[s.ttl], float64(p.at.Sub(s.at))/float64(time.Millisecond))
		}
	}
	return out
}

// compareRTTs checks each answering hop's mean RTT in the report against
// the wire's mean for the probes with that TTL.
func compareRTTs(t *testing.T, name string, tr trace.Trace, wire map[int][]float64, tolMs float64) {
	t.Helper()
	dst := netip.MustParseAddr(tr.Target.Address)
	compared := 0
	for _, h := range tr.Hops {
		if h.Received == 0 || (tr.Reached && h.TTL == tr.ReachedTTL && dst.Is4() && tr.Target.Protocol == "udp") {
			// The destination's UDP hop may hold answers to probes sent
			// further (its limited port unreachables); skip the mix.
			continue
		}
		w := wire[h.TTL]
		if len(w) == 0 {
			t.Errorf("%s: hop %d answered in the report but no probe/answer pair with TTL %d on the wire", name, h.TTL, h.TTL)
			continue
		}
		var sum float64
		for _, v := range w {
			sum += v
		}
		mean := sum / float64(len(w))
		if d := math.Abs(h.RTTms.Avg - mean); d > tolMs {
			t.Errorf("%s: hop %d rtt avg %.3f ms, the wire says %.3f ms (%d pairs): off by %.3f ms", name, h.TTL, h.RTTms.Avg, mean, len(w), d)
		}
		compared++
	}
	if compared == 0 {
		t.Errorf("%s: no hop compared", name)
	}
}

// TestTraceRTTMatchesTheWire: per-hop RTTs within 0.1 ms of a packet
// capture of the same probes, in every protocol, with -P all and -q 1, on
// both tiers. Routers keep their default ICMP limits; subtests leave 6 s
// between traces so that each starts from a rested path.
func TestTraceRTTMatchesTheWire(t *testing.T) {
	t.Parallel() // mostly resting between traces
	l := buildLab(t, lab.Scenario{Name: "rtt", Routers: make([]lab.Router, 3)})
	capture := startCapture(t, l)
	cases := []struct {
		name   string
		prefix []string
		args   []string
	}{
		{"all", nil, []string{"--protocol", "all"}},
		{"tcp-q1", nil, []string{"--protocol", "tcp", "--queries", "1"}},
		{"icmp-q1", nil, []string{"--protocol", "icmp", "--queries", "1"}},
		{"udp-q1", nil, []string{"--protocol", "udp", "--queries", "1"}},
		{"unpriv-all", dropPrivileges, []string{"--protocol", "all", "--privilege", "unprivileged"}},
	}
	for i, c := range cases {
		for _, dst := range []netip.Addr{l.Server4, l.Server6} {
			t.Run(fmt.Sprintf("%s/%s", c.name, dst), func(t *testing.T) {
				if i > 0 || dst.Is6() {
					time.Sleep(6 * time.Second) // a rested path
				}
				capture.reset()
				rep := traceJSON(t, l, c.prefix, append(c.args, netip.AddrPortFrom(dst, 443).String())...)
				time.Sleep(200 * time.Millisecond) // the last packets reach the capture
				for _, tr := range rep.Traces {
					wire := capture.rttsByTTL(dst, tr.Target.Protocol)
					name := tr.Target.Protocol + " " + tr.Privilege
					if c.prefix != nil && tr.Target.Protocol == "icmp" && tr.Error != "" {
						// No ping socket for nobody here (ping_group_range).
						t.Logf("%s: %s", name, tr.Error)
						continue
					}
					if len(tr.Hops) != 4 || !tr.Reached {
						t.Errorf("%s: %d hops, reached %v: %s", name, len(tr.Hops), tr.Reached, hopSummary(tr))
					}
					compareRTTs(t, name, tr, wire, 0.1)
				}
			})
		}
	}
}
