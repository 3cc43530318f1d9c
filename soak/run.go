package soak

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Options configure a soak.
type Options struct {
	Duration time.Duration
	// Rate is requests per second per address.
	Rate float64
	// FreshShare of requests go over a new connection (the rest over
	// pooled keep-alive connections), 0..1.
	FreshShare float64
	// Pool is the most pooled connections per address: one or more hot
	// (reused whenever free, like the SDKs' pools) and the rest resting
	// on purpose so that requests sample every idle-age band.
	Pool int
	// MaxConns bounds connections open at once across all addresses
	// (pooled and in flight); a request that would exceed it is skipped.
	MaxConns int
	Dial     tcpcheck.DialConfig
	// Observe attributes resets with the flow observer (CAP_NET_RAW).
	Observe bool
	// HopPrints traces toward an address for its hops' return-path
	// fingerprints, against which a captured RST or FIN that a symmetric
	// count does not give to the server is placed (attrib.Attribute).
	// Called at most once per address per printsRefresh, when a reset
	// first needs it. nil: tcpcheck.HopPrints (TCP SYNs to the port).
	HopPrints func(ctx context.Context, dst netip.AddrPort, maxHop int) tcpcheck.PathPrints
	// MinuteRing is how many minutes of time series are kept (default 180).
	MinuteRing int
	// CheckpointEvery calls Checkpoint with the report so far (default 1
	// minute); nil Checkpoint: none.
	CheckpointEvery time.Duration
	Checkpoint      func(Report)
	// Evidence, when set, receives the packets of failed requests (see
	// NewEvidence).
	Evidence *Evidence
	Log      func(format string, a ...any)
}

// Defaults.
const (
	DefaultRate       = 2.0
	DefaultFreshShare = 0.1
	DefaultPool       = 8
	DefaultMinuteRing = 180
)

func (o Options) logf(format string, a ...any) {
	if o.Log != nil {
		o.Log(format, a...)
	}
}

// Run soaks every job concurrently until the duration is over or ctx is
// cancelled, and returns the report (Incomplete when cancelled).
func Run(ctx context.Context, opt Options, jobs []tcpcheck.Job) Report {
	if opt.Rate <= 0 {
		opt.Rate = DefaultRate
	}
	if opt.Pool <= 0 {
		opt.Pool = DefaultPool
	}
	if opt.MinuteRing <= 0 {
		opt.MinuteRing = DefaultMinuteRing
	}
	if opt.CheckpointEvery <= 0 {
		opt.CheckpointEvery = time.Minute
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = 1000
	}
	start := time.Now()
	budget := make(chan struct{}, opt.MaxConns)
	workers := make([]*worker, len(jobs))
	for i, j := range jobs {
		workers[i] = newWorker(opt, j, budget)
	}
	snapshot := func(final bool) Report {
		r := Report{SchemaVersion: SchemaVersion, Kind: "soak", StartedAt: start.UTC(), UpdatedAt: time.Now().UTC(),
			DurationS: math.Round(time.Since(start).Seconds()*10) / 10, PlannedS: opt.Duration.Seconds(), Rate: opt.Rate,
			FreshShare: opt.FreshShare, Pool: opt.Pool, Evidence: "socket", TLSProfile: opt.Dial.TLSProfile.OrDefault(),
			Targets: []TargetReport{}, Findings: []tcpcheck.Finding{},
			Checkpoint: !final, Incomplete: !final || ctx.Err() != nil}
		if opt.Observe {
			r.Evidence = "packets"
		}
		for _, w := range workers {
			t := w.summary()
			r.Targets = append(r.Targets, t)
			r.Findings = append(r.Findings, Findings(t)...)
		}
		return r
	}
	runCtx, cancel := context.WithTimeout(ctx, opt.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(runCtx, ctx, start.Add(opt.Duration))
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if opt.Checkpoint != nil {
		tick := time.NewTicker(opt.CheckpointEvery)
		defer tick.Stop()
	loop:
		for {
			select {
			case <-done:
				break loop
			case <-tick.C:
				opt.Checkpoint(snapshot(false))
			}
		}
	}
	<-done
	return snapshot(true)
}

// pconn is a pooled connection.
type pconn struct {
	c         *tcpcheck.Conn
	port      uint16
	restUntil time.Time // resting until then; zero: hot
	freeSince time.Time
}

// worker soaks one address.
type worker struct {
	opt    Options
	job    tcpcheck.Job
	dst    netip.AddrPort
	budget chan struct{}
	attr   *tcpcheck.Attributor
	prints *printCache // nil without capture

	mu       sync.Mutex
	agg      *Aggregator
	hot      []*pconn // free hot connections, most recently used last
	resting  []*pconn
	pooled   int // pooled connections, free or busy
	skipped  int
	freshAcc float64
	restSeq  int
	errText  string
	forget   []forgetAt
}

type forgetAt struct {
	port uint16
	at   time.Time
}

func newWorker(opt Options, job tcpcheck.Job, budget chan struct{}) *worker {
	opt.Dial.App, opt.Dial.ServerName = job.Target.App, job.Target.ServerName()
	w := &worker{opt: opt, job: job, dst: job.Target.Endpoint(job.Addr), budget: budget, agg: NewAggregator(opt.MinuteRing)}
	a, err := tcpcheck.NewAttributor(w.dst, opt.Observe)
	if err != nil {
		opt.logf("flow observer for %s: %v", w.dst, err)
	}
	w.attr = a
	if a.Observing() {
		lookup := opt.HopPrints
		if lookup == nil {
			lookup = tcpcheck.HopPrints
		}
		w.prints = newPrintCache(lookup, w.dst)
	}
	return w
}

func (w *worker) summary() TargetReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.agg.Summarize()
	t.Target, t.Address, t.Port, t.App = w.job.Target.Name(), w.job.Addr.String(), w.job.Target.Spec.Port, w.job.Target.App
	t.Skipped, t.Error = w.skipped, w.errText
	if fp := w.attr.Server(); fp.Known() {
		t.ServerTTL, t.ServerHop = fp.TTL, probe.SenderHop(fp.TTL)
	}
	if w.opt.Evidence != nil {
		t.EvidenceFiles = w.opt.Evidence.Files(w.job.Addr.String())
	}
	return t
}

