package localise

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// fakeHop scripts one router of a fakePath.
type fakeHop struct {
	addr netip.Addr // invalid: the router never answers time-exceeded
	// tokens, when set, is the router's ICMP rate limit toward us: it
	// answers while it has tokens left, and earns one per second of the
	// time the probe spends in Options.Sleep (the backoff).
	tokens *float64
	// After this router (on its next link, so from TTL hop+1 on):
	clampMSS  uint16 // MSS clamping of SYNs
	linkMTU   int    // packets above it do not pass ...
	fragMTU   bool   // ... and the router says so (frag-needed), else a black hole
	resetFlow bool   // the flow's segments are answered with a RST from this hop
	dropFlow  bool   // the flow's segments vanish
}

// fakePath is a scripted path from src through hops to dst, answering
// each probe at once, as the real routers and server would: time-exceeded
// quoting the probe (as it looked when it expired), SYN-ACK, the server's
// ACK, echo reply, frag-needed, RST. Next never waits: what was not queued
// by a Send never comes.
type fakePath struct {
	src, dst netip.Addr
	hops     []fakeHop
	icmp     bool // the probes are ICMP echo requests, else TCP
	sendErr  error
	sent     int
	queue    []probe.PathEvent
}

func newFakePath(hops ...fakeHop) *fakePath {
	return &fakePath{src: client4, dst: server4, hops: hops}
}

// fakeRouter is the address of router hop of a fakePath.
func fakeRouter(hop int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(100 + hop), 1}) }

// routers returns n answering routers, hop i at routerAddr(i).
func routers(n int) []fakeHop {
	hs := make([]fakeHop, n)
	for i := range hs {
		hs[i].addr = fakeRouter(i + 1)
	}
	return hs
}

func tokens(n float64) *float64 { return &n }

// sleep is the probes' Options.Sleep: no real waiting, but every
// rate-limited router earns its tokens.
func (f *fakePath) sleep(ctx context.Context, d time.Duration) bool {
	for _, h := range f.hops {
		if h.tokens != nil && d > 0 {
			*h.tokens += d.Seconds() + 0.01 // the time the probe took to get here
		}
	}
	return ctx.Err() == nil
}

func (f *fakePath) Next(ctx context.Context, _ time.Time) (probe.PathEvent, bool) {
	if len(f.queue) == 0 || ctx.Err() != nil {
		return probe.PathEvent{}, false
	}
	ev := f.queue[0]
	f.queue = f.queue[1:]
	return ev, true
}

func (f *fakePath) Send(to netip.Addr, transport []byte, ttl int, ipid uint16, df bool) error {
	if f.sendErr != nil {
		return f.sendErr
	}
	f.sent++
	proto := ipProtoTCP
	if f.icmp {
		proto = ipProtoICMP
	}
	size := ipv4MinHeaderLen + len(transport)
	pkt := append([]byte(nil), transport...)
	for k := 1; k <= len(f.hops)+1; k++ {
		at := probe.PathEvent{At: time.Now(), ReplyIPID: -1}
		if k > len(f.hops) && to != f.dst && f.hopOwns(to) == 0 {
			return nil // nobody on this path has that address
		}
		if k > len(f.hops) || to != f.dst && f.hopOwns(to) == k {
			// The destination (or the router owning to) answers.
			f.answerAtDestination(to, pkt, proto, ttl, at)
			return nil
		}
		h := f.hops[k-1]
		if ttl == k {
			if !h.addr.IsValid() {
				return nil
			}
			if h.tokens != nil {
				if *h.tokens < 1 {
					return nil // rate limited
				}
				*h.tokens--
			}
			q, err := probe.ReferenceQuote(f.src, to, proto, ipid, df, pkt)
			if err != nil {
				return err
			}
			at.From, at.ReplyTTL = h.addr, 65-k
			at.ICMP = &probe.ICMPMessage{Family: 4, Kind: probe.KindTimeExceeded, Type: 11, Quoted: q}
			f.queue = append(f.queue, at)
			return nil
		}
		// Past router k, onto its next link.
		if h.linkMTU > 0 && size > h.linkMTU {
			if h.fragMTU {
				q, err := probe.ReferenceQuote(f.src, to, proto, ipid, df, pkt)
				if err != nil {
					return err
				}
				at.From, at.ReplyTTL = h.addr, 65-k
				at.ICMP = &probe.ICMPMessage{Family: 4, Kind: probe.KindDestUnreachable, Type: 3, Code: 4, MTU: h.linkMTU, Quoted: q}
				f.queue = append(f.queue, at)
			}
			return nil
		}
		if proto == ipProtoTCP && isFlowSegment(pkt) {
			if h.dropFlow {
				return nil
			}
			if h.resetFlow {
				at.From, at.ReplyTTL = f.dst, 65-k
				at.TCP = &probe.TCPSegment{SrcPort: binary.BigEndian.Uint16(pkt[2:4]), DstPort: binary.BigEndian.Uint16(pkt[0:2]), Flags: probe.FlagRST}
				f.queue = append(f.queue, at)
				return nil
			}
		}
		if h.clampMSS > 0 && proto == ipProtoTCP && len(pkt) >= 24 && pkt[20] == 2 && pkt[21] == 4 {
			binary.BigEndian.PutUint16(pkt[22:24], h.clampMSS)
		}
	}
	return nil
}

// hopOwns is the hop whose router has address a (0: none).
func (f *fakePath) hopOwns(a netip.Addr) int {
	for i, h := range f.hops {
		if h.addr == a {
			return i + 1
		}
	}
	return 0
}

// isFlowSegment: an in-flow probe (ACK, no SYN) rather than a SYN.
func isFlowSegment(tcp []byte) bool { return len(tcp) >= 20 && tcp[13]&0x02 == 0 && tcp[13]&0x10 != 0 }

func (f *fakePath) answerAtDestination(to netip.Addr, pkt []byte, proto, ttl int, ev probe.PathEvent) {
	hop := len(f.hops) + 1
	if to != f.dst {
		hop = f.hopOwns(to)
	}
	ev.From, ev.ReplyTTL = to, 65-hop
	switch {
	case proto == ipProtoICMP:
		ev.ICMP = &probe.ICMPMessage{Family: 4, Kind: probe.KindEchoReply, EchoID: binary.BigEndian.Uint16(pkt[4:6]), EchoSeq: binary.BigEndian.Uint16(pkt[6:8])}
	case isFlowSegment(pkt):
		// The server's duplicate ACK: it acknowledges up to the end of
		// the retransmitted bytes.
		n := uint32(len(pkt) - int(pkt[12]>>4)*4)
		ev.TCP = &probe.TCPSegment{SrcPort: binary.BigEndian.Uint16(pkt[2:4]), DstPort: binary.BigEndian.Uint16(pkt[0:2]),
			Flags: probe.FlagACK, Ack: binary.BigEndian.Uint32(pkt[4:8]) + n}
	default:
		ev.TCP = &probe.TCPSegment{SrcPort: binary.BigEndian.Uint16(pkt[2:4]), DstPort: binary.BigEndian.Uint16(pkt[0:2]),
			Flags: probe.FlagSYN | probe.FlagACK, Ack: binary.BigEndian.Uint32(pkt[4:8]) + 1}
	}
	f.queue = append(f.queue, ev)
}

// fakeOptions are the options of the table tests: no real waiting.
func (f *fakePath) options(attempts int) Options {
	return Options{Timeout: 50 * time.Millisecond, Attempts: attempts, Sleep: f.sleep}
}

var errSend = errors.New("send: network is unreachable")
