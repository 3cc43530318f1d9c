package diagnose

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/localise"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// LocaliseConfig configures the packet localisation of a run.
type LocaliseConfig struct {
	// PeerURL, when set, is an HTTPS endpoint that answers with the
	// client's address as the server sees it ("ip:port"): the only way to
	// see a NAT whose ICMP quotes are translated back (Linux conntrack).
	PeerURL string
	Dial    tcpcheck.DialConfig // TLS settings for PeerURL
	// MaxInFlowWait bounds how long the in-flow confirmation may keep a
	// flow idle (0: DefaultMaxInFlowWait; negative: never run it).
	MaxInFlowWait time.Duration
	Log           func(format string, a ...any)
}

// NewLocaliser returns the Localiser of `hopcheck run` (raw sockets):
// quoted-header comparison with TCP SYNs to the service port (tracebox),
// the path MTU search, and NAT localisation where a peer URL is given.
// When the idle test found a reset or drop, one connection is held idle
// past it for in-flow TTL-limited probes (inFlowConfirm).
func NewLocaliser(cfg LocaliseConfig) Localiser {
	return func(ctx context.Context, t *TargetReport, serverHop int) {
		addr, err := netip.ParseAddr(t.Address)
		if err != nil {
			return
		}
		maxTTL := 30
		if serverHop > 0 {
			maxTTL = serverHop
		}
		opt := localise.Options{Timeout: 2 * time.Second, Attempts: 2, Log: cfg.Log}
		loc := &Localisation{}
		dst := netip.AddrPortFrom(addr, uint16(t.Port))
		if hops, err := localise.RawRewrites(ctx, dst, maxTTL, opt); err == nil {
			loc.Rewrites, loc.RewritesStatus = hops, localise.RewritesFound(hops)
		} else {
			loc.RewritesStatus, loc.RewritesError = tri.NotTested, err.Error()
			if cfg.Log != nil {
				cfg.Log("[%s] rewrites: %v", t.Address, err)
			}
		}
		pmtu, err := localise.RawPMTU(ctx, addr, localise.PMTUOptions{Protocol: probe.TCP, Port: uint16(t.Port), MaxTTL: maxTTL})
		if err != nil && cfg.Log != nil {
			cfg.Log("[%s] pmtu: %v", t.Address, err)
		}
		loc.PMTU = &pmtu
		if cfg.PeerURL != "" {
			loc.NAT = natOf(ctx, cfg, addr, maxTTL, opt)
		}
		if idle := idleToConfirm(t); idle > 0 {
			if skipped := inFlowSkipped(idle, cfg.MaxInFlowWait); skipped != nil {
				loc.InFlow = skipped
			} else {
				if cfg.Log != nil {
					cfg.Log("[%s] in-flow probes of a connection held idle for %s", t.Address, idle.Round(time.Second))
				}
				loc.InFlow = inFlowConfirm(ctx, cfg, t, dst, idle, maxTTL, opt)
			}
		}
		t.Localisation = loc
	}
}

// natOf asks the peer URL how the server sees us and locates the box that
// translated our address.
func natOf(ctx context.Context, cfg LocaliseConfig, dst netip.Addr, maxTTL int, opt localise.Options) *NAT {
	sent, seen, err := peerView(ctx, cfg, dst)
	if err != nil {
		n := localise.NATFailed(err)
		return &n
	}
	n, err := localise.RawNAT(ctx, sent, seen, dst, maxTTL, opt)
	if err != nil && cfg.Log != nil {
		cfg.Log("[%s] nat: %v", dst, err)
	}
	return &n
}

// peerView fetches PeerURL over one TLS connection to dst and returns our
// end of it and the server's view of that end.
func peerView(ctx context.Context, cfg LocaliseConfig, dst netip.Addr) (sent, seen netip.AddrPort, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.PeerURL, nil)
	if err != nil {
		return sent, seen, err
	}
	port := req.URL.Port()
	if port == "" {
		port = "443"
	}
	var local net.Addr
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(dst.String(), port))
			if err == nil {
				local = c.LocalAddr()
			}
			return c, err
		},
		TLSClientConfig:   &tls.Config{RootCAs: cfg.Dial.RootCAs, InsecureSkipVerify: cfg.Dial.Insecure, ServerName: req.URL.Hostname()},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return sent, seen, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return sent, seen, err
	}
	if resp.StatusCode != http.StatusOK {
		return sent, seen, fmt.Errorf("%s answered %s", cfg.PeerURL, resp.Status)
	}
	seen, err = netip.ParseAddrPort(strings.TrimSpace(string(body)))
	if err != nil {
		return sent, seen, fmt.Errorf("%s answered %q, not ip:port", cfg.PeerURL, body)
	}
	la, ok := local.(*net.TCPAddr)
	if !ok {
		return sent, seen, fmt.Errorf("no local address")
	}
	return la.AddrPort(), netip.AddrPortFrom(seen.Addr().Unmap(), seen.Port()), nil
}

// DefaultMaxInFlowWait bounds how long the in-flow confirmation keeps a
// flow idle: beyond it (the full profile's hour-long classes) a run would
// take that long again, so it is not run unless asked for (--in-flow-max).
const DefaultMaxInFlowWait = 15 * time.Minute

