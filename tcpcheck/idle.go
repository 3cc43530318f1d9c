package tcpcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// slotEvent is what happened to a connection slot of the idle test.
type slotEvent int

// Slot events.
const (
	slotOpened     slotEvent = iota + 1 // a fresh connection is up
	slotDialFailed                      // a fresh connection could not be made
	slotSurvived                        // a reuse after idling worked
	slotFailed                          // a reuse after idling failed
	slotEnded                           // FIN or RST while idle
	slotStopped                         // the slot's goroutine ended
	slotReusing                         // a reuse after idling started
)

// stopSlot is the control message that closes a slot's connection for
// good (Retire with the connection budget spent).
const stopSlot time.Duration = -2

// Idle failure behaviours (IdleResult.Behaviour).
const (
	behaviourReset = "reset"
	behaviourDrop  = "drop"
	behaviourClose = "close"
)

// slotMsg is what a connection slot of the idle test reports.
type slotMsg struct {
	slot int
	kind slotEvent
	// fresh is when the connection became fresh (open, survived).
	fresh time.Time
	age   time.Duration // idle age of the reuse or of the end
	// behaviour of a failure: reset, drop, close.
	behaviour string
	attr      *probe.Attribution
	recIndex  int
	handshake time.Duration // opened: the TCP handshake's time (a round trip)
}

// behaviourOf names how an idle connection failed.
func behaviourOf(o Outcome) string {
	switch o {
	case OutcomeTimeout:
		return behaviourDrop
	case OutcomeClosed:
		return behaviourClose
	}
	return behaviourReset
}

// endBehaviour names how the stream ended while idle.
func endBehaviour(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return behaviourClose
	}
	if errors.Is(err, syscall.ETIMEDOUT) {
		return behaviourDrop
	}
	return behaviourReset
}

