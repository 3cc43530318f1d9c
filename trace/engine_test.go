package trace

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// fakePath is a simulated path: hop i (1-based) is routers[i-1] (invalid
// address = silent), the destination answers at len(routers)+1.
type fakePath struct {
	routers []netip.Addr
	dst     netip.Addr
	rtt     time.Duration
	// icmpDelay, when set, is how late every time-exceeded is read.
	icmpDelay time.Duration
	// limiter, when set, rate-limits the ICMP errors of every router (and
	// of the destination) like a kernel's token bucket; it may be shared by
	// several fakePaths over the same routers.
	limiter *fakeLimiter

	mu     sync.Mutex
	next   uint16
	sent   []probe.Probe
	out    chan probe.Response
	closed bool
}

func newFakePath(dst netip.Addr, routers ...string) *fakePath {
	f := &fakePath{dst: dst, rtt: time.Millisecond, out: make(chan probe.Response, 1024)}
	for _, r := range routers {
		a, _ := netip.ParseAddr(r) // "" → silent hop
		f.routers = append(f.routers, a)
	}
	return f
}

func (f *fakePath) Privilege() probe.Privilege       { return probe.PrivilegeRaw }
func (f *fakePath) Responses() <-chan probe.Response { return f.out }
func (f *fakePath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.out)
	}
	return nil
}

func (f *fakePath) Send(p *probe.Probe) error {
	f.mu.Lock()
	f.next++
	p.ID = f.next
	p.SentAt = time.Now()
	f.sent = append(f.sent, *p)
	f.mu.Unlock()
	var r probe.Response
	switch {
	case p.TTL <= len(f.routers):
		from := f.routers[p.TTL-1]
		if !from.IsValid() {
			return nil
		}
		r = probe.Response{From: from, Kind: probe.KindTimeExceeded, QuotedTTL: 1}
	case p.Protocol == probe.UDP:
		// Port unreachable quoting the TTL the probe arrived with.
		code := 3
		if f.dst.Is6() {
			code = 4
		}
		r = probe.Response{From: f.dst, Kind: probe.KindDestUnreachable, Code: code, QuotedTTL: p.TTL - len(f.routers)}
	case p.Protocol == probe.ICMP:
		r = probe.Response{From: f.dst, Kind: probe.KindEchoReply, QuotedTTL: -1}
	default:
		r = probe.Response{From: f.dst, Kind: probe.KindSynAck, QuotedTTL: -1}
	}
	if f.limiter != nil && !f.limiter.allow(r.From, r.Kind) {
		return nil
	}
	hop := min(p.TTL, len(f.routers)+1)
	r.ProbeID, r.RTT, r.ReplyTTL = p.ID, f.rtt*time.Duration(hop), 64-hop
	if f.icmpDelay > 0 && r.Kind == probe.KindTimeExceeded {
		// The ICMP socket's reader lags behind the TCP socket's.
		r.RTT = f.icmpDelay
	}
	go func() {
		time.Sleep(r.RTT)
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.closed {
			f.out <- r
		}
	}()
	return nil
}

