package soak

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Placement is how the sender of a captured RST or FIN was placed on the
// path, beyond its origin and hop: by the hops' return-path fingerprints
// (attrib.Attribute, as `tcp idle` and `run` do), not by a symmetric TTL
// count alone.
type Placement struct {
	// Method is fingerprint, bracket, ttl-count, server or none; "" when
	// nothing was placed (no capture).
	Method       string
	Confidence   string
	Observations []string
	HopAddress   string   // the hop's address from its fingerprint ("" unknown)
	Candidates   []int    // every hop the evidence allows, when undecided
	CountHop     int      // the hop a symmetric count of the packet's TTL names (0 unknown)
	Evidence     []string // attrib's reasoning
}

// placeReset places the sender of seg, given the server's fingerprint,
// the symmetric count's verdict pa (probe.Attribute), the hops'
// return-path fingerprints pp (empty: none) and whether the server still
// answered after it. Pure.
func placeReset(seg probe.Segment, server probe.Fingerprint, pa probe.Attribution, pp tcpcheck.PathPrints, answerAfter tri.State) (probe.Origin, int, Placement) {
	kind := "RST"
	if !seg.Flags.Has(probe.FlagRST) && seg.Flags.Has(probe.FlagFIN) {
		kind = "FIN"
	}
	in := attrib.Input{
		Packet:            attrib.Fingerprint{TTL: seg.TTL, IPID: seg.IPID, DF: seg.DF},
		Kind:              kind,
		Server:            attrib.Fingerprint{TTL: server.TTL, IPID: -1, DF: server.DF},
		ServerHop:         pp.ServerHop,
		Hops:              pp.Hops,
		ServerAnswerAfter: answerAfter,
	}
	r := attrib.Attribute(in)
	pl := Placement{Method: string(r.Method), Confidence: r.Confidence, CountHop: probe.SenderHop(seg.TTL), Evidence: r.Evidence}
	for _, o := range r.Observations {
		pl.Observations = append(pl.Observations, string(o))
	}
	if len(r.Candidates) > 1 {
		pl.Candidates = r.Candidates
	}
	switch r.Origin {
	case attrib.OriginServer:
		// The server's hop as the report states it (server_hop, counted
		// from its SYN-ACK): every server reset in one entry.
		hop := pa.Hop
		if pa.Origin != probe.OriginServer || hop == 0 {
			hop = r.Hop
		}
		return probe.OriginServer, hop, pl
	case attrib.OriginMiddlebox:
		for _, h := range pp.Hops {
			if h.Hop == r.Hop {
				pl.HopAddress = h.Address
			}
		}
		return probe.OriginMiddlebox, r.Hop, pl
	}
	return probe.OriginUnknown, r.Hop, pl
}

// printsRefresh is how old an address's hop fingerprints may get before a
// reset has them traced again (in the background): a soak runs for hours
// and paths change, but one trace per reset would be a probe storm.
const printsRefresh = 10 * time.Minute

// printCache keeps one address's hop fingerprints. The first reset that
// needs them starts a trace and waits for it (in its own request
// goroutine: the worker's pacing and lock are untouched); later resets use
// what was traced, and one that finds it older than refresh starts a new
// trace in the background and goes on with the old fingerprints. At most
// one trace per address runs at a time. Safe for concurrent use.
type printCache struct {
	lookup  func(ctx context.Context, dst netip.AddrPort, maxHop int) tcpcheck.PathPrints
	dst     netip.AddrPort
	refresh time.Duration
	now     func() time.Time

	mu      sync.Mutex
	pp      tcpcheck.PathPrints
	at      time.Time     // when pp was traced; zero: never
	running chan struct{} // closed when the running trace ends; nil: none
	traces  int
	wg      sync.WaitGroup
}

func newPrintCache(lookup func(context.Context, netip.AddrPort, int) tcpcheck.PathPrints, dst netip.AddrPort) *printCache {
	return &printCache{lookup: lookup, dst: dst, refresh: printsRefresh, now: time.Now}
}

// get returns the fingerprints toward the address, tracing up to maxHop
// when there are none or they are stale. ctx is the soak's run context:
// a trace it started outlives the caller but not the soak. A trace cut
// short by the end of the soak is not kept.
func (p *printCache) get(ctx context.Context, maxHop int) tcpcheck.PathPrints {
	p.mu.Lock()
	if !p.at.IsZero() && p.now().Sub(p.at) < p.refresh {
		pp := p.pp
		p.mu.Unlock()
		return pp
	}
	if p.running == nil {
		done := make(chan struct{})
		p.running = done
		p.traces++
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			pp := p.lookup(ctx, p.dst, maxHop)
			p.mu.Lock()
			if ctx.Err() == nil {
				p.pp, p.at = pp, p.now()
			}
			p.running = nil
			p.mu.Unlock()
			close(done)
		}()
	}
	done := p.running
	if !p.at.IsZero() {
		pp := p.pp // stale, refreshed in the background
		p.mu.Unlock()
		return pp
	}
	p.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pp
}

// wait waits for a running trace to end.
func (p *printCache) wait() { p.wg.Wait() }

// methods are the placement methods, best first: a group's method is its
// commonest, ties going to the better one. "" (not placed) is last.
var methods = []string{string(attrib.MethodFingerprint), string(attrib.MethodServer), string(attrib.MethodBracket),
	string(attrib.MethodTTLCount), string(attrib.MethodNone), ""}

const numMethods = 6

func methodIndex(m string) int {
	for i, x := range methods {
		if x == m {
			return i
		}
	}
	return numMethods - 1
}
