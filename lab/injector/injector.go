// Package injector is the lab's on-path RST injector (lab.Router.InjectRST),
// run by the hidden `hopcheck lab-inject` inside a lab router's network
// namespace: it watches the flows the router forwards and injects a TCP
// reset toward the client while the router keeps forwarding everything.
// It is its own package because package probe's tests import lab, and
// this code needs probe's decoders and builders.
package injector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/hopcheck/hopcheck/probe"
)

// Config configures Run.
type Config struct {
	// AfterClientBytes: the client segment that takes the client's
	// payload in a flow beyond this many bytes draws the reset (0: its
	// first segment with payload), once per connection.
	AfterClientBytes int
	// Port limits the injector to flows toward this server port; 0 = every
	// TCP flow.
	Port uint16
	// ClientInterface is the router's interface toward the client: what
	// arrives on it comes from the client side, what arrives on any other
	// interface but loopback from the server side.
	ClientInterface string
	TTL             int       // initial TTL / hop limit of the injected resets (1..255)
	Ready           io.Writer // optional: gets "ready\n" once the sockets are open
	Log             io.Writer // optional: one line per injected reset
}

// Run runs the injector in the current network namespace (a lab
// router's) until ctx is done: it reads every packet the router receives,
// and for each flow whose client has sent more than AfterClientBytes of
// payload it sends one RST toward the client. It forwards nothing itself:
// the router's kernel does.
func Run(ctx context.Context, cfg Config) error {
	if cfg.TTL < 1 || cfg.TTL > 255 {
		return fmt.Errorf("lab-inject: ttl %d outside 1..255", cfg.TTL)
	}
	if cfg.ClientInterface == "" {
		return fmt.Errorf("lab-inject: no client interface: every flow would look one-sided")
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "lab-inject: ", log.LstdFlags|log.Lmicroseconds)
	sniff, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("lab-inject: packet socket: %w", err)
	}
	defer unix.Close(sniff)
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds()) // to notice ctx
	if err := unix.SetsockoptTimeval(sniff, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("lab-inject: receive timeout: %w", err)
	}
	_ = unix.SetsockoptInt(sniff, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	// IPPROTO_RAW: the packets carry their own IP header (and so the TTL
	// and the server's source address).
	raw4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("lab-inject: raw IPv4 socket: %w", err)
	}
	defer unix.Close(raw4)
	raw6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("lab-inject: raw IPv6 socket: %w", err)
	}
	defer unix.Close(raw6)
	// Build one reset before the first flow: the first injection must not
	// pay for first-use costs while it races the server's answer.
	if _, err := buildInjection(injection{Src: netip.MustParseAddrPort("198.18.0.2:1"), Dst: netip.MustParseAddrPort("198.18.0.1:2")}, cfg.TTL); err != nil {
		return err
	}
	if cfg.Ready != nil {
		fmt.Fprintln(cfg.Ready, "ready")
	}
	// The reset races the server's answer (a TLS server flight is 2-3 ms
	// away): on a busy 2-core machine an ordinary thread can wake too
	// late. This thread reads and sends at a real-time priority (it only
	// runs per received packet), and stays locked to this goroutine after
	// Run: with that priority it must not serve other goroutines.
	runtime.LockOSThread()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 10}, 0); err != nil {
		logger.Printf("no real-time priority (%v): resets may lose the race to the server's answer", err)
	}
	st := newInjectState(cfg.AfterClientBytes, cfg.Port)
	names := map[int]string{}
	buf := make([]byte, 256) // headers are enough: payload lengths come from the IP header
	for ctx.Err() == nil {
		n, from, err := unix.Recvfrom(sniff, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("lab-inject: reading packets: %w", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue // each forwarded packet once: as it came in
		}
		if ll.Hatype == unix.ARPHRD_LOOPBACK {
			continue
		}
		name, ok := names[ll.Ifindex]
		if !ok {
			if ifc, err := net.InterfaceByIndex(ll.Ifindex); err == nil {
				name = ifc.Name
			}
			names[ll.Ifindex] = name
		}
		info, err := probe.DecodeCaptured(buf[:n])
		if err != nil || info.TCP == nil {
			continue
		}
		inj, fire := st.observe(info, name == cfg.ClientInterface)
		if !fire {
			continue
		}
		pkt, err := buildInjection(inj, cfg.TTL)
		if err == nil {
			err = sendRaw(raw4, raw6, inj.Dst.Addr(), pkt)
		}
		if err != nil {
			logger.Printf("reset %s -> %s seq %d: %v", inj.Src, inj.Dst, inj.Seq, err)
			continue
		}
		logger.Printf("injected RST %s -> %s seq %d ack %d ttl %d", inj.Src, inj.Dst, inj.Seq, inj.Ack, cfg.TTL)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendRaw sends a complete IP packet toward dst.
func sendRaw(raw4, raw6 int, dst netip.Addr, pkt []byte) error {
	if dst.Is4() {
		return unix.Sendto(raw4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	}
	return unix.Sendto(raw6, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
}

// injection is one reset to send: from the server's end of the flow to
// the client's.
type injection struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
}

// maxInjectFlows bounds the injector's flow table; beyond it the table
// starts afresh (a lab test opens far fewer).
const maxInjectFlows = 1 << 14

type injectKey struct{ client, server netip.AddrPort }

// injectFlow is what the injector knows of one connection.
type injectFlow struct {
	serverNext  uint32 // the server's next sequence number as far as seen
	known       bool   // serverNext is set
	clientBytes int64  // the client's payload so far
	fired       bool
}

// injectState is the injector's flow table. Pure: segments in, resets out.
type injectState struct {
	afterBytes int
	port       uint16
	flows      map[injectKey]*injectFlow
}

func newInjectState(afterBytes int, port uint16) *injectState {
	return &injectState{afterBytes: afterBytes, port: port, flows: map[injectKey]*injectFlow{}}
}

// seqAfter reports a > b in sequence space.
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// observe takes one TCP segment the router received (fromClient: on its
// client-side interface) and returns the reset it draws, if any.
func (s *injectState) observe(info probe.CapturedInfo, fromClient bool) (injection, bool) {
	t := info.TCP
	var k injectKey
	if fromClient {
		k = injectKey{client: netip.AddrPortFrom(info.Src, t.SrcPort), server: netip.AddrPortFrom(info.Dst, t.DstPort)}
	} else {
		k = injectKey{client: netip.AddrPortFrom(info.Dst, t.DstPort), server: netip.AddrPortFrom(info.Src, t.SrcPort)}
	}
	if s.port != 0 && k.server.Port() != s.port {
		return injection{}, false
	}
	if t.Flags.Has(probe.FlagRST) {
		delete(s.flows, k)
		return injection{}, false
	}
	f := s.flows[k]
	if f == nil || (fromClient && t.Flags.Has(probe.FlagSYN) && !t.Flags.Has(probe.FlagACK)) {
		// A client SYN opens a new connection on the same ports.
		if len(s.flows) >= maxInjectFlows {
			clear(s.flows)
		}
		f = &injectFlow{}
		s.flows[k] = f
	}
	advance := func(next uint32) {
		if !f.known || seqAfter(next, f.serverNext) {
			f.serverNext, f.known = next, true
		}
	}
	if !fromClient {
		end := t.Seq + uint32(t.PayloadLen)
		if t.Flags.Has(probe.FlagSYN) {
			end++
		}
		if t.Flags.Has(probe.FlagFIN) {
			end++
		}
		advance(end)
		return injection{}, false
	}
	if t.Flags.Has(probe.FlagACK) {
		advance(t.Ack) // what the client has received
	}
	if t.PayloadLen == 0 {
		return injection{}, false
	}
	f.clientBytes += int64(t.PayloadLen)
	if f.fired || !f.known || f.clientBytes <= int64(s.afterBytes) {
		return injection{}, false
	}
	f.fired = true
	clientEnd := t.Seq + uint32(t.PayloadLen)
	if t.Flags.Has(probe.FlagFIN) {
		clientEnd++
	}
	return injection{Src: k.server, Dst: k.client, Seq: f.serverNext, Ack: clientEnd}, true
}

// buildInjection returns the reset as a complete IPv4 or IPv6 packet
// starting from ttl: RST+ACK, the server's next sequence number, no
// payload. IPv4 gets DF and ID 0 (the kernel picks one, as for its own
// packets).
func buildInjection(inj injection, ttl int) ([]byte, error) {
	src, dst := inj.Src.Addr(), inj.Dst.Addr()
	seg, err := probe.BuildTCPSegment(src, dst, inj.Src.Port(), inj.Dst.Port(), inj.Seq, inj.Ack, probe.FlagRST|probe.FlagACK, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("lab-inject: %w", err)
	}
	if src.Is4() {
		pkt, err := probe.BuildIPv4(src, dst, int(layers.IPProtocolTCP), ttl, 0, true, seg)
		if err != nil {
			return nil, fmt.Errorf("lab-inject: %w", err)
		}
		return pkt, nil
	}
	if ttl < 0 || ttl > 255 {
		return nil, fmt.Errorf("lab-inject: hop limit %d outside 0..255", ttl)
	}
	ip := &layers.IPv6{Version: 6, HopLimit: uint8(ttl), NextHeader: layers.IPProtocolTCP,
		SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ip, gopacket.Payload(seg)); err != nil {
		return nil, fmt.Errorf("lab-inject: ipv6 header: %w", err)
	}
	return buf.Bytes(), nil
}
