package tcpcheck

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// Attributor says who sent the FINs and RSTs of one destination's flows:
// the flow observer's capture (CAP_NET_RAW) compared with the server's
// fingerprint, learnt from the first SYN-ACK seen. Without the observer
// it can still learn the server's SYN-ACK TTL by IP_MINTTL. The tcp tests
// and the soak share it; it is safe for concurrent use.
type Attributor struct {
	dst netip.AddrPort
	obs *probe.Observer // nil: no capture
	// capErr says why the observer's packet history (evidence) is not
	// kept: the observer or its packet socket could not be opened.
	capErr error

	mu      sync.Mutex
	fp      probe.Fingerprint
	minTTLs bool // the IP_MINTTL search ran
}

// NewAttributor opens the capture toward dst when observe is set; the
// error says why there is none (the Attributor then works without it).
func NewAttributor(dst netip.AddrPort, observe bool) (*Attributor, error) {
	a := &Attributor{dst: dst}
	if !observe {
		return a, nil
	}
	o, err := probe.NewObserver(dst)
	if err != nil {
		a.capErr = err
		return a, err
	}
	a.obs, a.capErr = o, o.CaptureErr()
	return a, nil
}

// CaptureErr says why the flows' packet histories (History, for
// evidence) are not kept although capture was asked for; nil: they are,
// or capture was not asked for.
func (a *Attributor) CaptureErr() error { return a.capErr }

// Observing reports whether packets are captured.
func (a *Attributor) Observing() bool { return a.obs != nil }

// Close stops the capture.
func (a *Attributor) Close() {
	if a.obs != nil {
		a.obs.Close()
	}
}

// Server is the server's fingerprint (zero until learnt).
func (a *Attributor) Server() probe.Fingerprint {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fp
}

// Learn takes the server's fingerprint from the SYN-ACK of the
// connection on local port port, unless it is known; it returns the
// fingerprint and whether it was learnt just now.
func (a *Attributor) Learn(port uint16) (probe.Fingerprint, bool) {
	if a.obs == nil || port == 0 {
		return a.Server(), false
	}
	if f := a.Server(); f.Known() {
		return f, false
	}
	r := a.obs.WaitSynAck(port, 100*time.Millisecond)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.fp.Known() {
		if f := r.Fingerprint(); f.Known() {
			a.fp = f
			return f, true
		}
	}
	return a.fp, false
}

// LearnByMinTTL finds the server's SYN-ACK TTL without capture
// (ServerTTLByMinTTL), once; with capture it only returns what Learn
// learnt. 0: unknown.
func (a *Attributor) LearnByMinTTL(ctx context.Context, d DialConfig) int {
	if a.obs != nil {
		return a.Server().TTL
	}
	a.mu.Lock()
	if a.minTTLs || a.fp.Known() {
		ttl := a.fp.TTL
		a.mu.Unlock()
		return ttl
	}
	a.minTTLs = true
	a.mu.Unlock()
	ttl := ServerTTLByMinTTL(ctx, a.dst, d)
	if ttl > 0 {
		a.mu.Lock()
		a.fp = probe.Fingerprint{TTL: ttl}
		a.mu.Unlock()
	}
	return ttl
}

// Capture is what the observer saw of one flow: its record, its FINs and
// RSTs since a moment, and the flow's own fingerprint, if any.
type Capture struct {
	Flow probe.FlowRecord
	Segs []probe.Segment
	FP   probe.Fingerprint
}

// Capture returns what was seen toward port, with the FINs and RSTs from
// since on; wait lets the capture catch up with a FIN or RST the socket
// already reported.
func (a *Attributor) Capture(port uint16, since time.Time, wait bool) Capture {
	if a.obs == nil || port == 0 {
		return Capture{}
	}
	var r probe.FlowRecord
	if wait {
		r = a.obs.WaitFinRst(port, since, 300*time.Millisecond)
	} else {
		r = a.obs.Flow(port)
	}
	c := Capture{Flow: r, FP: r.Fingerprint()}
	for _, seg := range r.FinRst {
		if !seg.At.Before(since) {
			c.Segs = append(c.Segs, seg)
		}
	}
	return c
}

// Attributed is one captured FIN or RST and who sent it.
type Attributed struct {
	Seg  probe.Segment
	Attr probe.Attribution
}

// Attribute classifies the captured FINs and RSTs against the flow's own
// fingerprint or, failing that, the server's.
func (a *Attributor) Attribute(c Capture) []Attributed {
	fp := c.FP
	if !fp.Known() {
		fp = a.Server()
	}
	out := make([]Attributed, 0, len(c.Segs))
	for _, seg := range c.Segs {
		out = append(out, Attributed{Seg: seg, Attr: probe.Attribute(seg, fp)})
	}
	return out
}

// Flow is what the observer saw toward port (empty without capture).
func (a *Attributor) Flow(port uint16) probe.FlowRecord {
	if a.obs == nil {
		return probe.FlowRecord{}
	}
	return a.obs.Flow(port)
}

// History is the observer's bounded packet history of the flow on port,
// for evidence (empty without capture).
func (a *Attributor) History(port uint16) probe.FlowCapture {
	if a.obs == nil {
		return probe.FlowCapture{}
	}
	return a.obs.Capture(port)
}

// Forget drops the record of port.
func (a *Attributor) Forget(port uint16) {
	if a.obs != nil {
		a.obs.Forget(port)
	}
}
