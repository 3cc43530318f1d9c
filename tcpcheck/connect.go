package tcpcheck

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// RunConnect opens opt.Count connections at opt.Rate per second, each
// through setup and the first exchange, and reports failure rates with
// their 95 % Wilson intervals and the origin of resets.
func RunConnect(ctx context.Context, opt Options, job Job, start time.Time) (Result, []Finding) {
	s := newSession(opt, job, start)
	defer s.close()
	interval := time.Duration(float64(time.Second) / opt.Rate)
	var wg sync.WaitGroup
	type failed struct {
		idx int
		cap capture
	}
	var mu sync.Mutex
	var fails []failed
	t0 := s.now()
	for i := 0; i < opt.Count && ctx.Err() == nil && !s.loginRefused(); i++ {
		if d := t0.Add(time.Duration(i) * interval).Sub(s.now()); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
			if ctx.Err() != nil {
				break
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dr, skipped := s.dial(ctx)
			if skipped || (dr.Conn == nil && ctx.Err() != nil) {
				return
			}
			rec := s.dialRecord(dr)
			if dr.Conn != nil {
				s.learn(dr.LocalPort)
				dr.Conn.Close()
			}
			var c capture
			if dr.Outcome != OutcomeOK {
				// Capture now: the port may soon carry another connection.
				c = s.capture(dr.LocalPort, dr.Started, dr.Outcome.IsReset())
			}
			idx := s.add(rec)
			if dr.Outcome != OutcomeOK {
				mu.Lock()
				fails = append(fails, failed{idx, c})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.learnUnobserved(ctx)
	// Attribute the failures now that the server's fingerprint is known.
	attrs := map[Outcome][]probe.Attribution{}
	for _, f := range fails {
		pk, a := s.attribute(f.cap)
		s.mu.Lock()
		port := s.res.Connections[f.idx].LocalPort
		s.mu.Unlock()
		flow := s.flowCapture(port)
		s.mu.Lock()
		r := &s.res.Connections[f.idx]
		r.Packets, r.Capture = pk, flow
		o := r.Outcome
		s.mu.Unlock()
		if a != nil {
			attrs[o] = append(attrs[o], *a)
		}
	}
	if ctx.Err() != nil {
		s.res.Error = "interrupted"
	}
	n := len(s.res.Connections)
	s.res.Rates = map[Outcome]Rate{}
	for o, k := range s.res.Counts {
		if o != OutcomeOK && k > 0 {
			s.res.Rates[o] = NewRate(k, n)
		}
	}
	for o, as := range attrs {
		if !o.IsReset() {
			continue
		}
		for _, a := range as {
			if s.res.ResetsByOrigin == nil {
				s.res.ResetsByOrigin = map[string]int{}
			}
			s.res.ResetsByOrigin[string(a.Origin)]++
		}
	}
	var findings []Finding
	resets := s.res.Counts[OutcomeRefused] + s.res.Counts[OutcomeResetInHandshake] + s.res.Counts[OutcomeReset]
	if resets > 0 {
		var all []probe.Attribution
		for _, o := range []Outcome{OutcomeRefused, OutcomeResetInHandshake, OutcomeReset} {
			all = append(all, attrs[o]...)
		}
		f := s.rateFinding(ctx, KindConnectReset, resets, n, all)
		f.Evidence = append([]string{fmt.Sprintf("%d of %d connections reset (refused %d, in handshake %d, after %d)", resets, n,
			s.res.Counts[OutcomeRefused], s.res.Counts[OutcomeResetInHandshake], s.res.Counts[OutcomeReset])}, f.Evidence...)
		if f.Origin == probe.OriginMiddlebox {
			f.Advice = "A box on the path resets some new connections: retry connection setup with backoff (both SDKs give up early), and report the box at this hop to its operator."
		} else {
			f.Advice = "Some new connections are reset: retry connection setup with backoff and keep connections pooled rather than opening new ones."
		}
		findings = append(findings, f)
	}
	// Handshakes that hung and complete with a smaller MSS are a PMTU
	// black hole toward the client; that finding then explains the
	// timeouts.
	pmtu := s.pmtuTowardClient(ctx)
	if pmtu != nil {
		findings = append(findings, *pmtu)
	}
	if k := s.res.Counts[OutcomeTimeout]; k > 0 && pmtu == nil {
		f := s.rateFinding(ctx, KindConnectTimeout, k, n, nil)
		f.Evidence = append([]string{fmt.Sprintf("%d of %d connections timed out during setup", k, n)}, f.Evidence...)
		f.Advice = "Some connection attempts get no answer: use a connect timeout of a few seconds with retries rather than the OS default (over 2 minutes)."
		findings = append(findings, f)
	}
	return s.res, findings
}

// rateFinding builds a finding about k of n connections, with the origin
// and hop most of the attributions agree on.
func (s *session) rateFinding(ctx context.Context, kind string, k, n int, attrs []probe.Attribution) Finding {
	lo, hi := Wilson(k, n)
	f := Finding{Kind: kind, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginUnknown, Confidence: "medium",
		Rate: round4(float64(k) / float64(n)), RateCI: []float64{round4(lo), round4(hi)}}
	f.Evidence = append(f.Evidence, fmt.Sprintf("rate %.4f, 95 %% Wilson interval [%.4f, %.4f]", f.Rate, lo, hi))
	if a := majority(attrs); a != nil {
		f.Origin, f.Hop, f.Method = a.Origin, a.Hop, countMethod(a)
		agree := 0
		for _, x := range attrs {
			if x.Origin == a.Origin && x.Hop == a.Hop {
				agree++
			}
		}
		f.Evidence = append(f.Evidence, fmt.Sprintf("%d of %d captured resets: %s", agree, len(attrs), a.Reason))
		if a.Origin != probe.OriginUnknown && agree*10 >= len(attrs)*8 {
			f.Confidence = "high"
		}
		f.HopAddress = s.hopAddress(ctx, a)
		s.reattribute(ctx, a).apply(&f) // return-path fingerprints (tcpcheck/attrib.go)
	} else if !s.observing() {
		f.Confidence = "low"
		f.Evidence = append(f.Evidence, "no packet capture (no CAP_NET_RAW): the sender of the resets is unknown")
	}
	return f
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

// majority is the commonest (origin, hop) of attrs.
func majority(attrs []probe.Attribution) *probe.Attribution {
	if len(attrs) == 0 {
		return nil
	}
	type key struct {
		o   probe.Origin
		hop int
	}
	n := map[key]int{}
	first := map[key]probe.Attribution{}
	for _, a := range attrs {
		k := key{a.Origin, a.Hop}
		if _, ok := first[k]; !ok {
			first[k] = a
		}
		n[k]++
	}
	keys := make([]key, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if n[keys[i]] != n[keys[j]] {
			return n[keys[i]] > n[keys[j]]
		}
		return keys[i].hop < keys[j].hop
	})
	a := first[keys[0]]
	return &a
}
