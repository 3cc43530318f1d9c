package tcpcheck

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// DefaultDataPath is what the data test downloads from an HTTPS target:
// the market descriptions both UOF SDKs fetch at start-up, several MB of
// XML, the largest response a UOF client routinely gets (it needs the
// access token).
const DefaultDataPath = "/v1/descriptions/en/markets.xml?include_mappings=true"

// RunData makes one connection, then one large transfer (HTTP GET of
// opt.DataPath, or echoVolume bytes through an echo service), watching
// its progress: a mid-stream reset or a mid-stream close (a FIN before
// everything due arrived), each with its origin, or a stall (handshake
// fine, no progress for opt.StallAfter: the PMTU black-hole signature).
func RunData(ctx context.Context, opt Options, job Job, start time.Time) (Result, []Finding) {
	if opt.DataPath == "" {
		opt.DataPath = DefaultDataPath
	}
	s := newSession(opt, job, start)
	defer s.close()
	// A stall is judged by progress, not by the kernel giving up.
	s.opt.Dial.UserTimeout, s.opt.Dial.SetupTimeout = 0, opt.StallAfter
	dr := Dial(ctx, s.opt.Dial, s.dst)
	rec := s.dialRecord(dr)
	if dr.Conn == nil {
		pk, _ := s.packets(dr.LocalPort, dr.Started, dr.Outcome.IsReset())
		rec.Packets, rec.Capture = pk, s.flowCapture(dr.LocalPort)
		s.add(rec)
		if dr.Outcome == OutcomeTimeout && dr.Phase != PhaseTCP {
			// The TCP handshake worked and the first full-size answer
			// (the server's certificate flight) never came.
			f := stallFinding(s, fmt.Sprintf("the TCP handshake worked, then the %s phase made no progress for %v", dr.Phase, opt.StallAfter), nil)
			return s.res, []Finding{f}
		}
		s.res.Error = fmt.Sprintf("connection failed before the transfer: %s", rec.Outcome)
		return s.res, nil
	}
	s.learn(dr.LocalPort)
	s.learnUnobserved(ctx)
	cn := dr.Conn
	defer cn.Abort()
	before := cn.received.Load()
	xferStart := s.now()
	cn.lastRead.Store(xferStart.UnixNano())
	xfer, werr := cn.proto.transfer(cn, transferSpec{path: opt.DataPath, stallAfter: opt.StallAfter, timeout: opt.Dial.RequestTimeout})
	if xfer == nil {
		s.add(rec)
		s.res.Error = fmt.Sprintf("data test not run: %v", werr)
		return s.res, nil
	}
	w := s.watchTransfer(ctx, cn, xfer, werr, before)
	outcome, stalled, endErr, endAt, cut, status := w.outcome, w.stalled, w.endErr, w.endAt, w.cut, w.status
	moved := cn.received.Load() - before
	rec.Uses = 1
	var attr *probe.Attribution
	rec.Packets, attr = s.packets(cn.Local.Port(), xferStart, outcome.IsReset() || outcome == OutcomeClosed)
	if outcome != OutcomeOK {
		rec.Capture = s.flowCapture(cn.Local.Port())
	}
	if outcome == OutcomeClosed {
		outcome, endErr = closedOrReset(endErr, xfer.writeEnd(), rec.Packets)
	}
	end := transferEnd{outcome: outcome, stalled: stalled}
	end.got, end.want = xfer.due(moved, cut)
	if outcome == OutcomeClosed && transferKind(end) == "" {
		outcome = OutcomeOK // everything due arrived, then a normal close
	}
	if outcome != OutcomeOK {
		rec.Outcome, rec.Phase, rec.Error, rec.EndS = outcome, PhaseRequest, endErr.Error(), s.since(endAt)
	}
	if status != 0 && (status < 200 || status > 299) {
		// An error page is no large transfer: say the test did not run
		// rather than pass it.
		s.add(rec)
		s.res.Error = fmt.Sprintf("data test not run: HTTP %d %s for GET %s (%d bytes); point the data test at a large object (run --data-path, tcp data --path)%s",
			status, http.StatusText(status), opt.DataPath, moved, tokenHint(status))
		return s.res, nil
	}
	var infoEv []string
	tr := &Transfer{Path: xfer.path(), Bytes: moved, DurationS: seconds(s.now().Sub(xferStart)), Stalled: stalled}
	s.res.Transfer = tr
	if info, err := cn.TCPInfo(); err == nil {
		tr.SendMSS, tr.RecvMSS, tr.PathMTU = int(info.Snd_mss), int(info.Rcv_mss), int(info.Pmtu)
		tr.Retransmits, tr.Lost = int(info.Total_retrans), int(info.Lost)
		infoEv = append(infoEv, fmt.Sprintf("TCP_INFO: send MSS %d, receive MSS %d, path MTU %d, retransmissions %d (total %d), lost %d",
			info.Snd_mss, info.Rcv_mss, info.Pmtu, info.Retransmits, info.Total_retrans, info.Lost))
	}
	s.add(rec)
	var findings []Finding
	switch transferKind(end) {
	case KindDataStall:
		st := stalledDownload{Bytes: moved, StallAfter: opt.StallAfter, V6: s.dst.Addr().Is6()}
		if dr.Segment != nil {
			st.AdvMSS = dr.Segment.synMSS()
		}
		var cure *TransferCure
		if curable(st) && ctx.Err() == nil {
			cn.Abort() // one connection at a time toward a rate-limited API
			cure = s.cureDownload(ctx)
			tr.Cure = cure
		}
		findings = append(findings, downloadStallFinding(s.res.Target, s.res.Address, st, cure, infoEv))
	case KindMidstreamReset:
		f := Finding{Kind: KindMidstreamReset, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginUnknown, Confidence: "medium"}
		f.Evidence = append(f.Evidence, fmt.Sprintf("the transfer was reset after %d bytes", moved))
		if attr != nil {
			f.Origin, f.Hop, f.Method = attr.Origin, attr.Hop, countMethod(attr)
			f.Evidence = append(f.Evidence, attr.Reason)
			f.HopAddress = s.hopAddress(ctx, attr)
			if attr.Origin != probe.OriginUnknown {
				f.Confidence = "high"
			}
			s.reattribute(ctx, attr).apply(&f) // return-path fingerprints (tcpcheck/attrib.go)
		}
		f.Evidence = append(f.Evidence, infoEv...)
		f.Advice = "Transfers are reset mid-stream: retry idempotent requests, and ask the operator of the resetting device about its limits (size, rate, inspection)."
		findings = append(findings, f)
	case KindMidstreamClose:
		f := Finding{Kind: KindMidstreamClose, Target: s.res.Target, Address: s.res.Address, Origin: probe.OriginUnknown,
			Confidence: "low", TransferBytes: end.got, ExpectedBytes: max(end.want, 0)}
		f.Evidence = append(f.Evidence, xfer.truncation(end, cut))
		if endErr != nil {
			f.Evidence = append(f.Evidence, "the reader got: "+endErr.Error())
		}
		switch {
		case attr != nil:
			f.Origin, f.Hop, f.Method = attr.Origin, attr.Hop, countMethod(attr)
			f.Evidence = append(f.Evidence, attr.Reason)
			f.HopAddress = s.hopAddress(ctx, attr)
			f.Confidence = "medium"
			if attr.Origin != probe.OriginUnknown {
				f.Confidence = "high"
			}
		case s.observing():
			f.Confidence = "medium"
			f.Evidence = append(f.Evidence, "the flow observer captured no FIN: who ended the transfer is unknown")
		default:
			f.Evidence = append(f.Evidence, "no packet capture (needs CAP_NET_RAW): who sent the FIN is unknown")
		}
		f.Evidence = append(f.Evidence, infoEv...)
		f.Advice = closeAdvice(f.Origin, f.Hop, f.HopAddress)
		findings = append(findings, f)
	}
	return s.res, findings
}