// runSlot keeps one connection: dial, idle until its target age (or until
// the stream ends), reuse, report; redial after failures or on Retire.
func (s *session) runSlot(ctx context.Context, id int, ctl <-chan time.Duration, out chan<- slotMsg) {
	failures := 0
	for ctx.Err() == nil {
		if s.idleDials.Add(1) > int32(s.idleDialCap) {
			return // the test's connection budget is spent
		}
		dr, skipped := s.dial(ctx)
		if skipped || (dr.Conn == nil && ctx.Err() != nil) {
			return
		}
		rec := s.dialRecord(dr)
		if dr.Conn == nil {
			rec.Packets, _ = s.packets(dr.LocalPort, dr.Started, dr.Outcome.IsReset())
			rec.Capture = s.flowCapture(dr.LocalPort)
			idx := s.add(rec)
			out <- slotMsg{slot: id, kind: slotDialFailed, recIndex: idx}
			failures++
			if failures >= 3 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		failures = 0
		s.learn(dr.LocalPort)
		cn := dr.Conn
		handshake := time.Duration(dr.Phases.TCP * float64(time.Millisecond))
		// A silent drop shows when the retransmissions of the reuse give
		// up: after a few round trips, not the default seconds.
		if ut := min(max(idleUserTimeout, 8*handshake), s.opt.Dial.UserTimeout); ut > 0 && ut < s.opt.Dial.UserTimeout {
			if err := cn.SetUserTimeout(ut); err != nil {
				s.logf("TCP_USER_TIMEOUT: %v", err)
			}
		}
		idx := s.add(rec)
		out <- slotMsg{slot: id, kind: slotOpened, fresh: cn.Fresh, recIndex: idx, handshake: handshake}
		if !s.holdConn(ctx, id, cn, idx, ctl, out) {
			return
		}
	}
}

// holdConn idles cn until its target, reuses it, and repeats; it returns
// false when the slot is to stop, true to redial.
func (s *session) holdConn(ctx context.Context, id int, cn *Conn, idx int, ctl <-chan time.Duration, out chan<- slotMsg) bool {
	target := time.Duration(0)
	port := cn.Local.Port()
	defer s.attr.Forget(port)
	for {
		var fire <-chan time.Time
		var timer *time.Timer
		if target > 0 {
			timer = time.NewTimer(cn.Fresh.Add(target).Sub(s.now()))
			fire = timer.C
		}
		stop := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			cn.Abort()
			return false
		case t, ok := <-ctl:
			stop()
			if !ok {
				cn.Abort()
				return false
			}
			if t == Retire {
				cn.Abort()
				return true
			}
			if t == stopSlot {
				cn.Abort()
				return false
			}
			target = t
		case ev, ok := <-cn.Events():
			stop()
			if !ok || ev.err == nil {
				// Unexpected data while idle: not an idle failure; the
				// connection is of no further use.
				cn.Abort()
				return true
			}
			age := ev.at.Sub(cn.Fresh)
			pk, attr := s.packets(port, cn.Fresh, true)
			flow := s.flowCapture(port)
			s.mu.Lock()
			r := &s.res.Connections[idx]
			r.Capture = flow
			r.Outcome, r.Phase, r.Error, r.IdleS, r.EndS = Classify(PhaseRequest, ev.err), PhaseRequest, "while idle: "+ev.err.Error(), seconds(age), s.since(ev.at)
			r.Packets = pk
			s.res.Counts[OutcomeOK]--
			s.res.Counts[r.Outcome]++
			s.mu.Unlock()
			cn.Abort()
			out <- slotMsg{slot: id, kind: slotEnded, age: age, behaviour: endBehaviour(ev.err), attr: attr, recIndex: idx}
			return true
		case <-fire:
			age := s.now().Sub(cn.Fresh)
			reqStart := s.now()
			out <- slotMsg{slot: id, kind: slotReusing, age: age, recIndex: idx}
			// A reuse still waiting when the ladder is done (a drop being
			// confirmed) is cut short: its answer is no longer needed.
			stopAbort := context.AfterFunc(ctx, func() { cn.Abort() })
			o, at, err := cn.Reuse()
			if !stopAbort() || ctx.Err() != nil {
				cn.Abort()
				return false
			}
			if err == nil {
				s.mu.Lock()
				s.res.Connections[idx].Uses++
				s.mu.Unlock()
				target = 0
				out <- slotMsg{slot: id, kind: slotSurvived, fresh: cn.Fresh, age: age, recIndex: idx}
				continue
			}
			pk, attr := s.packets(port, reqStart, o.IsReset() || o == OutcomeClosed)
			locating := false
			if o == OutcomeTimeout {
				// Locate the drop on this flow while the ladder goes on: its
				// answer must not wait for the in-flow trace.
				s.dropOnce.Do(func() {
					locating = true
					s.locating.Add(1)
					flow := s.attr.Flow(port)
					go func() {
						defer s.locating.Done()
						defer cn.Abort()
						lctx, cancel := context.WithTimeout(s.outer, time.Minute)
						defer cancel()
						s.locateDrop(lctx, cn, flow)
					}()
				})
			}
			flow := s.flowCapture(port) // after the in-flow trace: its probes and answers are the flow's
			s.mu.Lock()
			r := &s.res.Connections[idx]
			r.Capture = flow
			r.Outcome, r.Phase, r.Error, r.IdleS, r.EndS, r.Packets = o, PhaseRequest, err.Error(), seconds(age), s.since(at), pk
			s.res.Counts[OutcomeOK]--
			s.res.Counts[o]++
			s.mu.Unlock()
			if !locating {
				cn.Abort()
			}
			out <- slotMsg{slot: id, kind: slotFailed, age: age, behaviour: behaviourOf(o), attr: attr, recIndex: idx}
			return true
		}
	}
}

// slotState is the main loop's view of a slot.
type slotState struct {
	ctl    chan time.Duration
	open   bool
	fresh  time.Time
	target time.Duration
	busy   bool // dialing
	done   bool
	// reusing: a reuse at idle age reuseAge started at reuseAt and has
	// not been answered yet.
	reusing  bool
	reuseAt  time.Time
	reuseAge time.Duration
}

