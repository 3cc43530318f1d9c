package probe

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// PMTUOptions tune ProbePMTU. Zero values mean the defaults.
type PMTUOptions struct {
	// Protocol of the probes: ICMP echo (default), UDP to a closed port,
	// or TCP SYNs carrying padding to an open or closed port.
	Protocol Protocol
	// Port: UDP 33434, TCP 443 by default.
	Port uint16
	// MaxTTL bounds the localisation (default 30); it stops at the
	// destination.
	MaxTTL int
	// MaxSize caps the largest packet tried (0: the outgoing interface's
	// MTU, which also caps it).
	MaxSize int
	// Timeout is how long to wait for answers that may not come (default
	// 2 s): every round with a vanished probe lasts this long.
	Timeout time.Duration
	// Attempts is how many copies of each probe are sent (default 2), so
	// that one lost packet is not read as a black hole.
	Attempts int
	// Log receives progress lines; nil: silent.
	Log func(format string, args ...any)
}

func (o PMTUOptions) withDefaults() PMTUOptions {
	if o.Protocol == "" {
		o.Protocol = ICMP
	}
	if o.Port == 0 {
		o.Port = 33434
		if o.Protocol == TCP {
			o.Port = 443
		}
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 30
	}
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

// Probe sizes and rounds.
const (
	pmtuSmallProbe = 128 // the "does the destination answer at all" probe
	pmtuFullTTL    = 64  // TTL of the end-to-end probes
	pmtuSpread     = 7   // sizes per refining round
	pmtuMaxRounds  = 8   // refining rounds at most
)

// ProbePMTU finds the path MTU toward dst with don't-fragment probes
// (IPv4 DF; IPv6 never fragments on the way, and the sender is told not to
// either) of decreasing size, and, when it is below this host's own MTU,
// where packets above it die: TTL-limited probes of the path MTU and of
// one byte more tell a router that reports the small link (frag-needed /
// packet-too-big: PMTUD works) from a black hole, where packets above the
// MTU vanish without a report (see PMTUResult.BlackholeHop). It needs
// CAP_NET_RAW.
//
// The search: a first round of common link MTUs (all at once), then
// rounds of sizes spread between the largest that reached the destination
// and the smallest that did not, until they are one byte apart; a
// frag-needed's MTU is tried first and, when it reaches the destination,
// ends the search. The MTU found is that of the path toward dst; ICMP echo
// replies are as large as the requests, so with IPv6 (the server sets no
// DF on IPv4 replies and routers fragment them) a smaller return path
// shows too, but it is not localised.
func ProbePMTU(ctx context.Context, dst netip.Addr, opt PMTUOptions) (PMTUResult, error) {
	opt = opt.withDefaults()
	dst = dst.Unmap()
	res := PMTUResult{Dst: dst, Protocol: opt.Protocol, Verdict: PMTUUndetermined,
		FragNeededSeen: TriNotTested, Blackhole: TriNotTested}
	if !dst.IsValid() {
		return res, fmt.Errorf("probe pmtu: no destination")
	}
	if opt.MaxTTL > 255 {
		return res, fmt.Errorf("probe pmtu: max TTL %d above 255", opt.MaxTTL)
	}
	if opt.MaxSize != 0 && opt.MaxSize < pmtuSmallProbe {
		return res, fmt.Errorf("probe pmtu: max size %d below %d", opt.MaxSize, pmtuSmallProbe)
	}
	p, err := newPMTUProber(dst, opt)
	if err != nil {
		return res, fmt.Errorf("probe pmtu: %w", err)
	}
	defer p.Close()
	res.LocalMTU = p.localMTU
	if opt.MaxSize > 0 && opt.MaxSize < res.LocalMTU {
		res.LocalMTU = opt.MaxSize
	}
	floor := 0
	if dst.Is6() {
		floor = 1280 // IPv6 links carry at least 1280
	}

	// End to end: which sizes reach the destination?
	best := map[int]PMTUAnswer{}
	var signals []PMTUSignal
	round := func(sizes []int) error {
		specs := make([]pmtuSpec, len(sizes))
		for i, s := range sizes {
			specs[i] = pmtuSpec{size: s, ttl: pmtuFullTTL}
		}
		got, sigs, err := p.round(ctx, specs)
		signals = append(signals, sigs...)
		var seen []string
		for _, size := range sizes {
			a := got[pmtuSpec{size: size, ttl: pmtuFullTTL}]
			best[size] = a
			seen = append(seen, fmt.Sprintf("%d:%s", size, a.Kind))
		}
		opt.Log("pmtu %s: %s", dst, strings.Join(seen, " "))
		return err
	}
	if err := round(firstSizes(pmtuSmallProbe, res.LocalMTU, floor)); err != nil {
		return res, fmt.Errorf("probe pmtu toward %s: %w", dst, err)
	}
	lo, hi := searchBounds(best)
	hi = narrow(lo, hi, signals)
	for n := 0; lo > 0 && hi > lo+1 && n < pmtuMaxRounds; n++ {
		if err := round(nextSizes(lo, hi, signals, pmtuSpread)); err != nil {
			return res, fmt.Errorf("probe pmtu toward %s: %w", dst, err)
		}
		lo, hi = searchBounds(best)
		hi = narrow(lo, hi, signals)
	}
	res.FragNeeded = uniqueSignals(signals)
	res.FragNeededSeen = TriNo
	if len(signals) > 0 {
		res.FragNeededSeen = TriYes
	}
	if lo == 0 {
		res.Reason = fmt.Sprintf("%s answered none of the %s probes, not even of %d bytes", dst, opt.Protocol, pmtuSmallProbe)
		return res, nil
	}
	res.MTU = lo
	if hi == 0 {
		res.Verdict, res.Blackhole = PMTUNoBottleneck, TriNo
		res.Reason = fmt.Sprintf("packets of %d bytes (this host's largest) reached %s", lo, dst)
		return res, nil
	}

	// Where do packets above the MTU die?
	var specs []pmtuSpec
	for ttl := 1; ttl <= opt.MaxTTL; ttl++ {
		specs = append(specs, pmtuSpec{size: lo, ttl: ttl}, pmtuSpec{size: hi, ttl: ttl})
	}
	got, sigs, err := p.round(ctx, specs)
	if err != nil {
		return res, fmt.Errorf("probe pmtu toward %s: %w", dst, err)
	}
	res.FragNeeded = uniqueSignals(append(res.FragNeeded, sigs...))
	if len(res.FragNeeded) > 0 {
		res.FragNeededSeen = TriYes
	}
	for ttl := 1; ttl <= opt.MaxTTL; ttl++ {
		h := PMTUHop{TTL: ttl, Control: got[pmtuSpec{size: lo, ttl: ttl}], Big: got[pmtuSpec{size: hi, ttl: ttl}]}
		res.Hops = append(res.Hops, h)
		if h.Control.Kind == PMTUReply {
			break
		}
	}
	b := locateBottleneck(res.Hops)
	res.FragNeededHop, res.FragNeededAddress = b.fragHop, b.fragAddr
	res.Blackhole, res.BlackholeHop, res.BlackholeUpTo, res.BlackholeAddress = b.blackhole, b.blackholeHop, b.blackholeUpTo, b.blackholeAddr
	switch {
	case b.blackhole == TriYes:
		res.Verdict = PMTUBlackhole
	case b.fragHop > 0 || res.FragNeededSeen == TriYes:
		res.Verdict = PMTUAnnounced
	}
	res.Reason = fmt.Sprintf("path MTU %d (%d bytes did not reach %s); %s", lo, hi, dst, b.reason)
	return res, nil
}

// pmtuSpec is a probe size (IP total length) and TTL.
type pmtuSpec struct{ size, ttl int }

// pmtuProber sends sized probes of one protocol toward one destination
// and matches the answers by the probe identity (Ident): ICMP echo
// sequence number, UDP checksum and payload, TCP sequence number.
type pmtuProber struct {
	opt      PMTUOptions
	path     *rawPath
	ident    Ident
	sport    uint16
	holder   io.Closer
	localMTU int
	next     uint16
}

func newPMTUProber(dst netip.Addr, opt PMTUOptions) (*pmtuProber, error) {
	src, err := SourceFor(dst)
	if err != nil {
		return nil, err
	}
	mtu, err := interfaceMTU(src)
	if err != nil {
		return nil, err
	}
	ident, err := NewIdent(rand.Reader)
	if err != nil {
		return nil, err
	}
	p := &pmtuProber{opt: opt, ident: ident, localMTU: mtu}
	proto := protoICMP
	switch opt.Protocol {
	case UDP:
		proto = protoUDP
	case TCP:
		proto = protoTCP
	case ICMP:
	default:
		return nil, fmt.Errorf("protocol %q: want icmp, udp or tcp", opt.Protocol)
	}
	if proto != protoICMP {
		ports, holders, err := reservePorts(opt.Protocol, src, 1)
		if err != nil {
			for _, h := range holders {
				h.Close()
			}
			return nil, err
		}
		p.sport, p.holder = ports[0], holders[0]
	}
	if p.path, err = openPath(rawSocketsConfig{dst: dst, src: src, proto: proto, readTCP: proto == protoTCP, dontFrag: true}); err != nil {
		if p.holder != nil {
			p.holder.Close()
		}
		return nil, err
	}
	return p, nil
}

func (p *pmtuProber) Close() error {
	p.path.Close()
	if p.holder != nil {
		p.holder.Close()
	}
	return nil
}

// interfaceMTU is the MTU of the interface that holds src.
func interfaceMTU(src netip.Addr) (int, error) {
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

// build returns the transport bytes of probe index with total IP size.
func (p *pmtuProber) build(index uint16, size int) ([]byte, error) {
	src, dst := p.path.src, p.path.dst
	ipHdr, family := ipv4MinHeaderLen, 4
	if dst.Is6() {
		ipHdr, family = ipv6HeaderLen, 6
	}
	switch p.opt.Protocol {
	case UDP:
		return BuildUDP(src, dst, p.sport, p.opt.Port, p.ident.UDPChecksum(index), p.ident.Payload(index, size-ipHdr-8))
	case TCP:
		return buildTCP(src, dst, p.sport, p.opt.Port, p.ident.TCPSeq(index), 0, FlagSYN, 64240, nil, p.ident.Payload(index, size-ipHdr-tcpMinHeaderLen))
	}
	return BuildICMPEcho(family, src, dst, p.ident.ICMPID(), index, p.ident.FlowChecksum(0), p.ident.Payload(index, size-ipHdr-icmpHeaderLen))
}

// round sends every spec Attempts times and waits until each has an
// answer or Timeout passed; frag-needed reports come back separately too.
func (p *pmtuProber) round(ctx context.Context, specs []pmtuSpec) (map[pmtuSpec]PMTUAnswer, []PMTUSignal, error) {
	sent := map[uint16]pmtuSpec{}
	got := make(map[pmtuSpec]PMTUAnswer, len(specs))
	for attempt := 0; attempt < p.opt.Attempts; attempt++ {
		for _, s := range specs {
			p.next++
			if p.next == 0 || p.next > MaxUDPIndex {
				p.next = 1
			}
			b, err := p.build(p.next, s.size)
			if err != nil {
				return nil, nil, err
			}
			if err := p.path.send(b, s.ttl, p.next, true); err != nil {
				return nil, nil, err
			}
			sent[p.next] = s
			got[s] = PMTUAnswer{Kind: PMTUNoAnswer}
		}
	}
	var signals []PMTUSignal
	pending := len(specs)
	deadline := time.Now().Add(p.opt.Timeout)
	for pending > 0 {
		ev, ok := p.path.next(ctx, deadline)
		if !ok {
			break
		}
		index, a, ok := p.match(ev)
		if !ok {
			continue
		}
		s, ok := sent[index]
		if !ok {
			continue
		}
		if a.Kind == PMTUTooBig {
			signals = append(signals, PMTUSignal{From: a.From, MTU: a.MTU, Size: s.size, TTL: s.ttl})
		}
		if prev := got[s]; a.Kind.rank() > prev.Kind.rank() {
			if prev.Kind == PMTUNoAnswer {
				pending--
			}
			got[s] = a
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return got, signals, nil
}

// match returns the probe index an event answers and the answer.
func (p *pmtuProber) match(ev pathEvent) (uint16, PMTUAnswer, bool) {
	dst := p.path.dst
	a := PMTUAnswer{From: ev.From}
	if s := ev.TCP; s != nil {
		if p.opt.Protocol != TCP || ev.From != dst || s.SrcPort != p.opt.Port || s.DstPort != p.sport ||
			!(s.Flags.Has(FlagSYN|FlagACK) || s.Flags.Has(FlagRST)) {
			return 0, a, false
		}
		index, ok := p.ident.IndexFromTCPAck(s.Ack)
		a.Kind = PMTUReply
		return index, a, ok
	}
	m := ev.ICMP
	if m == nil {
		return 0, a, false
	}
	if m.Kind == KindEchoReply {
		if p.opt.Protocol != ICMP || ev.From != dst || m.EchoID != p.ident.ICMPID() {
			return 0, a, false
		}
		a.Kind = PMTUReply
		return m.EchoSeq, a, true
	}
	q := m.Quoted
	if q == nil || q.Dst.Unmap() != dst {
		return 0, a, false
	}
	if p.opt.Protocol != ICMP && (q.SrcPort != p.sport || q.DstPort != p.opt.Port) {
		return 0, a, false
	}
	index, ok := p.ident.IndexFromQuoted(q, p.opt.Protocol)
	if !ok {
		return 0, a, false
	}
	switch {
	case m.Kind == KindTimeExceeded:
		a.Kind = PMTUTimeExceeded
	case m.Kind == KindPacketTooBig || m.Kind == KindDestUnreachable && m.Family == 4 && m.Code == 4:
		a.Kind, a.MTU = PMTUTooBig, m.MTU
	case m.Kind == KindDestUnreachable && ev.From == dst && (m.Family == 4 && m.Code == 3 || m.Family == 6 && m.Code == 4):
		a.Kind = PMTUReply // port unreachable: the destination got it
	default:
		a.Kind = PMTUUnreachable
	}
	return index, a, true
}
