package localise

// NAT: our end of a connection compared with the server's view of it, and
// the box that owns the translated address located by its distance.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// NAT is the evidence of address translation on the path and where the
// translating box is, as the run report holds it (docs/schema-run.md,
// NAT).
type NAT struct {
	// Translated: yes when the server saw another source than we sent
	// from (or our address is private and the destination public), no
	// when it saw ours, not-tested without a server view.
	Translated tri.State `json:"translated"`
	// Sent is our end of the connection ("ip:port"), Seen the same end as
	// the server reported it ("" no server view).
	Sent string `json:"sent"`
	Seen string `json:"seen"`
	// Changes are "src address A→B" / "src port P→Q".
	Changes []string `json:"changes,omitempty"`
	// Hop is the box that owns the translated address: the smallest TTL at
	// which that address itself answered (0: not located). HopAddress is
	// the address hop Hop answers time-exceeded from toward the
	// destination, as a trace lists it.
	Hop        int    `json:"hop"`
	HopAddress string `json:"hop_address"`
	Evidence   string `json:"evidence"`
	// Outcome: Status is Translated; Error says why the server view or
	// the locating failed.
	Outcome
}

// NATVerdict compares our endpoint with the server's view of it (seen may
// be zero) for a connection to dst. Pure; locating is ProbeNAT's job.
func NATVerdict(sent, seen netip.AddrPort, dst netip.Addr) NAT {
	sent = netip.AddrPortFrom(sent.Addr().Unmap(), sent.Port())
	r := NAT{Translated: tri.NotTested, Sent: sent.String(), Outcome: Outcome{Status: tri.NotTested}}
	if seen.IsValid() {
		seen = netip.AddrPortFrom(seen.Addr().Unmap(), seen.Port())
		r.Seen = seen.String()
		if seen.Addr() != sent.Addr() {
			r.Changes = append(r.Changes, FieldChange{Field: FieldSrcAddr, Sent: sent.Addr().String(), Seen: seen.Addr().String()}.String())
		}
		if seen.Port() != sent.Port() {
			r.Changes = append(r.Changes, FieldChange{Field: FieldSrcPort, Sent: strconv.Itoa(int(sent.Port())), Seen: strconv.Itoa(int(seen.Port()))}.String())
		}
		if len(r.Changes) == 0 {
			r.Translated, r.Status = tri.No, tri.No
			r.Evidence = fmt.Sprintf("the server saw us as %s, the address and port we sent from", seen)
			return r
		}
		r.Translated, r.Status = tri.Yes, tri.Yes
		r.Evidence = fmt.Sprintf("we sent from %s, the server saw %s", sent, seen)
		return r
	}
	if isPrivate(sent.Addr()) && dst.IsValid() && dst.Unmap().IsGlobalUnicast() && !isPrivate(dst.Unmap()) {
		r.Translated, r.Status = tri.Yes, tri.Yes
		r.Evidence = fmt.Sprintf("our address %s is private and %s is public: a NAT must translate it (where cannot be told without the server's view of our address)", sent.Addr(), dst.Unmap())
	}
	return r
}

// NATFailed is the NAT record when the server's view of our address could
// not be had.
func NATFailed(err error) NAT {
	return NAT{Translated: tri.NotTested, Evidence: fmt.Sprintf("no server view of our address: %v", err), Outcome: Failed(err)}
}

// natTarget returns the translated address to locate, or false (with the
// evidence completed) when there is none that can be probed toward dst.
func natTarget(r *NAT, sent, seen netip.AddrPort, dst netip.Addr) (netip.Addr, bool) {
	if r.Translated != tri.Yes || !seen.IsValid() {
		return netip.Addr{}, false
	}
	public := seen.Addr().Unmap()
	if public == sent.Addr().Unmap() {
		r.Evidence += "; only the port changed, so the translating box cannot be located by its address"
		return netip.Addr{}, false
	}
	if !public.IsGlobalUnicast() || public.Is4() != dst.Unmap().Is4() {
		r.Evidence += fmt.Sprintf("; %s cannot be probed toward %s", public, dst)
		return netip.Addr{}, false
	}
	return public, true
}

// ProbeNAT compares our end of a connection (sent) with the same end as
// the server reported it (seen, e.g. from an echo of the peer address; zero
// if unknown) and, when the address was translated, locates the box that
// owns the translated address: ICMP echo requests to it from src through
// path (an ICMP path toward dst) with TTL 1..maxTTL, the smallest TTL it
// answers at being its hop, and a time-exceeded probe toward dst at that
// TTL for the address the hop shows in a trace.
//
// Why not the quotes: Linux conntrack translates the quoted header of the
// ICMP errors it forwards back (nf_nat_icmp_reply_translation), addresses,
// ports and checksums alike, so behind a masquerading Linux box every quote
// looks untouched. Limits: the translated address must answer ping (a
// masquerading router answers for its own interface address; a NAT pool
// address may not), and a NAT that keeps the address and changes only the
// port cannot be located this way (Hop 0). Without a server view, a
// private source talking to a public destination still proves a NAT, not
// where.
func ProbeNAT(ctx context.Context, path Path, src netip.Addr, sent, seen netip.AddrPort, dst netip.Addr, maxTTL int, opt Options) (NAT, error) {
	r := NATVerdict(sent, seen, dst)
	public, ok := natTarget(&r, sent, seen, dst)
	if !ok {
		return r, nil
	}
	return locateNAT(ctx, path, src, public, dst, maxTTL, opt, r)
}

