package localise

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// PMTUOptions tune ProbePMTU. Zero values mean the defaults.
type PMTUOptions struct {
	// Protocol of the probes: ICMP echo (default), UDP to a closed port,
	// or TCP SYNs carrying padding to an open or closed port.
	Protocol probe.Protocol
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
	// that one lost packet is not read as a black hole: at once where the
	// answer is not rate limited (echo replies, SYN-ACKs, RSTs), else one
	// at a time, Backoff apart, while unanswered.
	Attempts int
	// Backoff is the least time between two probes that expire at the
	// same router (default 1 s, see Options.Backoff).
	Backoff time.Duration
	// Log receives progress lines; nil: silent.
	Log func(format string, args ...any)
	// Sleep waits d unless ctx ends first (then false); nil: real time.
	Sleep func(ctx context.Context, d time.Duration) bool
}

func (o PMTUOptions) withDefaults() PMTUOptions {
	if o.Protocol == "" {
		o.Protocol = probe.ICMP
	}
	if o.Port == 0 {
		o.Port = 33434
		if o.Protocol == probe.TCP {
			o.Port = 443
		}
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 30
	}
	defaultWaits(&o.Timeout, &o.Attempts, &o.Backoff, &o.Log, &o.Sleep)
	return o
}

// Probe sizes and rounds.
const (
	pmtuSmallProbe = 128 // the "does the destination answer at all" probe
	pmtuFullTTL    = 64  // TTL of the end-to-end probes
	pmtuSpread     = 7   // sizes per refining round
	pmtuMaxRounds  = 8   // refining rounds at most
)

