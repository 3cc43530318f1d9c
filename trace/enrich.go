package trace

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DNSResolver is the part of *net.Resolver that enrichment uses.
type DNSResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// EnrichOptions choose what Enrich looks up and bound how long it may take.
type EnrichOptions struct {
	ReverseDNS bool // fill Responder.Hostname from PTR records
	ASN        bool // fill Responder.ASN from Team Cymru's DNS
	// Timeout bounds each lookup (default 1 s).
	Timeout time.Duration
	// Concurrency caps the lookups in progress (default 16).
	Concurrency int
}

// Enricher adds host names and AS numbers to responders after a trace: it
// runs outside the probe path, caches per address and never fails a trace
// (a failed or slow lookup leaves the field empty).
type Enricher struct {
	resolver DNSResolver
	opt      EnrichOptions
	slots    chan struct{} // one per lookup in progress

	mu    sync.Mutex
	cache map[netip.Addr]*enrichment
}

// enrichment is the cached result for one address; done is closed once
// hostname and asn are final.
type enrichment struct {
	done     chan struct{}
	hostname string
	asn      string
}

// NewEnricher returns an Enricher using r (net.DefaultResolver when nil).
func NewEnricher(r DNSResolver, opt EnrichOptions) *Enricher {
	if r == nil {
		r = net.DefaultResolver
	}
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = 16
	}
	return &Enricher{
		resolver: r,
		opt:      opt,
		slots:    make(chan struct{}, opt.Concurrency),
		cache:    make(map[netip.Addr]*enrichment),
	}
}

// Enrich fills Hostname and ASN of every responder in traces. It returns
// when every lookup has finished or timed out, or when ctx is done; fields
// whose lookup did not finish stay as they were.
func (e *Enricher) Enrich(ctx context.Context, traces []Trace) {
	if !e.opt.ReverseDNS && !e.opt.ASN {
		return
	}
	pending := make(map[netip.Addr]*enrichment)
	for _, t := range traces {
		for _, h := range t.Hops {
			for _, r := range h.Responders {
				a, err := netip.ParseAddr(r.Address)
				if err != nil {
					continue
				}
				a = a.Unmap()
				if _, ok := pending[a]; !ok {
					pending[a] = e.lookup(ctx, a)
				}
			}
		}
	}
	results := make(map[string]*enrichment, len(pending))
	for a, en := range pending {
		select {
		case <-en.done:
			results[a.String()] = en
		case <-ctx.Done():
			// Fill what is ready; the rest stays empty.
			for a, en := range pending {
				select {
				case <-en.done:
					results[a.String()] = en
				default:
				}
			}
			e.fill(traces, results)
			return
		}
	}
	e.fill(traces, results)
}

func (e *Enricher) fill(traces []Trace, results map[string]*enrichment) {
	for ti := range traces {
		for hi := range traces[ti].Hops {
			rs := traces[ti].Hops[hi].Responders
			for ri := range rs {
				a, err := netip.ParseAddr(rs[ri].Address)
				if err != nil {
					continue
				}
				en, ok := results[a.Unmap().String()]
				if !ok {
					continue
				}
				if en.hostname != "" {
					rs[ri].Hostname = en.hostname
				}
				if en.asn != "" {
					rs[ri].ASN = en.asn
				}
			}
		}
	}
}

// lookup returns the cache entry of a, starting its lookups when it is new.
func (e *Enricher) lookup(ctx context.Context, a netip.Addr) *enrichment {
	e.mu.Lock()
	en, ok := e.cache[a]
	if !ok {
		en = &enrichment{done: make(chan struct{})}
		e.cache[a] = en
	}
	e.mu.Unlock()
	if ok {
		return en
	}
	go func() {
		var wg sync.WaitGroup
		if e.opt.ReverseDNS {
			wg.Go(func() { en.hostname = e.reverseDNS(ctx, a) })
		}
		if e.opt.ASN && hasPublicASN(a) {
			wg.Go(func() { en.asn = e.originASN(ctx, a) })
		}
		wg.Wait()
		if ctx.Err() != nil {
			// Cut short by the caller, not by the address: do not cache.
			e.mu.Lock()
			delete(e.cache, a)
			e.mu.Unlock()
		}
		close(en.done)
	}()
	return en
}

// call runs one lookup in a slot, bounded by the timeout even when the
// resolver ignores its context (its goroutine then ends on its own).
func (e *Enricher) call(ctx context.Context, f func(context.Context) ([]string, error)) []string {
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-e.slots }()
	ctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	type result struct {
		answers []string
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		answers, err := f(ctx)
		ch <- result{answers, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil
		}
		return r.answers
	case <-ctx.Done():
		return nil
	}
}

func (e *Enricher) reverseDNS(ctx context.Context, a netip.Addr) string {
	names := e.call(ctx, func(ctx context.Context) ([]string, error) {
		return e.resolver.LookupAddr(ctx, a.String())
	})
	for _, n := range names {
		if n = strings.TrimSuffix(n, "."); n != "" {
			return n
		}
	}
	return ""
}

func (e *Enricher) originASN(ctx context.Context, a netip.Addr) string {
	txts := e.call(ctx, func(ctx context.Context) ([]string, error) {
		return e.resolver.LookupTXT(ctx, CymruOriginName(a))
	})
	return parseCymruOrigin(txts)
}

// CymruOriginName is the Team Cymru IP-to-ASN query name of a:
// d.c.b.a.origin.asn.cymru.com for IPv4, the reversed nibbles of the whole
// address under origin6.asn.cymru.com for IPv6.
func CymruOriginName(a netip.Addr) string {
	a = a.Unmap()
	var b strings.Builder
	if a.Is4() {
		v := a.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.origin.asn.cymru.com", v[3], v[2], v[1], v[0])
		return b.String()
	}
	v := a.As16()
	const hex = "0123456789abcdef"
	for i := len(v) - 1; i >= 0; i-- {
		b.WriteByte(hex[v[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[v[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("origin6.asn.cymru.com")
	return b.String()
}

// parseCymruOrigin picks the origin AS from TXT answers such as
// "13335 | 1.1.1.0/24 | US | arin | 2010-07-14". With several answers the
// most specific prefix wins (it is the one routed); a multi-origin first
// field ("64500 64501") gives its first AS. "" when nothing parses.
func parseCymruOrigin(txts []string) string {
	best, bestBits := "", -1
	for _, txt := range txts {
		fields := strings.Split(strings.Trim(strings.TrimSpace(txt), `"`), "|")
		origins := strings.Fields(fields[0])
		if len(origins) == 0 {
			continue
		}
		n, err := strconv.ParseUint(origins[0], 10, 32)
		if err != nil || n == 0 {
			continue
		}
		bits := 0
		if len(fields) > 1 {
			if p, err := netip.ParsePrefix(strings.TrimSpace(fields[1])); err == nil {
				bits = p.Bits()
			}
		}
		if bits > bestBits {
			best, bestBits = "AS"+strconv.FormatUint(n, 10), bits
		}
	}
	return best
}

// specialPrefixes have no origin AS: private, shared, benchmark,
// documentation and reserved ranges (RFC 6890).
var specialPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// hasPublicASN reports whether a can have an origin AS.
func hasPublicASN(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() {
		// IsGlobalUnicast excludes loopback, link-local, multicast and
		// unspecified; IsPrivate is RFC 1918 and fc00::/7.
		return false
	}
	for _, p := range specialPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