func locateNAT(ctx context.Context, path Path, src, public, dst netip.Addr, maxTTL int, opt Options, r NAT) (NAT, error) {
	opt = opt.withDefaults()
	if maxTTL < 1 || maxTTL > 255 {
		err := fmt.Errorf("probe nat: max TTL %d outside 1-255", maxTTL)
		r.Error = err.Error()
		return r, err
	}
	hop, hopAddr, err := echoDistance(ctx, path, src, public, dst.Unmap(), maxTTL, opt)
	if err != nil {
		err = fmt.Errorf("probe nat: %w", err)
		r.Error = err.Error()
		return r, err
	}
	if hop == 0 {
		r.Evidence += fmt.Sprintf("; %s did not answer echo requests with TTL up to %d, so the NAT is not located", public, maxTTL)
		return r, nil
	}
	r.Hop = hop
	r.Evidence += fmt.Sprintf("; %s answers echo requests from TTL %d on, so the box owning it is hop %d", public, hop, hop)
	if hopAddr.IsValid() {
		r.HopAddress = hopAddr.String()
		r.Evidence += fmt.Sprintf(" (time-exceeded from %s toward %s)", hopAddr, dst.Unmap())
	}
	return r, nil
}

// echoDistance sends ICMP echo requests to target with TTL 1..maxTTL and
// to dst with the same TTLs, and returns the smallest TTL at which target
// itself replied and the address that answered time-exceeded toward dst
// at that TTL (zero if none). Echo requests toward dst left without their
// time-exceeded are sent again after a backoff (rate-limited routers).
func echoDistance(ctx context.Context, path Path, src, target, dst netip.Addr, maxTTL int, opt Options) (int, netip.Addr, error) {
	ident, err := probe.NewIdent(rand.Reader)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	family := 4
	if dst.Is6() {
		family = 6
	}
	// Index ttl: toward dst; 256+ttl: toward target.
	send := func(to netip.Addr, ttl int, idx uint16) error {
		b, err := probe.BuildICMPEcho(family, src, to, ident.ICMPID(), idx, ident.FlowChecksum(int(idx)), ident.Payload(idx, 16))
		if err != nil {
			return err
		}
		return path.Send(to, b, ttl, idx, true)
	}
	hop := 0
	teFrom := map[int]netip.Addr{}
	rounds := retryRounds{attempts: opt.Attempts}
	for {
		sentAt := time.Now()
		hopBefore, teBefore := hop, len(teFrom)
		for ttl := 1; ttl <= maxTTL; ttl++ {
			if hop > 0 && ttl > hop {
				break
			}
			if !teFrom[ttl].IsValid() {
				if err := send(dst, ttl, uint16(ttl)); err != nil {
					return 0, netip.Addr{}, err
				}
			}
			if hop == 0 {
				if err := send(target, ttl, uint16(256+ttl)); err != nil {
					return 0, netip.Addr{}, err
				}
			}
		}
		deadline := sentAt.Add(opt.Timeout)
		for !echoDistanceComplete(hop, teFrom) {
			ev, ok := path.Next(ctx, deadline)
			if !ok {
				break
			}
			m := ev.ICMP
			if m == nil {
				continue
			}
			switch {
			case m.Kind == probe.KindEchoReply && m.EchoID == ident.ICMPID() && ev.From == target && m.EchoSeq > 256:
				if t := int(m.EchoSeq) - 256; hop == 0 || t < hop {
					hop = t
				}
			case m.Kind == probe.KindTimeExceeded && m.Quoted != nil:
				idx, ok := ident.IndexFromQuoted(m.Quoted, probe.ICMP)
				if ok && idx >= 1 && int(idx) <= maxTTL && m.Quoted.Dst.Unmap() == dst {
					teFrom[int(idx)] = ev.From
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, netip.Addr{}, err
		}
		if echoDistanceComplete(hop, teFrom) || !rounds.again(hop != hopBefore || len(teFrom) > teBefore) {
			break
		}
		if !opt.Sleep(ctx, opt.Backoff-time.Since(sentAt)) {
			return 0, netip.Addr{}, ctx.Err()
		}
	}
	return hop, teFrom[hop], nil
}

// echoDistanceComplete: the target answered at hop, and every smaller TTL
// expired on the way toward dst (so none of them reached the target).
func echoDistanceComplete(hop int, teFrom map[int]netip.Addr) bool {
	if hop == 0 {
		return false
	}
	for t := 1; t <= hop; t++ {
		if !teFrom[t].IsValid() {
			return false
		}
	}
	return true
}

// isPrivate reports addresses that need translation to reach the
// Internet: RFC 1918, shared address space (RFC 6598, carrier-grade NAT)
// and IPv6 unique local addresses.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}
