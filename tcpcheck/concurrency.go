package tcpcheck

import (
	"context"
	"fmt"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// RunConcurrency opens connections one after another and keeps them open,
// up to opt.Width, checking after each that the new one works and the
// open ones are still alive; it finds where new ones are refused or reset
// and where open ones get reset.
func RunConcurrency(ctx context.Context, opt Options, job Job, start time.Time) (Result, []Finding) {
	s := newSession(opt, job, start)
	defer s.close()
	type open struct {
		cn  *Conn
		idx int
	}
	var conns []open
	defer func() {
		for _, o := range conns {
			o.cn.Abort()
		}
	}()
	s.learnUnobserved(ctx)
	cr := &ConcResult{Cap: opt.Width}
	s.res.Concurrency = cr
	var failAttrs []probe.Attribution
	limit := 0
	extraFails := 0
	for i := 1; i <= opt.Width && ctx.Err() == nil; i++ {
		dr, skipped := s.dial(ctx)
		if skipped || (dr.Conn == nil && ctx.Err() != nil) {
			break
		}
		rec := s.dialRecord(dr)
		ok := dr.Conn != nil
		var failPort uint16
		var failSince time.Time
		if ok {
			s.learn(dr.LocalPort)
			// One more exchange proves the connection is really served
			// (a server over its limit may accept and then reset).
			time.Sleep(20 * time.Millisecond)
			o, at, err := dr.Conn.Reuse()
			if err != nil {
				ok = false
				rec.Outcome, rec.Phase, rec.Error, rec.EndS = o, PhaseRequest, err.Error(), s.since(at)
				failPort, failSince = dr.LocalPort, dr.Started
				dr.Conn.Abort()
			}
		} else {
			failPort, failSince = dr.LocalPort, dr.Started
		}
		if !ok {
			pk, a := s.packets(failPort, failSince, true)
			rec.Packets, rec.Capture = pk, s.flowCapture(failPort)
			if a != nil {
				failAttrs = append(failAttrs, *a)
			}
			s.add(rec)
			if limit == 0 {
				limit = len(conns)
				cr.FirstFail = i
			}
			extraFails++
			// Two more attempts confirm a limit rather than a fluke.
			if extraFails >= 3 {
				break
			}
			continue
		}
		idx := s.add(rec)
		conns = append(conns, open{dr.Conn, idx})
		cr.Reached = max(cr.Reached, len(conns))
	}
	// Open connections that died meanwhile.
	dead := 0
	for _, o := range conns {
		select {
		case ev, ok := <-o.cn.Events():
			if !ok || ev.err != nil {
				dead++
				s.mu.Lock()
				r := &s.res.Connections[o.idx]
				r.Outcome = OutcomeReset
				if ev.err != nil {
					r.Error = "while open: " + ev.err.Error()
				}
				s.mu.Unlock()
			}
		default:
		}
	}
	if ctx.Err() != nil {
		s.res.Error = "interrupted"
	}
	var findings []Finding
	if limit > 0 {
		f := Finding{Kind: KindConcurrencyLimit, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginUnknown,
			Confidence: "medium", Limit: limit}
		f.Evidence = append(f.Evidence, fmt.Sprintf("with %d connections open, connection %d and %d more attempt(s) failed", limit, cr.FirstFail, extraFails-1))
		if a := majority(failAttrs); a != nil {
			f.Origin, f.Hop, f.Method = a.Origin, a.Hop, countMethod(a)
			f.Evidence = append(f.Evidence, a.Reason)
			if a.Origin != probe.OriginUnknown && len(failAttrs) >= 2 {
				f.Confidence = "high"
			}
			f.HopAddress = s.hopAddress(ctx, a)
		}
		if dead > 0 {
			f.Evidence = append(f.Evidence, fmt.Sprintf("%d open connection(s) were reset meanwhile", dead))
		}
		f.Advice = fmt.Sprintf("At most %d simultaneous connections are served: cap the client's pool below it (Java SDK: 20 total / 15 per route; .NET MaxConnectionsPerServer) and share connections across threads.", limit)
		findings = append(findings, f)
	}
	return s.res, findings
}