func TestRunStopsAtDestinationAndSkipsSilentHopsQuickly(t *testing.T) {
	dst := netip.MustParseAddr("198.18.6.2")
	fp := newFakePath(dst, "198.18.0.2", "", "198.18.2.2", "", "198.18.4.2", "198.18.5.2")
	defer fp.Close()
	cfg := fastConfig()
	cfg.Timeout = 5 * time.Second
	start := time.Now()
	obs, err := Run(context.Background(), fp, cfg, Destination{Addr: dst, Protocol: probe.TCP, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	// Silent hops must be given up from later hops' RTTs, far before the
	// 5 s timeout.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("trace took %s: adaptive wait did not cut silent hops short", d)
	}
	hops, reached, at := Aggregate(obs, AggregateOptions{Queries: cfg.Queries, MaxHops: cfg.MaxHops})
	if !reached || at != 7 || len(hops) != 7 {
		t.Fatalf("reached=%v at %d with %d hops, want reached at 7 with 7 hops", reached, at, len(hops))
	}
	for _, ttl := range []int{2, 4} {
		if hops[ttl-1].Received != 0 || len(hops[ttl-1].Responders) != 0 {
			t.Errorf("hop %d should be silent: %+v", ttl, hops[ttl-1])
		}
	}
	if got := hops[2].Responders[0].Address; got != "198.18.2.2" {
		t.Errorf("hop 3 = %s", got)
	}
	// Probes beyond the destination may be in flight before it answers,
	// but not many more than one window's worth.
	for _, p := range fp.sent {
		if p.TTL > cfg.MaxHops {
			t.Fatalf("sent ttl %d beyond max-hops", p.TTL)
		}
	}
}

// heldPath answers like fakePath but holds every answer back until the
// probe with releaseTTL is sent, then delivers them all at once: the
// destination's answers are read between two sends, after probes beyond
// it went out (which are never answered).
type heldPath struct {
	*fakePath
	releaseTTL int
	held       []probe.Response
}

func (h *heldPath) Send(p *probe.Probe) error {
	h.mu.Lock()
	h.next++
	p.ID = h.next
	p.SentAt = time.Now()
	h.sent = append(h.sent, *p)
	h.mu.Unlock()
	switch {
	case p.TTL <= len(h.routers):
		h.held = append(h.held, probe.Response{ProbeID: p.ID, From: h.routers[p.TTL-1], Kind: probe.KindTimeExceeded, QuotedTTL: 1, RTT: time.Microsecond})
	case p.TTL == len(h.routers)+1:
		h.held = append(h.held, probe.Response{ProbeID: p.ID, From: h.dst, Kind: probe.KindEchoReply, QuotedTTL: -1, RTT: time.Microsecond})
	}
	if p.TTL == h.releaseTTL {
		for _, r := range h.held {
			h.out <- r
		}
		h.held = nil
	}
	return nil
}

// A round ends as soon as its last probes settle, also when the answers
// that settle them (placing the destination, so that the probes beyond it
// are not waited for) are read during the sends: it must not wait for
// nothing (a stall, here an hour, the context's 5 s ending it).
func TestRunEndsWhenTheDestinationSettlesProbesBeyondIt(t *testing.T) {
	dst := netip.MustParseAddr("198.18.6.2")
	hp := &heldPath{fakePath: newFakePath(dst, "198.18.0.2"), releaseTTL: 4}
	defer hp.Close()
	cfg := fastConfig()
	cfg.Queries = 1
	cfg.stallWait = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := Run(ctx, hp, cfg, Destination{Addr: dst, Protocol: probe.ICMP})
	if err != nil {
		t.Fatalf("round did not end when its last probe settled: %v", err)
	}
	_, reached, at := Aggregate(obs, AggregateOptions{Queries: cfg.Queries, MaxHops: cfg.MaxHops})
	if !reached || at != 2 {
		t.Errorf("reached=%v at %d, want hop 2", reached, at)
	}
	if len(hp.sent) != 4 {
		t.Errorf("sent %d probes, want TTL 1-4 once each", len(hp.sent))
	}
}

func TestRunHonoursFlowsAndRounds(t *testing.T) {
	dst := netip.MustParseAddr("2001:db8:0:2::2")
	fp := newFakePath(dst, "2001:db8::2", "2001:db8:0:1::2")
	defer fp.Close()
	cfg := fastConfig()
	cfg.Flows, cfg.Queries, cfg.Rounds, cfg.Interval = 2, 2, 3, 10*time.Millisecond
	obs, err := Run(context.Background(), fp, cfg, Destination{Addr: dst, Protocol: probe.UDP, Port: 33434})
	if err != nil {
		t.Fatal(err)
	}
	perTTLRound := map[[2]int]int{}
	flows := map[int]bool{}
	for _, o := range obs {
		if o.Pass > 0 {
			continue // a retry of an answer late under load, not the plan
		}
		perTTLRound[[2]int{o.TTL, o.Round}]++
		flows[o.Flow] = true
	}
	// Rounds after the first know the destination (ttl 3) and stop there.
	for round := 1; round < 3; round++ {
		for ttl := 1; ttl <= 3; ttl++ {
			if n := perTTLRound[[2]int{ttl, round}]; n != 4 {
				t.Errorf("round %d ttl %d: %d probes, want flows×queries = 4", round, ttl, n)
			}
		}
		if n := perTTLRound[[2]int{4, round}]; n != 0 {
			t.Errorf("round %d probed beyond the destination (%d probes at ttl 4)", round, n)
		}
	}
	if len(flows) != 2 {
		t.Errorf("flows used: %v, want 0 and 1", flows)
	}
}

func TestRunReturnsPartialOnCancel(t *testing.T) {
	dst := netip.MustParseAddr("198.18.9.2")
	fp := newFakePath(dst, "", "", "", "", "", "", "", "", "")
	defer fp.Close()
	cfg := DefaultConfig()
	cfg.Timeout = 10 * time.Second
	cfg.MaxHops = 9 // every probed hop is silent: only the timeout could end the wait
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	obs, err := Run(ctx, fp, cfg, Destination{Addr: dst, Protocol: probe.ICMP})
	if err == nil {
		t.Fatal("want the context error")
	}
	if len(obs) == 0 {
		t.Fatal("want the observations made before cancellation")
	}
}

// Probes in flight when a trace is cancelled, and probes that went beyond
// the destination, leave nothing pending in the process's scheduler: a
// router with pending probes is never given a faster budget again (serve
// cancels traces at every scrape timeout).
func TestRunReleasesProbesItStopsWaitingFor(t *testing.T) {
	routers := []string{"198.18.0.2", "198.18.1.2", "198.18.2.2"}
	dst := netip.MustParseAddr("198.18.9.2")
	sched := testScheduler()
	pendingTotal := func() (n int) {
		sched.mu.Lock()
		defer sched.mu.Unlock()
		for _, b := range sched.buckets {
			n += b.pending
		}
		return n
	}
	// Learn the routers, then trace again and cancel while the probes of
	// the silent hop beyond them (the destination never answers) wait.
	fp := newFakePath(dst, routers...)
	cfg := fastConfig()
	cfg.Scheduler = sched
	if _, err := Run(context.Background(), fp, cfg, Destination{Addr: dst, Protocol: probe.UDP, Port: 33434}); err != nil {
		t.Fatal(err)
	}
	fp.Close()
	if n := pendingTotal(); n != 0 {
		t.Errorf("after a complete trace (probes beyond the destination dropped): %d probes pending", n)
	}
	quiet := newFakePath(dst, append(routers, "", "", "", "", "", "")...)
	defer quiet.Close()
	cfg.Timeout = 10 * time.Second
	cfg.MaxHops = 9
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := Run(ctx, quiet, cfg, Destination{Addr: dst, Protocol: probe.UDP, Port: 33434}); err == nil {
		t.Fatal("want the context error")
	}
	if n := pendingTotal(); n != 0 {
		t.Errorf("after a cancelled trace: %d probes pending", n)
	}
}

// TestRunNearWaitIgnoresAnswersFromAnotherSocket: a SYN-ACK read from the
// raw TCP socket before the ICMP socket's time-exceeded answers must not
// make the earlier hops look silent.
func TestRunNearWaitIgnoresAnswersFromAnotherSocket(t *testing.T) {
	dst := netip.MustParseAddr("198.18.3.2")
	fp := newFakePath(dst, "198.18.0.2", "198.18.1.2", "198.18.2.2")
	fp.icmpDelay = 40 * time.Millisecond // 8x the 5 ms floor
	defer fp.Close()
	obs, err := Run(context.Background(), fp, fastConfig(), Destination{Addr: dst, Protocol: probe.TCP, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	hops, reached, _ := Aggregate(obs, AggregateOptions{Queries: 3, MaxHops: 30})
	if !reached {
		t.Fatal("not reached")
	}
	for _, h := range hops[:3] {
		if h.Received != h.Sent {
			t.Errorf("hop %d: %d of %d answered: the SYN-ACK cut the wait for ICMP answers short", h.TTL, h.Received, h.Sent)
		}
	}
}

// OnRound sees the trace grow round by round, for the live view.
func TestTraceAllReportsEveryRound(t *testing.T) {
	dst := netip.MustParseAddr("198.18.2.2")
	cfg := fastConfig()
	cfg.Queries, cfg.Rounds, cfg.Interval, cfg.Protocol = 1, 3, 5*time.Millisecond, probe.UDP
	var mu sync.Mutex
	var sent []int
	opt := Options{Config: cfg, NewProber: func(context.Context, probe.Config) (probe.Prober, error) {
		return newFakePath(dst, "198.18.0.1", "198.18.1.1"), nil
	}, OnRound: func(i int, partial Trace) {
		mu.Lock()
		defer mu.Unlock()
		if i != 0 || !partial.Reached || partial.ReachedTTL != 3 || len(partial.Hops) != 3 || partial.Rounds != len(sent)+1 {
			t.Errorf("round %d: job %d, reached %v at %d, %d hops", partial.Rounds, i, partial.Reached, partial.ReachedTTL, len(partial.Hops))
			return
		}
		sent = append(sent, partial.Hops[0].Sent)
	}}
	traces := TraceAll(context.Background(), []Job{{Dest: Destination{Addr: dst, Protocol: probe.UDP, Port: 33434}}}, opt)
	if !slices.Equal(sent, []int{1, 2, 3}) {
		t.Errorf("hop 1 probes sent as seen after each round: %v, want [1 2 3]", sent)
	}
	if len(traces) != 1 || traces[0].Hops[0].Sent != 3 {
		t.Errorf("final trace %+v", traces)
	}
}