// Idle runner tuning.
const (
	// idleUserTimeout is the least TCP_USER_TIMEOUT of ladder connections
	// (8 handshake round trips when longer, at most DialConfig's).
	idleUserTimeout = time.Second
	// answerDue is how long a reuse's answer may take beyond 4 handshake
	// round trips before the ladder treats the reuse as a probable
	// failure (Ladder.Pending).
	answerDue = 250 * time.Millisecond
)

// idleFailure is one failure the ladder learnt from.
type idleFailure struct {
	age       time.Duration
	behaviour string
	attr      *probe.Attribution
	whileIdle bool
}

// RunIdle searches the idle timeout of one address.
func RunIdle(ctx context.Context, opt Options, job Job, start time.Time) (Result, []Finding) {
	s := newSession(opt, job, start)
	defer s.close()
	s.outer = ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	l := NewLadder(opt.IdleMax)
	width := max(opt.Width, 1)
	// The keepalive check and the IP_MINTTL check use a connection each.
	extras := 0
	if opt.Verify {
		extras++
	}
	if !s.observing() {
		extras++
	}
	// --conns bounds all simultaneous connections, the checks included;
	// MaxIdleConns all connections of the test, redials included.
	if width > extras {
		width -= extras
	}
	width = min(width, MaxIdleConns-extras)
	s.idleDialCap = MaxIdleConns - extras
	// Without packet capture, learn the server's TTL with IP_MINTTL.
	serverTTL := make(chan int, 2)
	if !s.observing() {
		go func() {
			s.learnUnobserved(ctx)
			s.mu.Lock()
			ttl := s.res.ServerTTL
			s.mu.Unlock()
			serverTTL <- ttl
		}()
	}
	// The checks' connections open now, beside the ladder's: when the
	// ladder is done they have idled long enough already.
	abStarted := !s.observing()
	abFinal := make(chan time.Duration, 1)
	abRes := make(chan *probe.Attribution, 1)
	if abStarted {
		go s.minTTLCheck(serverTTL, abFinal, abRes)
	}
	verifyStarted := opt.Verify
	verifyRes := make(chan string, 1)
	verifyFinal := make(chan time.Duration, 1)
	verifyLo := make(chan time.Duration, 1)
	if verifyStarted {
		go s.verify(verifyLo, verifyFinal, verifyRes)
	}
	out := make(chan slotMsg, 4*width)
	slots := make([]*slotState, width)
	running := 0
	for i := range slots {
		slots[i] = &slotState{ctl: make(chan time.Duration, 64), busy: true}
		running++
		go func() {
			s.runSlot(ctx, i, slots[i].ctl, out)
			out <- slotMsg{slot: i, kind: slotStopped}
		}()
	}
	var failures []idleFailure
	survivedN, openFailed := 0, 0
	ladderDone := false
	var handshake time.Duration // the longest TCP handshake seen
	due := func() time.Duration { return answerDue + 4*handshake }

	replan := func() {
		if l.Done() {
			return
		}
		var idx []int
		var in []Slot
		now := s.now()
		l.Pending = 0
		for _, st := range slots {
			if st.reusing && now.Sub(st.reuseAt) >= due() && st.reuseAge > l.Lo && (l.Pending == 0 || st.reuseAge < l.Pending) {
				l.Pending = st.reuseAge
			}
		}
		for i, st := range slots {
			if st.open && !st.busy && !st.done && !st.reusing {
				idx = append(idx, i)
				in = append(in, Slot{Age: now.Sub(st.fresh), Target: st.target})
			}
		}
		plan := l.Plan(in)
		for j, i := range idx {
			st := slots[i]
			p := plan[j]
			if p == st.target {
				continue
			}
			st.target = p
			if p == Retire {
				st.open, st.busy, st.target = false, true, 0
				if s.idleDials.Load() >= int32(s.idleDialCap) {
					p = stopSlot // no budget for a fresh one
				}
			}
			st.ctl <- p
		}
	}

	for running > 0 {
		// Wake up when an unanswered reuse becomes a probable failure.
		var wake <-chan time.Time
		var wakeTimer *time.Timer
		if !ladderDone {
			next := time.Duration(-1)
			for _, st := range slots {
				if st.reusing && st.reuseAge > l.Lo && (l.Pending == 0 || st.reuseAge < l.Pending) {
					if d := st.reuseAt.Add(due()).Sub(s.now()); d > 0 && (next < 0 || d < next) {
						next = d
					}
				}
			}
			if next >= 0 {
				wakeTimer = time.NewTimer(next)
				wake = wakeTimer.C
			}
		}
		var m slotMsg
		woken := false
		select {
		case m = <-out:
		case <-wake:
			woken = true
		case <-ctx.Done():
			m = <-out
		}
		if wakeTimer != nil {
			wakeTimer.Stop()
		}
		if woken {
			replan()
			continue
		}
		st := slots[m.slot]
		if m.kind != slotReusing {
			st.reusing = false
		}
		switch m.kind {
		case slotReusing:
			st.reusing, st.reuseAt, st.reuseAge = true, s.now(), m.age
		case slotStopped:
			running--
			st.done = true
			continue
		case slotOpened:
			st.open, st.busy, st.fresh, st.target = true, false, m.fresh, 0
			handshake = max(handshake, m.handshake)
		case slotDialFailed:
			openFailed++
		case slotSurvived:
			st.fresh, st.target = m.fresh, 0
			survivedN++
			l.Survived(m.age)
			if verifyStarted {
				select { // the latest Lo wins
				case <-verifyLo:
				default:
				}
				verifyLo <- l.Lo
			}
		case slotFailed, slotEnded:
			st.open, st.busy, st.target = false, true, 0
			f := idleFailure{age: m.age, behaviour: m.behaviour, attr: m.attr, whileIdle: m.kind == slotEnded}
			failures = append(failures, f)
			l.Failed(m.age)
			if f.whileIdle {
				// The box or server signalled the expiry when it happened:
				// the connection lived idle until just before.
				l.Survived(m.age - minSpacing)
			}
		}
		if m.kind == slotDialFailed && openFailed >= 3*width && survivedN == 0 && len(failures) == 0 {
			s.res.Error = "connections cannot be opened: see connections[]"
			cancel()
		}
		if l.Done() && !ladderDone {
			ladderDone = true
			cancel()
		}
		if !ladderDone {
			replan()
		}
	}
	s.locating.Wait()
	verified := "not-tested"
	// The checks apply to an idle failure (a reset, for the IP_MINTTL
	// one), not to a close; otherwise they end untested.
	checked := func(ok func(f idleFailure) bool) time.Duration {
		for _, f := range failures {
			if ok(f) {
				return l.Hi
			}
		}
		return 0
	}
	if verifyStarted {
		verifyFinal <- checked(func(f idleFailure) bool { return f.behaviour != behaviourClose })
	}
	if abStarted {
		abFinal <- checked(func(f idleFailure) bool { return f.behaviour == behaviourReset })
		if a := <-abRes; a != nil {
			for i := range failures {
				if failures[i].attr == nil {
					failures[i].attr = a
				}
			}
		}
	}
	if verifyStarted {
		verified = <-verifyRes
	}
	hi := l.Hi
	idle := &IdleResult{TimeoutS: seconds(l.Estimate()), BracketS: [2]float64{seconds(l.Lo), seconds(hi)}, MaxS: seconds(opt.IdleMax),
		Width: width + extras, Verified: verified}
	if ctx.Err() != nil && !ladderDone && s.res.Error == "" {
		s.res.Error = "interrupted"
	}
	var findings []Finding
	if hi > 0 && len(failures) > 0 {
		idle.Behaviour = majorityBehaviour(failures)
		if ic, ok := protocolFor(s.opt.Dial.App).(idleCauser); ok {
			idle.Cause, idle.Note = ic.idleCause(s.opt.Dial, idle.Behaviour, hi, failures, s.res.Connections)
		}
		if idle.Cause == "" {
			findings = append(findings, s.idleFinding(context.Background(), l, idle, failures))
		}
	}
	s.res.Idle = idle
	return s.res, findings
}

