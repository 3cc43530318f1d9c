package tcpcheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hopcheck/hopcheck/localise"
	"github.com/hopcheck/hopcheck/probe"
)

// Options configure every test; zero values mean the defaults of the CLI.
type Options struct {
	Dial DialConfig
	// Width is the number of simultaneous connections: the idle ladder's
	// width and the concurrency cap.
	Width   int
	IdleMax time.Duration
	// Verify holds one connection past the idle timeout with TCP
	// keepalive at half of it.
	Verify bool
	Count  int     // connect: connections
	Rate   float64 // connect: connections per second
	// DataPath is the HTTP path of the data test's large transfer
	// (DefaultDataPath when empty).
	DataPath string
	// StallAfter: a data transfer without progress this long is a stall.
	StallAfter time.Duration
	// Observe captures packets with the flow observer (needs CAP_NET_RAW).
	Observe bool
	// HopAddress finds the address of the device at hop toward dst ("" if
	// unknown); nil: not looked up.
	HopAddress func(ctx context.Context, dst netip.AddrPort, hop int) string
	Log        func(format string, a ...any)
	// HopPrints traces toward dst for the hops' return-path fingerprints,
	// against which a captured RST is placed. nil: HopPrints (a short TCP
	// trace) when HopAddress is set, the sign that the caller allows
	// TTL-limited lookups; else not looked up (the TTL count stands).
	HopPrints func(ctx context.Context, dst netip.AddrPort, maxHop int) PathPrints
}

// Job is one address of one target.
type Job struct {
	Target Target
	Addr   netip.Addr
	DNS    time.Duration // time the name took to resolve
}

// session is the state of one test of one address.
type session struct {
	opt   Options
	job   Job
	dst   netip.AddrPort
	start time.Time
	attr  *Attributor

	dropOnce sync.Once
	dropAttr *probe.Attribution // where the flow state was lost (in-flow trace), nil unknown
	locating sync.WaitGroup     // the in-flow trace of a dropped flow
	// outer is the test's context before the idle runner's own
	// cancellation (the in-flow trace outlives the ladder).
	outer context.Context

	// idleDials counts the idle ladder's connection attempts, at most
	// idleDialCap.
	idleDials   atomic.Int32
	idleDialCap int

	login loginGate // the first AMQP login goes alone (amqp.go)

	mu       sync.Mutex
	res      Result
	nextID   int
	captures int // flow captures kept for evidence so far
}

// maxFlowCaptures bounds the failed connections whose packet history a
// session keeps for evidence (a few per finding are written).
const maxFlowCaptures = 16

func newSession(opt Options, job Job, start time.Time) *session {
	opt.Dial.App, opt.Dial.ServerName = job.Target.App, job.Target.ServerName()
	s := &session{opt: opt, job: job, dst: job.Target.Endpoint(job.Addr), start: start}
	s.res = Result{Target: job.Target.Name(), Address: job.Addr.String(), Port: job.Target.Spec.Port,
		App: job.Target.App, Counts: map[Outcome]int{}, Connections: []ConnRecord{},
		DNSMs: float64(job.DNS.Microseconds()) / 1000}
	a, err := NewAttributor(s.dst, opt.Observe)
	if err != nil {
		s.logf("flow observer for %s: %v", s.dst, err)
	}
	s.attr = a
	s.res.CaptureErr = a.CaptureErr()
	return s
}

func (s *session) logf(format string, a ...any) {
	if s.opt.Log != nil {
		s.opt.Log(format, a...)
	}
}

func (s *session) close() { s.attr.Close() }

// observing reports whether the flow observer captures packets.
func (s *session) observing() bool { return s.attr.Observing() }

// now is the session's clock (Options.Dial.TimeNow).
func (s *session) now() time.Time { return s.opt.Dial.now() }

func (s *session) since(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return seconds(t.Sub(s.start))
}

// learn takes the server fingerprint from a flow's SYN-ACK.
func (s *session) learn(port uint16) {
	if f, now := s.attr.Learn(port); now {
		s.setServerTTL(f.TTL)
	}
}

// learnUnobserved learns the server's SYN-ACK TTL by IP_MINTTL when no
// packets are captured (with capture, learn has done it).
func (s *session) learnUnobserved(ctx context.Context) {
	if s.observing() {
		return
	}
	if ttl := s.attr.LearnByMinTTL(ctx, s.opt.Dial); ttl > 0 {
		s.setServerTTL(ttl)
	}
}

func (s *session) setServerTTL(ttl int) {
	s.mu.Lock()
	s.res.ServerTTL, s.res.ServerHop = ttl, probe.SenderHop(ttl)
	s.mu.Unlock()
}

// capture is what the observer saw toward a port.
type capture = Capture

func (s *session) capture(port uint16, since time.Time, wait bool) capture {
	return s.attr.Capture(port, since, wait)
}

