package tcpcheck

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// TransferCure is the data test's one retry of a stalled download on a
// connection whose SYN advertises a clamped MSS (TCP_MAXSEG): the PMTU
// black-hole cure check for the download, as the connect test's is for
// the handshake. One retry, never more: the real API is rate-limited.
type TransferCure struct {
	// ClampMSS is the MSS asked for (TCP_MAXSEG); AdvMSS the MSS option
	// the retry's SYN carried (0 unknown).
	ClampMSS int `json:"clamp_mss"`
	AdvMSS   int `json:"adv_mss,omitempty"`
	// Outcome is "ok" when the download completed, "timeout" with Stalled
	// when it stalled too, else how the retry failed.
	Outcome   Outcome `json:"outcome"`
	Stalled   bool    `json:"stalled"`
	Bytes     int64   `json:"bytes"`
	DurationS float64 `json:"duration_s"`
	Error     string  `json:"error,omitempty"`
}

// stalledDownload is what the data test knows of a download that stalled.
type stalledDownload struct {
	Bytes      int64         // received before the stall
	AdvMSS     int           // the MSS the connection's SYN advertised (0 unknown)
	StallAfter time.Duration // no progress this long made it a stall
	V6         bool
}

// curable reports whether a clamped retry can tell anything: the stalled
// connection advertised more than the cure's MSS, so the server's
// segments on the retry are smaller.
func curable(st stalledDownload) bool { return st.AdvMSS > cureMSS }

// cureDownload downloads once more on a connection advertising cureMSS,
// watching it as the stalled download was.
func (s *session) cureDownload(ctx context.Context) *TransferCure {
	cfg := s.opt.Dial
	cfg.ClampMSS = cureMSS
	c := &TransferCure{ClampMSS: cureMSS}
	start := s.now()
	dr := Dial(ctx, cfg, s.dst)
	if dr.Segment != nil && dr.Segment.AdvMSS > 0 {
		c.AdvMSS = dr.Segment.synMSS()
	}
	if dr.Conn == nil {
		c.Outcome, c.Error = dr.Outcome, fmt.Sprintf("connection failed in the %s phase: %v", dr.Phase, dr.Err)
		c.Stalled = dr.Outcome == OutcomeTimeout && dr.Phase != PhaseTCP
		c.DurationS = seconds(s.now().Sub(start))
		return c
	}
	cn := dr.Conn
	defer cn.Abort()
	before := cn.received.Load()
	cn.lastRead.Store(s.now().UnixNano())
	xfer, werr := cn.proto.transfer(cn, transferSpec{path: s.opt.DataPath, stallAfter: s.opt.StallAfter, timeout: s.opt.Dial.RequestTimeout})
	if xfer == nil {
		c.Outcome, c.Error = OutcomeAppError, fmt.Sprintf("retry not run: %v", werr)
		return c
	}
	w := s.watchTransfer(ctx, cn, xfer, werr, before)
	moved := cn.received.Load() - before
	c.Bytes, c.DurationS, c.Stalled = moved, seconds(s.now().Sub(start)), w.stalled
	end := transferEnd{outcome: w.outcome, stalled: w.stalled}
	end.got, end.want = xfer.due(moved, w.cut)
	switch {
	case w.status != 0 && (w.status < 200 || w.status > 299):
		c.Outcome, c.Error = OutcomeAppError, fmt.Sprintf("HTTP %d %s", w.status, http.StatusText(w.status))
	case transferKind(end) == "":
		c.Outcome = OutcomeOK
	default:
		c.Outcome = w.outcome
		if w.endErr != nil {
			c.Error = w.endErr.Error()
		}
	}
	return c
}

// downloadStallFinding decides what a stalled download is, given the
// clamped retry's outcome (nil: not tried). The retry completing with
// smaller segments than the stalled connection's cures the stall: a PMTU
// black hole toward the client, its MTU between the two connections'
// packet sizes. A retry that stalled too, failed, or could not be smaller
// leaves a data-stall, saying why.
func downloadStallFinding(target, address string, st stalledDownload, cure *TransferCure, more []string) Finding {
	what := fmt.Sprintf("the handshake worked, then the transfer stopped after %d bytes: no progress for %v", st.Bytes, st.StallAfter)
	hdr := ipHeader(st.V6)
	cureAdv := 0
	if cure != nil {
		cureAdv = cure.AdvMSS
		if cureAdv == 0 {
			cureAdv = cure.ClampMSS
		}
	}
	switch {
	case cure == nil:
		f := newStallFinding(target, address, what, more)
		if !curable(st) {
			f.Evidence = append(f.Evidence, fmt.Sprintf("the connection advertised MSS %d, no larger than the cure check's %d: a retry with a clamped MSS would tell nothing, not tried", st.AdvMSS, cureMSS))
		}
		return f
	case cure.Outcome == OutcomeOK && cureAdv < st.AdvMSS:
		f := Finding{Kind: KindPMTUBlackhole, Target: target, Address: address, Origin: probe.OriginMiddlebox,
			Confidence: "high", MTUBracket: []int{cureAdv + hdr, st.AdvMSS + hdr - 1}, Direction: "toward-client"}
		f.Evidence = []string{
			fmt.Sprintf("the download on a connection advertising MSS %d stalled after %d bytes (no progress for %v, no FIN or RST): the server's full-size segments (%d bytes) never arrive", st.AdvMSS, st.Bytes, st.StallAfter, st.AdvMSS+hdr),
			fmt.Sprintf("the same download on a connection advertising MSS %d (clamped) completed: %d bytes in %.2fs; the path toward the client carries packets of %d bytes, not %d (path MTU %d-%d)", cureAdv, cure.Bytes, cure.DurationS, cureAdv+hdr, st.AdvMSS+hdr, cureAdv+hdr, st.AdvMSS+hdr-1),
			"no ICMP frag-needed / packet-too-big reaches the server (filtered on the way back), so it never learns to send smaller segments: a PMTU black hole toward the client (the TLS handshake's smaller server flight passed)",
		}
		f.Evidence = append(f.Evidence, more...)
		f.Advice = blackholeAdvice(cureAdv, hdr)
		return f
	case cure.Outcome == OutcomeOK:
		f := newStallFinding(target, address, what, more)
		f.Evidence = append(f.Evidence, fmt.Sprintf("a retry completed (%d bytes) but advertised MSS %d, not less than the stalled connection's %d: the stall did not recur, and segment size is not shown to be the cause", cure.Bytes, cureAdv, st.AdvMSS))
		return f
	case cure.Stalled:
		f := Finding{Kind: KindDataStall, Target: target, Address: address, Origin: probe.OriginUnknown, Confidence: "medium"}
		f.Evidence = append([]string{what,
			fmt.Sprintf("a retry advertising MSS %d stalled too, after %d bytes: small segments do not cure it, so it is not a PMTU black hole", cureAdv, cure.Bytes),
			"no FIN or RST: the flow stops silently (a box that drops the flow mid-stream, a rate limiter, heavy loss)"}, more...)
		f.Advice = "The transfer stops without a FIN or RST, with full-size and small segments alike: look for a device that silently drops long or large flows (inspection, rate limiting, session limits) and capture on both sides of it; retry idempotent requests."
		return f
	default:
		f := newStallFinding(target, address, what, more)
		f.Evidence = append(f.Evidence, fmt.Sprintf("a retry advertising MSS %d did not complete (%s: %s): no verdict on a PMTU black hole", cureAdv, cure.Outcome, cure.Error))
		return f
	}
}