// inFlowSkipped returns the not-tested record when a flow that must idle
// for idle to expire is beyond the wait allowed (limit: 0 default, < 0
// never), else nil: run it.
func inFlowSkipped(idle, limit time.Duration) *InFlow {
	switch {
	case limit < 0:
		in := localise.InFlowSkipped("in-flow confirmation disabled (--in-flow-max 0)")
		return &in
	case limit == 0:
		limit = DefaultMaxInFlowWait
	}
	if idle <= limit {
		return nil
	}
	in := localise.InFlowSkipped(fmt.Sprintf("the flow must idle %s to expire, beyond --in-flow-max %s (raise it to confirm the hop in-flow)",
		idle.Round(time.Second), limit))
	return &in
}

// idleToConfirm returns how long a flow must idle to expire on this
// target's path (the failing end of the idle bracket, plus a margin), or 0
// when no idle reset or drop was found.
func idleToConfirm(t *TargetReport) time.Duration {
	for _, f := range t.TestFindings["idle"] {
		if f.Kind != tcpcheck.KindIdleReset && f.Kind != tcpcheck.KindIdleDrop {
			continue
		}
		upper := f.IdleTimeoutS
		if len(f.IdleBracketS) == 2 && f.IdleBracketS[1] > upper {
			upper = f.IdleBracketS[1]
		}
		if upper > 0 {
			return time.Duration((upper + 2) * float64(time.Second))
		}
	}
	return 0
}

// inFlowConfirm holds one real connection idle past the timeout and sends
// TTL-limited segments of its own 5-tuple, with valid seq/ack, before and
// after (the intrace/0trace technique): the first hop that answers with a
// RST after expiry, or after which time-exceeded replies stop, lost the
// flow's state. It confirms or corrects the TTL-based attribution (a NAT
// that remaps the port after expiry makes the server send the RST).
func inFlowConfirm(ctx context.Context, cfg LocaliseConfig, t *TargetReport, dst netip.AddrPort, idle time.Duration, maxTTL int, opt localise.Options) *InFlow {
	failed := func(flow, reason string, err error) *InFlow {
		in := localise.InFlowFailed(flow, reason, err)
		return &in
	}
	obs, err := probe.NewObserver(dst)
	if err != nil {
		return failed("", fmt.Sprintf("flow observer: %v", err), err)
	}
	defer obs.Close()
	d := cfg.Dial
	d.App, d.ServerName = tcpcheck.App(t.App), t.Host
	if t.amqpVHost != "" {
		d.AMQPVHost = t.amqpVHost // learnt by Run: its connections log in as the ladder's did
	}
	// A server with a connection cap may still hold the ladder's dead
	// connections (a box that resets idle flows tells only the client):
	// retry a refused connection for a while.
	var res tcpcheck.DialResult
	for deadline := time.Now().Add(30 * time.Second); ; {
		res = tcpcheck.Dial(ctx, d, dst)
		refused := res.Outcome == tcpcheck.OutcomeRefused || res.Outcome == tcpcheck.OutcomeResetInHandshake
		if res.Conn != nil || !refused || time.Now().After(deadline) || !localise.SleepCtx(ctx, 2*time.Second) {
			break
		}
	}
	if res.Conn == nil {
		err := res.Err
		if err == nil {
			err = fmt.Errorf("connection: %s", res.Outcome)
		}
		return failed("", fmt.Sprintf("connection: %s %v", res.Outcome, res.Err), err)
	}
	defer res.Conn.Abort()
	flowName := fmt.Sprintf("%s > %s", res.Conn.Local, dst)
	// Let the first exchange's last ACKs pass before reading the state.
	if !localise.SleepCtx(ctx, 300*time.Millisecond) {
		return failed(flowName, "", ctx.Err())
	}
	rec := obs.Flow(res.LocalPort)
	if rec.SynAck == nil {
		return failed(flowName, "the flow observer saw no SYN-ACK", errors.New("the flow observer saw no SYN-ACK"))
	}
	flow, err := localise.FlowStateFromConn(res.Conn.TCP(), *rec.SynAck)
	if err != nil {
		return failed(flowName, err.Error(), err)
	}
	healthy, err := localise.RawInFlow(ctx, flow, maxTTL, opt)
	if err != nil {
		return failed(flowName, fmt.Sprintf("healthy probes: %v", err), err)
	}
	if !localise.SleepCtx(ctx, idle) {
		return failed(flowName, "", ctx.Err())
	}
	expired, err := localise.RawInFlow(ctx, flow, maxTTL, opt)
	if err != nil {
		return failed(flowName, fmt.Sprintf("probes after %s idle: %v", idle.Round(time.Second), err), err)
	}
	t.keepInFlowCapture(obs.Capture(res.LocalPort), obs.CaptureErr())
	in := localise.NewInFlow(flowName, healthy, expired)
	return &in
}

// keepInFlowCapture keeps the in-flow confirmation's packet history (its
// probes and their answers as captured) for --evidence, or why there is
// none: the observer's capture could not be opened (captureErr), which
// CaptureWarning says once per run.
func (t *TargetReport) keepInFlowCapture(c probe.FlowCapture, captureErr error) {
	if captureErr != nil {
		t.inFlowCaptureErr = captureErr
		return
	}
	if len(c.Packets) > 0 {
		t.inFlowCapture = &c
	}
}