// transferEnd is how a data transfer ended, as far as the finding depends
// on it.
type transferEnd struct {
	outcome Outcome // after closedOrReset
	stalled bool
	// got is what arrived of what was due: HTTPS body bytes, or echoed
	// bytes; want is what was due (Content-Length, the echo volume), -1
	// unknown (a chunked body, or no response headers at all).
	got, want int64
}

// transferKind is the finding a transfer's end makes ("" none). A stall
// outranks the rest. An end of stream (FIN) before everything due arrived
// truncated the transfer; after it, it is a normal close: HTTP bodies
// without a length end at the close, and the reader reports those as
// complete, so "closed" with an unknown length is a truncated chunked
// body or a response that never came.
func transferKind(e transferEnd) string {
	switch {
	case e.stalled:
		return KindDataStall
	case e.outcome.IsReset():
		return KindMidstreamReset
	case e.outcome == OutcomeClosed:
		if e.want >= 0 && e.got >= e.want {
			return ""
		}
		return KindMidstreamClose
	}
	return ""
}

// closeAdvice fits the advice for a truncated transfer to who ended it.
func closeAdvice(origin probe.Origin, hop int, hopAddress string) string {
	const retry = " Clients: retry idempotent requests, and treat a body shorter than its Content-Length as a failure, not as data."
	server := "check its limits on response size and time (proxy or application send/write timeouts, maximum body size), " +
		"that a graceful restart drains in-flight responses before the process exits, and that keep-alive limits " +
		"(max requests or max age per connection) close connections between responses, never during one."
	box := "ask its operator about session limits (maximum session duration or bytes per session, proxy or inspection timeouts)"
	switch origin {
	case probe.OriginServer:
		return "The server ended the transfer with a FIN before it was complete: " + server + retry
	case probe.OriginMiddlebox:
		where := "a device on the path"
		if hop > 0 {
			where = fmt.Sprintf("the device at hop %d", hop)
			if hopAddress != "" {
				where += " (" + hopAddress + ")"
			}
		}
		return "A FIN from " + where + ", not from the server, ended the transfer before it was complete: it closes sessions itself; " + box + "." + retry
	}
	return "A FIN ended the transfer before it was complete, from the server or a device on the path (run with CAP_NET_RAW to tell which). " +
		"If the server: " + server + " If a middlebox: " + box + "." + retry
}