// verify opens one connection at the start with TCP keepalive at half
// the longest idle time known to survive (updates on lo; at least 1 s)
// and, once the ladder has settled on the timeout (sent on final), holds
// it idle past the timeout and reuses it.
func (s *session) verify(lo <-chan time.Duration, final <-chan time.Duration, res chan<- string) {
	dr := Dial(context.Background(), s.opt.Dial, s.dst)
	if dr.Conn == nil {
		<-final
		res <- "not-tested"
		return
	}
	cn := dr.Conn
	defer cn.Abort()
	keepalive := time.Second
	if err := cn.SetKeepAlive(keepalive); err != nil {
		<-final
		res <- "not-tested"
		return
	}
	var hi time.Duration
wait:
	for {
		select {
		case l := <-lo:
			// Setting the idle time again re-arms the kernel's keepalive
			// timer from the last packet.
			if k := l / 2; k > keepalive+keepalive/10 {
				keepalive = k
				_ = cn.SetKeepAlive(keepalive)
			}
		case hi = <-final:
			break wait
		}
	}
	if hi <= 0 {
		res <- "not-tested"
		return
	}
	if holdAndReuse(cn, hi) != OutcomeOK {
		res <- "failed"
		return
	}
	res <- "survived"
}

// holdAndReuse keeps cn idle until just past hi, then reuses it.
func holdAndReuse(cn *Conn, hi time.Duration) Outcome {
	hold := time.NewTimer(cn.Fresh.Add(hi + max(500*time.Millisecond, hi/20)).Sub(cn.now()))
	defer hold.Stop()
	select {
	case ev, ok := <-cn.Events():
		if !ok || ev.err == nil {
			return OutcomeAppError
		}
		return Classify(PhaseRequest, ev.err)
	case <-hold.C:
	}
	o, _, _ := cn.Reuse()
	return o
}