// attribute classifies captured FINs and RSTs against the flow's own
// fingerprint or the server's, and returns them with the attribution of
// the first one (nil if none).
func (s *session) attribute(c capture) ([]PacketRec, *probe.Attribution) {
	var out []PacketRec
	var first *probe.Attribution
	for _, x := range s.attr.Attribute(c) {
		seg, a := x.Seg, x.Attr
		out = append(out, PacketRec{Flags: flagString(seg.Flags), AtS: s.since(seg.At), TTL: seg.TTL, IPID: seg.IPID,
			DF: seg.DF, Seq: seg.Seq, Hop: a.Hop, Origin: a.Origin, Reason: a.Reason})
		if first == nil {
			first = &a
		}
	}
	return out, first
}

// packets captures and attributes at once.
func (s *session) packets(port uint16, since time.Time, wait bool) ([]PacketRec, *probe.Attribution) {
	return s.attribute(s.capture(port, since, wait))
}

// flowCapture is the observer's packet history of the failed flow on
// port, for evidence; nil without an observer, without packets, or past
// maxFlowCaptures.
func (s *session) flowCapture(port uint16) *probe.FlowCapture {
	if !s.observing() || port == 0 {
		return nil
	}
	s.mu.Lock()
	full := s.captures >= maxFlowCaptures
	s.mu.Unlock()
	if full {
		return nil
	}
	c := s.attr.History(port)
	if len(c.Packets) == 0 {
		return nil
	}
	s.mu.Lock()
	s.captures++
	s.mu.Unlock()
	return &c
}

// add appends a connection record and counts its outcome.
func (s *session) add(rec ConnRecord) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	rec.ID = s.nextID
	s.res.Connections = append(s.res.Connections, rec)
	s.res.Counts[rec.Outcome]++
	return len(s.res.Connections) - 1
}

// dialRecord turns a dial into a record.
func (s *session) dialRecord(dr DialResult) ConnRecord {
	rec := ConnRecord{LocalPort: dr.LocalPort, StartS: s.since(dr.Started), Phases: dr.Phases, Outcome: dr.Outcome, Phase: dr.Phase,
		Segment: dr.Segment}
	if dr.Err != nil {
		rec.Error = dr.Err.Error()
		rec.EndS = s.since(dr.FailedAt)
	}
	if dr.Conn != nil {
		rec.Status = dr.Conn.Status
	}
	var le *AMQPLoginError
	if errors.As(dr.Err, &le) {
		rec.AMQPReply = le.Reply()
	}
	return rec
}

// hopAddress looks up the device at hop (middleboxes only).
func (s *session) hopAddress(ctx context.Context, a *probe.Attribution) string {
	if a == nil || a.Origin != probe.OriginMiddlebox || a.Hop <= 0 || s.opt.HopAddress == nil {
		return ""
	}
	return s.opt.HopAddress(ctx, s.dst, a.Hop)
}

func (s *session) evidenceMode() string {
	if s.observing() {
		return "packets"
	}
	return "socket"
}

// locateDrop runs an in-flow trace on a connection whose request went
// unanswered: the last hop that still answers with time-exceeded for the
// flow's own segments is the box that drops them.
// flow is what the observer saw of it, taken before its record is
// forgotten.
func (s *session) locateDrop(ctx context.Context, cn *Conn, flow probe.FlowRecord) {
	if !s.observing() || !s.dst.Addr().Is4() {
		return
	}
	if !flow.Seen {
		return
	}
	s.mu.Lock()
	serverHop := s.res.ServerHop
	s.mu.Unlock()
	maxTTL := serverHop - 1
	if serverHop == 0 {
		maxTTL = 30
	}
	if maxTTL < 1 {
		return
	}
	answers, err := localise.RawInFlow(ctx, localise.FlowState{Local: cn.Local, Remote: s.dst, Seq: flow.LastAck, Ack: flow.NextSeq},
		maxTTL, localise.Options{Timeout: time.Second, MaxSilentTTLs: 3})
	if err != nil {
		s.logf("in-flow trace: %v", err)
		return
	}
	found := localise.TimeExceededFrom(answers)
	last := 0
	for ttl := range found {
		last = max(last, ttl)
	}
	switch {
	case last == 0:
		s.dropAttr = &probe.Attribution{Origin: probe.OriginUnknown,
			Reason: "in-flow trace: no hop answered the flow's own segments with time-exceeded"}
	case last < maxTTL:
		s.dropAttr = &probe.Attribution{Origin: probe.OriginMiddlebox, Hop: last,
			Reason: fmt.Sprintf("in-flow trace: the flow's own segments with TTL 1..%d drew time-exceeded from hop 1..%d (hop %d: %s) and none beyond it: hop %d drops the flow", maxTTL, last, last, found[last], last)}
	default:
		s.dropAttr = &probe.Attribution{Origin: probe.OriginUnknown,
			Reason: fmt.Sprintf("in-flow trace: every router up to hop %d forwarded the flow's segments: the flow is lost at or beyond the server's hop", maxTTL)}
	}
}
