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
)

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
		dr := Dial(ctx, s.opt.Dial, s.dst)
		if dr.Conn == nil && ctx.Err() != nil {
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
		idx := s.add(rec)
		out <- slotMsg{slot: id, kind: slotOpened, fresh: cn.Fresh, recIndex: idx}
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
			o, at, err := cn.Reuse()
			if err == nil {
				s.mu.Lock()
				s.res.Connections[idx].Uses++
				s.mu.Unlock()
				target = 0
				out <- slotMsg{slot: id, kind: slotSurvived, fresh: cn.Fresh, age: age, recIndex: idx}
				continue
			}
			pk, attr := s.packets(port, reqStart, o.IsReset() || o == OutcomeClosed)
			if o == OutcomeTimeout {
				s.dropOnce.Do(func() { s.locateDrop(ctx, cn) })
			}
			flow := s.flowCapture(port) // after the in-flow trace: its probes and answers are the flow's
			s.mu.Lock()
			r := &s.res.Connections[idx]
			r.Capture = flow
			r.Outcome, r.Phase, r.Error, r.IdleS, r.EndS, r.Packets = o, PhaseRequest, err.Error(), seconds(age), s.since(at), pk
			s.res.Counts[OutcomeOK]--
			s.res.Counts[o]++
			s.mu.Unlock()
			cn.Abort()
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
}

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
	// --conns bounds all simultaneous connections, the checks included.
	if width > extras {
		width -= extras
	}
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
	abStarted := false
	abFinal := make(chan time.Duration, 1)
	abRes := make(chan *probe.Attribution, 1)
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
	verifyStarted := false
	verifyRes := make(chan string, 1)
	verifyFinal := make(chan time.Duration, 1)
	ladderDone := false

	replan := func() {
		if l.Done() {
			return
		}
		var idx []int
		var in []Slot
		now := s.now()
		for i, st := range slots {
			if st.open && !st.busy && !st.done {
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
			}
			st.ctl <- p
		}
	}

	for running > 0 {
		var m slotMsg
		select {
		case m = <-out:
		case <-ctx.Done():
			m = <-out
		}
		st := slots[m.slot]
		switch m.kind {
		case slotStopped:
			running--
			st.done = true
			continue
		case slotOpened:
			st.open, st.busy, st.fresh, st.target = true, false, m.fresh, 0
		case slotDialFailed:
			openFailed++
		case slotSurvived:
			st.fresh, st.target = m.fresh, 0
			survivedN++
			l.Survived(m.age)
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
			if !s.observing() && !abStarted && f.behaviour == behaviourReset {
				abStarted = true
				go s.minTTLCheck(serverTTL, abFinal, abRes)
			}
			if opt.Verify && !verifyStarted && f.behaviour != behaviourClose {
				verifyStarted = true
				go s.verify(l.Lo, verifyFinal, verifyRes)
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
	verified := "not-tested"
	if verifyStarted {
		verifyFinal <- l.Hi
	}
	if abStarted {
		abFinal <- l.Hi
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

// verify opens one connection with TCP keepalive at half the survived
// idle time and, once the ladder has settled on the timeout (sent on
// final), holds it idle past the timeout and reuses it.
func (s *session) verify(lo time.Duration, final <-chan time.Duration, res chan<- string) {
	dr := Dial(context.Background(), s.opt.Dial, s.dst)
	if dr.Conn == nil {
		<-final
		res <- "not-tested"
		return
	}
	cn := dr.Conn
	defer cn.Abort()
	if err := cn.SetKeepAlive(max(lo/2, time.Second)); err != nil {
		<-final
		res <- "not-tested"
		return
	}
	hi := <-final
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
// connection idles past the timeout (from final), then gets IP_MINTTL one
// above the server's TTL (from ttl) and is reused.
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
		f.Origin, f.Hop = attr.Origin, attr.Hop
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
	f.Advice = IdleAdvice(l.Estimate(), idle.Behaviour)
	return f
}
