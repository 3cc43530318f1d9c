package tcpcheck

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hopcheck/hopcheck/probe"
)

// SegmentInfo is what the kernel's TCP_INFO says about a connection's
// segment sizes right after connect: the MSS this side advertised in its
// SYN (what the server may send), the MSS it sends with, and the path MTU
// the socket uses. A path MTU learned earlier (a frag-needed drawn by an
// earlier connection or probe) shows here as a lower pmtu / snd_mss than
// the link's, so that one connection's record says whether the kernel's
// PMTU cache, not the path, shaped it.
type SegmentInfo struct {
	AdvMSS  int `json:"adv_mss"`
	SendMSS int `json:"snd_mss"`
	PathMTU int `json:"pmtu"`
	// LinkMTU is the MTU of the local interface the connection leaves by
	// (0 unknown): a PathMTU below it was learned from a frag-needed.
	LinkMTU int `json:"link_mtu,omitempty"`
	// optLen is the TCP options every segment carries (12 with
	// timestamps): TCP_INFO's MSS values are net of them, the SYN's MSS
	// option is not.
	optLen int
}

// synMSS is the MSS our SYN advertised; the server's full-size packets
// are synMSS + the IP and TCP headers.
func (si *SegmentInfo) synMSS() int { return si.AdvMSS + si.optLen }

// segmentInfo reads c's TCP_INFO; nil when it cannot.
func segmentInfo(c *net.TCPConn) *SegmentInfo {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return nil
	}
	si := &SegmentInfo{AdvMSS: int(info.Advmss), SendMSS: int(info.Snd_mss), PathMTU: int(info.Pmtu), LinkMTU: linkMTU(c.LocalAddr())}
	const tcpiOptTimestamps = 1 // TCPI_OPT_TIMESTAMPS (linux/tcp.h)
	if info.Options&tcpiOptTimestamps != 0 {
		si.optLen = 12
	}
	return si
}

// clampMSS sets TCP_MAXSEG before connect: the SYN then advertises at
// most mss, so the server sends segments of at most mss bytes of payload.
func clampMSS(fd, mss int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss); err != nil {
		return fmt.Errorf("TCP_MAXSEG %d: %w", mss, err)
	}
	return nil
}

// PMTU black hole toward the client: the server's full-size segments die
// on the way and the frag-needed a router sends back never reaches the
// server (filtered), so the server retransmits them forever and the
// handshake hangs. The client's own packets (a small ClientHello) pass,
// so nothing looks wrong from its side. A connection that advertises a
// smaller MSS gets smaller segments: if that cures the stall, the path
// MTU toward the client lies between the sizes that passed and failed.
const (
	// cureMSS is the MSS of the first cure attempt: 1200 + 40 (IPv4) or
	// + 60 (IPv6) bytes fit any path that carries IPv6 (1280).
	cureMSS = 1200
	// cureSetupTimeout bounds a cure attempt's handshake: one that gets
	// through takes milliseconds; the stalled ones wait out the kernel's
	// retransmissions.
	cureSetupTimeout = 3 * time.Second
	// cureDials bounds the attempts of the MSS search after the first.
	cureDials = 6
)

// KindPMTUBlackhole: handshakes stall with the advertised MSS and complete
// with a smaller one (toward the client).
const KindPMTUBlackhole = "pmtu-blackhole"

// mssSearch is the state of the search for the largest MSS that passes:
// lo passed, hi failed.
type mssSearch struct{ lo, hi int }

// next is the MSS to try, 0 when the bracket is narrow enough (8 bytes).
func (m mssSearch) next() int {
	if m.hi-m.lo <= 8 {
		return 0
	}
	return (m.lo + m.hi) / 2
}

// ipHeader is the IP header length of a segment to addr (no options).
func ipHeader(v6 bool) int {
	if v6 {
		return 60 // 40 IPv6 + 20 TCP
	}
	return 40 // 20 IPv4 + 20 TCP
}

// stalledSetup reports whether a record is a TLS (or first exchange)
// handshake that hung: the signature of large answers dying on the way.
func stalledSetup(r ConnRecord) bool {
	return r.Outcome == OutcomeTimeout && (r.Phase == PhaseTLS || r.Phase == PhaseApp) && r.Segment != nil
}