// tokenHint explains the statuses the UOF API gives for token problems.
func tokenHint(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return ", with a valid access token (--token-file or $UOF_ACCESS_TOKEN)"
	}
	return ""
}

// closedOrReset decides whether a transfer whose reader saw EOF was reset.
// Only the first syscall after a RST gets ECONNRESET: when the echo writer
// took it, the reader sees a plain EOF. Captured packets decide first (the
// first FIN or RST ended the flow; a server that closed and then reset our
// further data closed it), else the writer's error.
func closedOrReset(readErr, writeErr error, packets []PacketRec) (Outcome, error) {
	switch {
	case len(packets) > 0 && strings.Contains(packets[0].Flags, "RST"):
		if errors.Is(writeErr, syscall.ECONNRESET) {
			return OutcomeReset, writeErr
		}
		return OutcomeReset, fmt.Errorf("%w, but the flow ended with a captured %s", readErr, packets[0].Flags)
	case len(packets) > 0:
		return OutcomeClosed, readErr
	case errors.Is(writeErr, syscall.ECONNRESET):
		return OutcomeReset, writeErr
	}
	return OutcomeClosed, readErr
}

func stallFinding(s *session, what string, more []string) Finding {
	return newStallFinding(s.res.Target, s.res.Address, what, more)
}

func newStallFinding(target, address, what string, more []string) Finding {
	f := Finding{Kind: KindDataStall, Target: target, Address: address, Origin: probe.OriginUnknown, Confidence: "medium"}
	f.Evidence = append(f.Evidence, what)
	f.Evidence = append(f.Evidence, "no FIN or RST: full-size segments vanish on the way (PMTU black hole: ICMP fragmentation-needed filtered, no MSS clamping)")
	f.Evidence = append(f.Evidence, more...)
	f.Advice = "Full-size packets are lost without an ICMP error: allow ICMP fragmentation-needed / packet-too-big on your firewalls, clamp the TCP MSS at your edge (e.g. iptables TCPMSS --clamp-mss-to-pmtu), or lower the interface MTU; enable net.ipv4.tcp_mtu_probing=1 as a workaround."
	return f
}

// watched is how watchTransfer saw a transfer end.
type watched struct {
	outcome Outcome
	stalled bool
	endErr  error
	endAt   time.Time
	cut     *bodyCut // HTTPS: the response whose body ended early
	status  int      // HTTPS: the status of a response that arrived whole
}

// watchTransfer follows xfer on cn until it completes, ends or makes no
// progress for StallAfter; werr is the error of starting it.
func (s *session) watchTransfer(ctx context.Context, cn *Conn, xfer transfer, werr error, before int64) watched {
	w := watched{outcome: OutcomeOK}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for werr == nil {
		select {
		case <-ctx.Done():
			w.outcome, w.endErr = OutcomeTimeout, ctx.Err()
			break loop
		case ev, ok := <-cn.Events():
			if !ok || ev.err != nil {
				if ev.err == nil {
					ev.err = fmt.Errorf("stream ended")
				}
				w.outcome, w.endErr, w.endAt, w.cut = Classify(PhaseRequest, ev.err), ev.err, ev.at, ev.cut
				break loop
			}
			if done, st := xfer.complete(ev, cn.received.Load()-before); done {
				w.status = st
				break loop
			}
		case <-tick.C:
			if since := s.now().Sub(time.Unix(0, cn.lastRead.Load())); since >= s.opt.StallAfter {
				w.stalled, w.outcome = true, OutcomeTimeout
				w.endErr = fmt.Errorf("no progress for %v after %d bytes", s.opt.StallAfter, cn.received.Load()-before)
				w.endAt = s.now()
				break loop
			}
		}
	}
	if werr != nil {
		w.outcome, w.endErr, w.endAt = Classify(PhaseRequest, werr), werr, s.now()
	}
	return w
}