// restBands are the bands pooled connections rest for on purpose; the
// < 30 s band is sampled by the hot connections.
var restBands = []Band{Band30to60s, Band1to5m, Band5to15m, Band15mPlus}

// hotMaxFree: a hot connection free this long (more were needed for a
// moment) is turned into a resting one, so hot ages stay short.
const hotMaxFree = 10 * time.Second

// restMargin keeps rests clear of the end of the soak.
const restMargin = 5 * time.Second

// nextRest returns the next rest target that ends before end, cycling
// over the bands and spreading targets within each (golden-ratio
// sequence); ok false when no band fits.
func (w *worker) nextRest(now, end time.Time) (time.Duration, bool) {
	left := end.Sub(now) - restMargin
	for range restBands {
		b := restBands[w.restSeq%len(restBands)]
		frac := math.Mod(float64(w.restSeq/len(restBands)+1)*0.6180339887498949, 1)
		w.restSeq++
		lo, hi := bandLimits[b][0], bandLimits[b][1]
		hi = min(hi, left)
		if hi <= lo {
			continue
		}
		return lo + time.Duration(frac*float64(hi-lo)), true
	}
	return 0, false
}

// action is what one tick does.
type action struct {
	fresh bool
	pc    *pconn
}

// plan picks the request of a tick (under w.mu): a fresh connection for
// the fresh share or while the pool is below its size, else the resting
// connection most overdue, else the most recently used hot one.
func (w *worker) plan(now, end time.Time) action {
	// Hot connections left free too long start resting (or go).
	keep := w.hot[:0]
	for i, pc := range w.hot {
		if i < len(w.hot)-1 && now.Sub(pc.freeSince) > hotMaxFree {
			if d, ok := w.nextRest(now, end); ok && len(w.resting) < w.opt.Pool-1 {
				pc.restUntil = pc.c.Fresh.Add(d)
				w.resting = append(w.resting, pc)
				continue
			}
			w.pooled--
			w.discard(pc)
			continue
		}
		keep = append(keep, pc)
	}
	w.hot = keep
	w.freshAcc += w.opt.FreshShare
	if w.freshAcc >= 1 {
		w.freshAcc--
		return action{fresh: true}
	}
	due := -1
	for i, pc := range w.resting {
		if !pc.restUntil.After(now) && (due < 0 || pc.restUntil.Before(w.resting[due].restUntil)) {
			due = i
		}
	}
	if due >= 0 {
		pc := w.resting[due]
		w.resting = append(w.resting[:due], w.resting[due+1:]...)
		return action{pc: pc}
	}
	if w.pooled < w.opt.Pool || len(w.hot) == 0 {
		return action{fresh: true}
	}
	pc := w.hot[len(w.hot)-1]
	w.hot = w.hot[:len(w.hot)-1]
	return action{pc: pc}
}