// pmtuTowardClient checks, after a test, whether its stalled handshakes
// are a PMTU black hole toward the client: it dials once with the MSS
// clamped to cureMSS and, if that completes, narrows the largest MSS that
// passes. nil when no handshake stalled or a small MSS does not cure it.
func (s *session) pmtuTowardClient(ctx context.Context) *Finding {
	s.mu.Lock()
	stalled, advFail := 0, 0
	for _, r := range s.res.Connections {
		if stalledSetup(r) {
			stalled++
			advFail = max(advFail, r.Segment.synMSS())
		}
	}
	s.mu.Unlock()
	if stalled == 0 || advFail <= cureMSS || ctx.Err() != nil {
		return nil
	}
	// try dials with the MSS clamped to mss; adv is the MSS the SYN
	// really advertised: less than mss when the kernel's cached path MTU
	// (learned from a frag-needed toward the server) caps it.
	try := func(mss int) (ok bool, adv int) {
		cfg := s.opt.Dial
		cfg.ClampMSS, cfg.SetupTimeout = mss, cureSetupTimeout
		dr := Dial(ctx, cfg, s.dst)
		adv = mss
		if dr.Segment != nil && dr.Segment.AdvMSS > 0 {
			adv = min(adv, dr.Segment.synMSS())
		}
		if dr.Conn != nil {
			dr.Conn.Close()
			return true, adv
		}
		return false, adv
	}
	if ok, _ := try(cureMSS); !ok {
		return nil // not cured by small segments: something else
	}
	m := mssSearch{lo: cureMSS, hi: advFail}
	capped := false
	for i := 0; i < cureDials && ctx.Err() == nil && !capped; i++ {
		mss := m.next()
		if mss == 0 {
			break
		}
		ok, adv := try(mss)
		switch {
		case ok:
			m.lo = max(m.lo, adv)
			capped = adv < mss // larger MSS cannot be advertised now: the bracket stays wider
		default:
			m.hi = min(m.hi, adv)
		}
	}
	hdr := ipHeader(s.dst.Addr().Is6())
	f := &Finding{Kind: KindPMTUBlackhole, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginMiddlebox,
		Confidence: "high", MTUBracket: []int{m.lo + hdr, m.hi + hdr - 1}, Direction: "toward-client"}
	f.Evidence = []string{
		fmt.Sprintf("%d connection(s) advertising MSS %d hung in the TLS handshake (no answer, no reset): the server's full-size segments (%d bytes) never arrive", stalled, advFail, advFail+hdr),
		fmt.Sprintf("with the MSS clamped to %d the handshake completes; with %d it hangs: the path toward the client carries packets of %d bytes, not %d (path MTU %d-%d)", m.lo, m.hi, m.lo+hdr, m.hi+hdr, m.lo+hdr, m.hi+hdr-1),
		"no ICMP frag-needed / packet-too-big reaches the server (filtered on the way back), so it never learns to send smaller segments: a PMTU black hole toward the client",
	}
	if capped {
		f.Evidence = append(f.Evidence, "the kernel's cached path MTU toward the server (learned from a frag-needed an earlier packet drew) caps the MSS a new connection can advertise, so the bracket could not be narrowed further; later connections pass only thanks to that cache, which other hosts and a restarted client lack")
	}
	f.Advice = blackholeAdvice(m.lo, hdr)
	return f
}

// blackholeAdvice is the fix for a PMTU black hole toward the client
// where segments of mss bytes (hdr bytes of headers) pass.
func blackholeAdvice(mss, hdr int) string {
	return fmt.Sprintf("On the box where the path MTU drops to about %d, clamp the TCP MSS of forwarded SYNs to %d (iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu), and let ICMP fragmentation-needed / packet-too-big through toward the server. Meanwhile, on the client host, advertise a smaller MSS on the route to the server (ip route change <server prefix> via <gateway> advmss %d) or lower the interface MTU to %d.",
		mss+hdr, mss, mss, mss+hdr)
}

// linkMTU is the MTU of the interface holding local's address (0 when
// none does).
func linkMTU(local net.Addr) int {
	ta, ok := local.(*net.TCPAddr)
	if !ok {
		return 0
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return 0
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ta.IP) {
				return ifc.MTU
			}
		}
	}
	return 0
}

// CachedPMTU reports whether the kernel's cached path MTU shaped res's
// connections: the smallest pmtu below the link MTU (learned from a
// frag-needed drawn by an earlier packet, of this test or another
// program), and that link MTU. Connections then advertise a smaller MSS,
// so that a PMTU black hole toward the client stays hidden until the
// cache expires (net.ipv4.route.mtu_expires, 10 min by default).
func CachedPMTU(res Result) (pmtu, link int, ok bool) {
	for _, c := range res.Connections {
		si := c.Segment
		if si == nil || si.LinkMTU == 0 || si.PathMTU == 0 || si.PathMTU >= si.LinkMTU {
			continue
		}
		if !ok || si.PathMTU < pmtu {
			pmtu, link, ok = si.PathMTU, si.LinkMTU, true
		}
	}
	return pmtu, link, ok
}