// ProbePMTU finds the path MTU toward dst with don't-fragment probes sent
// through path from from (our address, and for UDP and TCP a source port
// held for the probes) (IPv4 DF; IPv6 never fragments on the way, and the
// sender is told not to either) of decreasing size, up to localMTU (the
// outgoing interface's MTU), and, when it is below that, where packets
// above it die: TTL-limited probes of the path MTU and of one byte more
// tell a router that reports the small link (frag-needed / packet-too-big:
// PMTUD works) from a black hole, where packets above the MTU vanish
// without a report (see PMTU.BlackholeHop).
//
// The search: a first round of common link MTUs (all at once), then
// rounds of sizes spread between the largest that reached the destination
// and the smallest that did not, until they are one byte apart; a
// frag-needed's MTU is tried first and, when it reaches the destination,
// ends the search. The MTU found is that of the path toward dst; ICMP echo
// replies are as large as the requests, so with IPv6 (the server sets no
// DF on IPv4 replies and routers fragment them) a smaller return path
// shows too, but it is not localised.
func ProbePMTU(ctx context.Context, path Path, from netip.AddrPort, localMTU int, dst netip.Addr, opt PMTUOptions) (PMTU, error) {
	opt = opt.withDefaults()
	dst = dst.Unmap()
	res := PMTU{Protocol: opt.Protocol, Verdict: PMTUUndetermined, Blackhole: tri.NotTested, Outcome: Outcome{Status: tri.NotTested}}
	fail := func(err error) (PMTU, error) {
		res.Error = err.Error()
		return res, err
	}
	if !dst.IsValid() {
		return fail(fmt.Errorf("probe pmtu: no destination"))
	}
	if opt.MaxTTL > 255 {
		return fail(fmt.Errorf("probe pmtu: max TTL %d above 255", opt.MaxTTL))
	}
	if opt.MaxSize != 0 && opt.MaxSize < pmtuSmallProbe {
		return fail(fmt.Errorf("probe pmtu: max size %d below %d", opt.MaxSize, pmtuSmallProbe))
	}
	if localMTU < pmtuSmallProbe {
		return fail(fmt.Errorf("probe pmtu: local MTU %d below %d", localMTU, pmtuSmallProbe))
	}
	p, err := newPMTUProber(path, from, dst, opt)
	if err != nil {
		return fail(fmt.Errorf("probe pmtu: %w", err))
	}
	res.LocalMTU = localMTU
	if opt.MaxSize > 0 && opt.MaxSize < res.LocalMTU {
		res.LocalMTU = opt.MaxSize
	}
	floor := 0
	if dst.Is6() {
		floor = 1280 // IPv6 links carry at least 1280
	}

	// End to end: which sizes reach the destination? A UDP probe's answer
	// is the destination's port unreachable, which it rate-limits.
	retryEnds := opt.Protocol == probe.UDP
	best := map[int]PMTUAnswer{}
	var signals []PMTUSignal
	round := func(sizes []int) error {
		specs := make([]pmtuSpec, len(sizes))
		for i, s := range sizes {
			specs[i] = pmtuSpec{size: s, ttl: pmtuFullTTL}
		}
		got, sigs, err := p.round(ctx, specs, retryEnds)
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
		return fail(fmt.Errorf("probe pmtu toward %s: %w", dst, err))
	}
	lo, hi := searchBounds(best)
	hi = narrow(lo, hi, signals)
	for n := 0; lo > 0 && hi > lo+1 && n < pmtuMaxRounds; n++ {
		if err := round(nextSizes(lo, hi, signals, pmtuSpread)); err != nil {
			return fail(fmt.Errorf("probe pmtu toward %s: %w", dst, err))
		}
		lo, hi = searchBounds(best)
		hi = narrow(lo, hi, signals)
	}
	res.FragNeeded = uniqueSignals(signals)
	res.FragNeededSeen = len(signals) > 0
	if lo == 0 {
		res.Reason = fmt.Sprintf("%s answered none of the %s probes, not even of %d bytes", dst, opt.Protocol, pmtuSmallProbe)
		return res, nil
	}
	res.MTU = lo
	if hi == 0 {
		res.Verdict, res.Blackhole, res.Status = PMTUNoBottleneck, tri.No, tri.No
		res.Reason = fmt.Sprintf("packets of %d bytes (this host's largest) reached %s", lo, dst)
		return res, nil
	}

	// Where do packets above the MTU die? Their time-exceeded answers are
	// rate limited: unanswered ones are asked again.
	var specs []pmtuSpec
	for ttl := 1; ttl <= opt.MaxTTL; ttl++ {
		specs = append(specs, pmtuSpec{size: lo, ttl: ttl}, pmtuSpec{size: hi, ttl: ttl})
	}
	got, sigs, err := p.round(ctx, specs, true)
	if err != nil {
		return fail(fmt.Errorf("probe pmtu toward %s: %w", dst, err))
	}
	res.FragNeeded = uniqueSignals(append(res.FragNeeded, sigs...))
	res.FragNeededSeen = len(res.FragNeeded) > 0
	for ttl := 1; ttl <= opt.MaxTTL; ttl++ {
		h := PMTUHop{TTL: ttl, Control: got[pmtuSpec{size: lo, ttl: ttl}], Big: got[pmtuSpec{size: hi, ttl: ttl}]}
		res.Hops = append(res.Hops, h)
		if h.Control.Kind == PMTUReply {
			break
		}
	}
	b := locateBottleneck(res.Hops)
	res.FragNeededHop = b.fragHop
	if b.fragAddr.IsValid() {
		res.FragNeededHopAddress = b.fragAddr.String()
	}
	res.Blackhole = b.blackhole
	if b.blackhole == tri.Yes {
		res.BlackholeHop, res.BlackholeHopUpTo = b.blackholeHop, b.blackholeUpTo
		if b.blackholeAddr.IsValid() {
			res.BlackholeHopAddress = b.blackholeAddr.String()
		}
	}
	switch {
	case b.blackhole == tri.Yes:
		res.Verdict, res.Status = PMTUBlackhole, tri.Yes
	case b.fragHop > 0 || res.FragNeededSeen:
		res.Verdict, res.Status = PMTUAnnounced, tri.Yes
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
	path     Path
	src, dst netip.Addr
	sport    uint16
	ident    probe.Ident
	next     uint16
}

func newPMTUProber(path Path, from netip.AddrPort, dst netip.Addr, opt PMTUOptions) (*pmtuProber, error) {
	src := from.Addr().Unmap()
	if !src.IsValid() || src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("source %s: not an address of the family of %s", from.Addr(), dst)
	}
	switch opt.Protocol {
	case probe.UDP, probe.TCP:
		if from.Port() == 0 {
			return nil, fmt.Errorf("%s probes need a source port", opt.Protocol)
		}
	case probe.ICMP:
	default:
		return nil, fmt.Errorf("protocol %q: want icmp, udp or tcp", opt.Protocol)
	}
	ident, err := probe.NewIdent(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &pmtuProber{opt: opt, path: path, src: src, dst: dst, sport: from.Port(), ident: ident}, nil
}

// build returns the transport bytes of probe index with total IP size.
func (p *pmtuProber) build(index uint16, size int) ([]byte, error) {
	src, dst := p.src, p.dst
	ipHdr, family := ipv4MinHeaderLen, 4
	if dst.Is6() {
		ipHdr, family = ipv6HeaderLen, 6
	}
	switch p.opt.Protocol {
	case probe.UDP:
		return probe.BuildUDP(src, dst, p.sport, p.opt.Port, p.ident.UDPChecksum(index), p.ident.Payload(index, size-ipHdr-8))
	case probe.TCP:
		return probe.BuildTCPSegment(src, dst, p.sport, p.opt.Port, p.ident.TCPSeq(index), 0, probe.FlagSYN, 64240, p.ident.Payload(index, size-ipHdr-tcpMinHeaderLen))
	}
	return probe.BuildICMPEcho(family, src, dst, p.ident.ICMPID(), index, p.ident.FlowChecksum(0), p.ident.Payload(index, size-ipHdr-icmpHeaderLen))
}

// send transmits one copy of spec s.
func (p *pmtuProber) send(s pmtuSpec, sent map[uint16]pmtuSpec) error {
	p.next++
	if p.next == 0 || p.next > probe.MaxUDPIndex {
		p.next = 1
	}
	b, err := p.build(p.next, s.size)
	if err != nil {
		return err
	}
	if err := p.path.Send(p.dst, b, s.ttl, p.next, true); err != nil {
		return err
	}
	sent[p.next] = s
	return nil
}

// round sends every spec and waits until each has an answer or Timeout
// passed; frag-needed reports come back separately too. Without retry
// every spec goes out Attempts times at once; with retry (answers that a
// rate limit may withhold) once, and the unanswered ones again, Backoff
// after the previous send (retryRounds).
func (p *pmtuProber) round(ctx context.Context, specs []pmtuSpec, retry bool) (map[pmtuSpec]PMTUAnswer, []PMTUSignal, error) {
	sent := map[uint16]pmtuSpec{}
	got := make(map[pmtuSpec]PMTUAnswer, len(specs))
	for _, s := range specs {
		got[s] = PMTUAnswer{Kind: PMTUNoAnswer}
	}
	copies := p.opt.Attempts
	if retry {
		copies = 1
	}
	var signals []PMTUSignal
	pending := specs
	rounds := retryRounds{attempts: p.opt.Attempts}
	for {
		sentAt := time.Now()
		for c := 0; c < copies; c++ {
			for _, s := range pending {
				if err := p.send(s, sent); err != nil {
					return nil, nil, err
				}
			}
		}
		unanswered := 0
		for _, s := range specs {
			if got[s].Kind == PMTUNoAnswer {
				unanswered++
			}
		}
		unansweredBefore := unanswered
		deadline := sentAt.Add(p.opt.Timeout)
		for unanswered > 0 {
			ev, ok := p.path.Next(ctx, deadline)
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
					unanswered--
				}
				got[s] = a
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if !retry || unanswered == 0 || !rounds.again(unanswered < unansweredBefore) {
			break
		}
		pending = pending[:0:0]
		for _, s := range specs {
			if got[s].Kind == PMTUNoAnswer {
				pending = append(pending, s)
			}
		}
		if !p.opt.Sleep(ctx, p.opt.Backoff-time.Since(sentAt)) {
			return nil, nil, ctx.Err()
		}
	}
	return got, signals, nil
}

// match returns the probe index an event answers and the answer.
func (p *pmtuProber) match(ev probe.PathEvent) (uint16, PMTUAnswer, bool) {
	dst := p.dst
	a := PMTUAnswer{From: ev.From}
	if s := ev.TCP; s != nil {
		if p.opt.Protocol != probe.TCP || ev.From != dst || s.SrcPort != p.opt.Port || s.DstPort != p.sport ||
			!(s.Flags.Has(probe.FlagSYN|probe.FlagACK) || s.Flags.Has(probe.FlagRST)) {
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
	if m.Kind == probe.KindEchoReply {
		if p.opt.Protocol != probe.ICMP || ev.From != dst || m.EchoID != p.ident.ICMPID() {
			return 0, a, false
		}
		a.Kind = PMTUReply
		return m.EchoSeq, a, true
	}
	q := m.Quoted
	if q == nil || q.Dst.Unmap() != dst {
		return 0, a, false
	}
	if p.opt.Protocol != probe.ICMP && (q.SrcPort != p.sport || q.DstPort != p.opt.Port) {
		return 0, a, false
	}
	index, ok := p.ident.IndexFromQuoted(q, p.opt.Protocol)
	if !ok {
		return 0, a, false
	}
	switch {
	case m.Kind == probe.KindTimeExceeded:
		a.Kind = PMTUTimeExceeded
	case m.Kind == probe.KindPacketTooBig || m.Kind == probe.KindDestUnreachable && m.Family == 4 && m.Code == 4:
		a.Kind, a.MTU = PMTUTooBig, m.MTU
	case m.Kind == probe.KindDestUnreachable && ev.From == dst && (m.Family == 4 && m.Code == 3 || m.Family == 6 && m.Code == 4):
		a.Kind = PMTUReply // port unreachable: the destination got it
	default:
		a.Kind = PMTUUnreachable
	}
	return index, a, true
}