// release returns a connection that just served a request to the pool
// (under w.mu): resting while rest slots are free and a rest fits, else
// hot.
func (w *worker) release(pc *pconn, now, end time.Time) {
	pc.freeSince = now
	pc.restUntil = time.Time{}
	if len(w.resting) < w.opt.Pool-1 && len(w.hot) > 0 {
		if d, ok := w.nextRest(now, end); ok {
			pc.restUntil = pc.c.Fresh.Add(d)
			w.resting = append(w.resting, pc)
			return
		}
	}
	w.hot = append(w.hot, pc)
}

// discard aborts a connection and frees its budget slot.
func (w *worker) discard(pc *pconn) {
	pc.c.Abort()
	<-w.budget
	if w.attr.Observing() {
		w.forget = append(w.forget, forgetAt{pc.port, time.Now()})
	}
}

func (w *worker) run(ctx, parent context.Context, end time.Time) {
	defer w.attr.Close()
	interval := time.Duration(float64(time.Second) / w.opt.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	for {
		select {
		case <-ctx.Done():
		case now := <-tick.C:
			w.mu.Lock()
			w.forgetOld(now)
			a := w.plan(now, end)
			if a.fresh || a.pc == nil {
				select {
				case w.budget <- struct{}{}:
				default:
					w.skipped++
					w.mu.Unlock()
					continue
				}
				w.pooled++ // reserved; undone if it does not join the pool
			}
			w.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if a.pc != nil {
					w.reuse(ctx, parent, a.pc, end)
				} else {
					w.fresh(ctx, parent, end)
				}
			}()
			continue
		}
		break
	}
	wg.Wait()
	if w.prints != nil {
		w.prints.wait() // a background refresh, cut short by ctx
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pc := range append(w.hot, w.resting...) {
		w.discard(pc)
	}
	w.hot, w.resting, w.pooled = nil, nil, 0
}

// forgetOld drops observer records of connections closed a while ago
// (late segments of theirs have arrived by then), keeping the observer's
// memory bounded.
func (w *worker) forgetOld(now time.Time) {
	n := 0
	for _, f := range w.forget {
		if now.Sub(f.at) < 3*time.Second {
			break
		}
		w.attr.Forget(f.port)
		n++
	}
	w.forget = append(w.forget[:0], w.forget[n:]...)
}

// fresh makes a request over a new connection; it joins the pool when
// the pool is below its size.
func (w *worker) fresh(ctx, parent context.Context, end time.Time) {
	start := time.Now()
	dr := tcpcheck.Dial(ctx, w.opt.Dial, w.dst)
	out, phase, err := dr.Outcome, dialPhase(dr), dr.Err
	if dr.Conn != nil && w.opt.Dial.App == tcpcheck.AppTCP {
		// Plain TCP: the request is one echo exchange.
		out, _, err = dr.Conn.Reuse()
		if err != nil {
			phase = requestPhase(err)
		}
	}
	latency := float64(time.Since(start).Microseconds()) / 1000
	if out != tcpcheck.OutcomeOK && parent.Err() != nil {
		// Interrupted, not failed.
		w.mu.Lock()
		w.pooled--
		w.mu.Unlock()
		<-w.budget
		return
	}
	s := Sample{At: start, Fresh: true, Outcome: out, LatencyMs: latency}
	if out != tcpcheck.OutcomeOK {
		s.Phase = phase
		s.Origin, s.Hop, s.Place = w.attribute(ctx, dr.LocalPort, start, out)
	} else {
		w.attr.Learn(dr.LocalPort)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.agg.Add(s)
	if out != tcpcheck.OutcomeOK || dr.Conn == nil {
		if dr.Conn != nil {
			dr.Conn.Abort()
		}
		w.pooled--
		<-w.budget
		if w.attr.Observing() {
			w.forget = append(w.forget, forgetAt{dr.LocalPort, time.Now()})
		}
		return
	}
	pc := &pconn{c: dr.Conn, port: dr.LocalPort}
	if w.pooled > w.opt.Pool || ctx.Err() != nil {
		w.pooled--
		w.discard(pc)
		return
	}
	w.release(pc, time.Now(), end)
}

// reuse makes a request over a pooled connection.
func (w *worker) reuse(ctx, parent context.Context, pc *pconn, end time.Time) {
	start := time.Now()
	age := start.Sub(pc.c.Fresh)
	out, _, err := pc.c.Reuse()
	latency := float64(time.Since(start).Microseconds()) / 1000
	if out != tcpcheck.OutcomeOK && parent.Err() != nil {
		w.mu.Lock()
		w.pooled--
		w.discard(pc)
		w.mu.Unlock()
		return
	}
	s := Sample{At: start, IdleAge: age, Outcome: out, LatencyMs: latency}
	if out != tcpcheck.OutcomeOK {
		s.Phase = requestPhase(err)
		s.Origin, s.Hop, s.Place = w.attribute(ctx, pc.port, start, out)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.agg.Add(s)
	if out != tcpcheck.OutcomeOK || ctx.Err() != nil {
		w.pooled--
		w.discard(pc)
		return
	}
	w.release(pc, time.Now(), end)
}

// attribute finds the FIN or RST that ended a failed request and who
// sent it: one that a symmetric TTL count does not give to the server is
// placed by the hops' return-path fingerprints (traced once per address,
// see printCache), as `tcp idle` places it. Runs in the request's
// goroutine without w.mu; evidence of the flow is written when asked for.
func (w *worker) attribute(ctx context.Context, port uint16, since time.Time, out tcpcheck.Outcome) (probe.Origin, int, Placement) {
	if !w.attr.Observing() || port == 0 {
		return probe.OriginUnknown, 0, Placement{}
	}
	c := w.attr.Capture(port, since, out.IsReset() || out == tcpcheck.OutcomeClosed)
	origin, hop, place := probe.OriginUnknown, 0, Placement{}
	var prints tcpcheck.PathPrints
	as := w.attr.Attribute(c)
	if len(as) > 0 && as[0].Attr.Origin != probe.OriginServer && w.prints != nil {
		prints = w.prints.get(ctx, w.traceMaxHop())
	}
	// The history is read after the fingerprints: a server answer that
	// follows the RST has had time to arrive.
	var history probe.FlowCapture
	if len(as) > 0 || w.opt.Evidence != nil {
		history = w.attr.History(port)
	}
	if len(as) > 0 {
		server := c.FP
		if !server.Known() {
			server = w.attr.Server()
		}
		seg := as[0].Seg
		origin, hop, place = placeReset(seg, server, as[0].Attr, prints, tcpcheck.ServerAnswerAfter(&history, seg.TTL, server.TTL))
	}
	if w.opt.Evidence != nil {
		w.opt.Evidence.Write(w.job.Addr.String(), string(out), history)
	}
	return origin, hop, place
}

// traceMaxHop is how far a fingerprint trace goes: one beyond the
// server's counted hop (beyond it only the server answers), as `tcp idle`
// traces; 30 while the server is unknown.
func (w *worker) traceMaxHop() int {
	if hop := probe.SenderHop(w.attr.Server().TTL); hop > 0 {
		return min(hop+1, 30)
	}
	return 30
}

func dialPhase(dr tcpcheck.DialResult) Phase {
	switch dr.Phase {
	case tcpcheck.PhaseTCP:
		return PhaseConnect
	case tcpcheck.PhaseTLS:
		return PhaseTLS
	}
	return requestPhase(dr.Err)
}

// requestPhase tells a failure while sending the request from one while
// waiting for or reading the answer.
func requestPhase(err error) Phase {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "write" {
		return PhaseWrite
	}
	if errors.Is(err, syscall.EPIPE) {
		return PhaseWrite
	}
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return PhaseRead
	}
	return PhaseRead
}