// minTTLCheck is the unprivileged A/B check of a reset's origin: one
// connection, opened at the start, idles past the timeout (from final),
// then gets IP_MINTTL one above the server's TTL (from ttl) and is
// reused.
func (s *session) minTTLCheck(ttl <-chan int, final <-chan time.Duration, res chan<- *probe.Attribution) {
	dr := Dial(context.Background(), s.opt.Dial, s.dst)
	if dr.Conn != nil {
		defer dr.Conn.Abort()
	}
	serverTTL := <-ttl
	hi := <-final
	if dr.Conn == nil || hi <= 0 || serverTTL <= 0 {
		res <- nil
		return
	}
	cn := dr.Conn
	hold := time.NewTimer(cn.Fresh.Add(hi + max(500*time.Millisecond, hi/20)).Sub(cn.now()))
	defer hold.Stop()
	select {
	case <-cn.Events():
		res <- nil // ended while idle: the reset came unasked, nothing to compare
		return
	case <-hold.C:
	}
	if err := cn.SetMinTTL(serverTTL + 1); err != nil {
		res <- nil
		return
	}
	o, _, _ := cn.Reuse()
	res <- MinTTLVerdict(serverTTL, o)
}

// majorityBehaviour is the commonest failure behaviour.
func majorityBehaviour(fs []idleFailure) string {
	n := map[string]int{}
	best := ""
	for _, f := range fs {
		n[f.behaviour]++
		if best == "" || n[f.behaviour] > n[best] {
			best = f.behaviour
		}
	}
	return best
}

func (s *session) idleFinding(ctx context.Context, l *Ladder, idle *IdleResult, fs []idleFailure) Finding {
	kind := map[string]string{behaviourReset: KindIdleReset, behaviourDrop: KindIdleDrop, behaviourClose: KindIdleClose}[idle.Behaviour]
	f := Finding{Kind: kind, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginUnknown, Confidence: "medium",
		IdleTimeoutS: idle.TimeoutS, IdleBracketS: []float64{idle.BracketS[0], idle.BracketS[1]}}
	var attr *probe.Attribution
	sameBehaviour := 0
	whileIdle := 0
	for _, x := range fs {
		if x.behaviour != idle.Behaviour {
			continue
		}
		sameBehaviour++
		if x.whileIdle {
			whileIdle++
		}
		if attr == nil && x.attr != nil {
			attr = x.attr
		}
	}
	f.Evidence = append(f.Evidence, fmt.Sprintf("%d connection(s) failed (%s) after idling %.1fs or more; the longest idle that still worked was %.1fs",
		sameBehaviour, idle.Behaviour, idle.BracketS[1], idle.BracketS[0]))

	if whileIdle > 0 {
		f.Evidence = append(f.Evidence, fmt.Sprintf("%d of them were ended by the other side while idle, at the moment of expiry", whileIdle))
	}
	if attr != nil {
		f.Origin, f.Hop, f.Method = attr.Origin, attr.Hop, countMethod(attr)
		f.Evidence = append(f.Evidence, attr.Reason)
		switch {
		case !s.observing():
			f.Confidence = "low"
		case attr.Origin != probe.OriginUnknown && sameBehaviour >= 2:
			f.Confidence = "high"
		}
		ra := s.reattribute(ctx, attr) // return-path fingerprints (tcpcheck/attrib.go)
		if ra == nil {
			f.HopAddress = s.hopAddress(ctx, attr)
		}
		if f.Origin == probe.OriginServer {
			f.Hop = s.res.ServerHop
		}
		ra.apply(&f)
	} else if idle.Behaviour == behaviourDrop {
		f.Evidence = append(f.Evidence, "no FIN or RST arrived: the request went unanswered until TCP_USER_TIMEOUT (a box on the path lost the flow's state, or the server vanished)")
		if a := s.dropAttr; a != nil {
			f.Evidence = append(f.Evidence, a.Reason)
			f.Origin, f.Hop = a.Origin, a.Hop
			if a.Origin == probe.OriginMiddlebox && a.Hop > 0 {
				f.HopAddress = s.hopAddress(ctx, a)
			}
		}
	} else if !s.observing() {
		f.Confidence = "low"
		f.Evidence = append(f.Evidence, "no packet capture (no CAP_NET_RAW): the sender of the FIN/RST is unknown")
	}
	switch idle.Verified {
	case "survived":
		f.Evidence = append(f.Evidence, "a connection with TCP keepalive at half the timeout survived past it")
	case "failed":
		f.Evidence = append(f.Evidence, "a connection with TCP keepalive at half the timeout did NOT survive past it: the box ignores keepalives; evict idle connections instead")
	}
	f.Advice = WithProxyAdvice(IdleAdvice(l.Estimate(), idle.Behaviour), f.Origin, idle.TimeoutS)
	// A box's timeout (not the server's keep-alive) is judged against RFC
	// 5382 and the vendor defaults, for its owner.
	if f.Origin != probe.OriginServer && (f.Kind != KindIdleClose || f.Origin == probe.OriginMiddlebox) {
		verdict := NewIdleVerdict(idle.TimeoutS, idle.BracketS[0], idle.BracketS[1])
		f.IdleVerdict = &verdict
		f.Evidence = append(f.Evidence, verdict.Evidence(idle.TimeoutS))
		f.Advice = verdict.WithOwnerAdvice(f.Advice, idle.TimeoutS)
	}
	return f
}
