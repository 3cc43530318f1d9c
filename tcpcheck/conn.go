package tcpcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DialConfig is how every connection of a test is made and used.
type DialConfig struct {
	App        App
	ServerName string // TLS SNI and HTTP Host
	Path       string // HTTP request path
	// Token is sent as x-access-token; it is never printed, logged or
	// written anywhere else.
	Token string
	// AMQPVHost, with Token, makes AMQP connections log in (user name =
	// token, empty password, this virtual host); without either they stop
	// after Connection.Start, and a broker closes them after its handshake
	// timeout (RabbitMQ: 10 s).
	AMQPVHost string
	RootCAs   *x509.CertPool // nil: system roots
	Insecure  bool

	ConnectTimeout time.Duration // SYN to established
	SetupTimeout   time.Duration // TLS handshake and first exchange
	// UserTimeout bounds how long sent data may stay unacknowledged
	// (TCP_USER_TIMEOUT) so that a silently dropped flow fails in bounded
	// time; RequestTimeout bounds waiting for an answer.
	UserTimeout    time.Duration
	RequestTimeout time.Duration
	// MinTTL, when set, makes the kernel ignore segments arriving with a
	// lower TTL / hop limit (IP_MINTTL, IPV6_MINHOPCOUNT): the
	// unprivileged A/B check of where a RST comes from.
	MinTTL int
	// TimeNow is the clock of timestamps and ages (nil: time.Now); tests
	// inject their own.
	TimeNow func() time.Time
}

func (c DialConfig) now() time.Time {
	if c.TimeNow != nil {
		return c.TimeNow()
	}
	return time.Now()
}

// DefaultDialConfig returns the timeouts used unless a test overrides them.
func DefaultDialConfig() DialConfig {
	return DialConfig{Path: "/v1/users/whoami.xml", ConnectTimeout: 5 * time.Second, SetupTimeout: 10 * time.Second,
		UserTimeout: 3 * time.Second, RequestTimeout: 5 * time.Second}
}

// PhasesMs are the durations of the phases of a connection in
// milliseconds; 0 where the phase did not happen.
type PhasesMs struct {
	TCP       float64 `json:"tcp"`
	TLS       float64 `json:"tls,omitempty"`
	FirstByte float64 `json:"first_byte,omitempty"`
}

// event is what the reader goroutine of a connection saw: an answer (an
// HTTP response, echoed bytes, AMQP bytes) or the end of the stream.
type event struct {
	at     time.Time
	status int    // HTTP status
	data   []byte // bytes (echo, AMQP), a copy
	err    error  // EOF (FIN), ECONNRESET, ETIMEDOUT...
	body   int64  // HTTP body bytes read
	// cut is set when an HTTP response's headers arrived and its body
	// then ended early (err says how).
	cut *bodyCut
}

// bodyCut is an HTTP response whose body ended before it was complete.
type bodyCut struct {
	status int
	got    int64 // body bytes read
	want   int64 // Content-Length; -1 unknown (chunked)
}

// Conn is one established connection with a goroutine that reads from it
// all the time, so that a FIN or RST arriving while it idles is seen when
// it arrives.
type Conn struct {
	cfg    DialConfig
	proto  protocol
	tcp    *net.TCPConn
	c      net.Conn // tcp, or TLS over it
	Local  netip.AddrPort
	Phases PhasesMs
	// Fresh is when the connection last finished an exchange: its idle
	// age counts from here.
	Fresh  time.Time
	Status int // HTTP status of the first request
	// LoggedIn: the AMQP login completed (Open-Ok), so the broker's
	// handshake timeout no longer applies.
	LoggedIn bool

	events chan event
	ended  *event // the end of stream, once seen

	// received counts bytes read from the socket; lastRead is the
	// UnixNano of the last read that returned data (progress of a
	// transfer).
	received atomic.Int64
	lastRead atomic.Int64
}

// countingReader records the progress of reads.
type countingReader struct{ cn *Conn }

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.cn.c.Read(p)
	if n > 0 {
		r.cn.received.Add(int64(n))
		r.cn.lastRead.Store(r.cn.now().UnixNano())
	}
	return n, err
}

// DialResult is the outcome of Dial: Conn is nil unless Outcome is ok.
type DialResult struct {
	Conn      *Conn
	LocalPort uint16 // known even when the connection failed (0 if not)
	Started   time.Time
	Phases    PhasesMs
	Outcome   Outcome
	Phase     Phase // where it failed
	Err       error
	FailedAt  time.Time
}

// Dial connects to addr, does the TLS handshake and the first application
// exchange (HTTP request; AMQP header, and the login when the config has a
// token and a vhost), measuring each phase.
func Dial(ctx context.Context, cfg DialConfig, addr netip.AddrPort) DialResult {
	proto := protocolFor(cfg.App)
	res := DialResult{Started: cfg.now()}
	since := func(t time.Time) float64 { return float64(cfg.now().Sub(t).Microseconds()) / 1000 }
	var localPort uint16
	d := net.Dialer{
		Timeout:   cfg.ConnectTimeout,
		KeepAlive: -1, // TCP keepalive off: idle must stay idle
		Control: func(network, address string, rc syscall.RawConn) error {
			var cerr error
			err := rc.Control(func(fd uintptr) {
				localPort, cerr = prepareSocket(int(fd), addr.Addr().Is6(), cfg.UserTimeout, cfg.MinTTL)
			})
			if err != nil {
				return err
			}
			return cerr
		},
	}
	fail := func(phase Phase, err error) DialResult {
		res.LocalPort, res.FailedAt = localPort, cfg.now()
		res.Outcome, res.Phase, res.Err = Classify(phase, err), phase, err
		return res
	}
	nc, err := d.DialContext(ctx, "tcp", addr.String())
	res.Phases.TCP = since(res.Started)
	if err != nil {
		return fail(PhaseTCP, err)
	}
	tcp := nc.(*net.TCPConn)
	cn := &Conn{cfg: cfg, proto: proto, tcp: tcp, c: tcp, events: make(chan event, 4)}
	if ap, err := netip.ParseAddrPort(tcp.LocalAddr().String()); err == nil {
		cn.Local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		localPort = ap.Port()
	}
	deadline := cfg.now().Add(cfg.SetupTimeout)
	if tc := proto.tlsConfig(cfg); tc != nil {
		tstart := cfg.now()
		tlsConn := tls.Client(tcp, tc)
		hctx, cancel := context.WithDeadline(ctx, deadline)
		err := tlsConn.HandshakeContext(hctx)
		cancel()
		res.Phases.TLS = since(tstart)
		if err != nil {
			tcp.Close()
			return fail(PhaseTLS, err)
		}
		cn.c = tlsConn
	}
	go cn.read()
	if st, ok := proto.(starter); ok {
		astart := cfg.now()
		err := st.start(cn, deadline)
		res.Phases.FirstByte = since(astart)
		if err != nil {
			cn.Close()
			return fail(PhaseApp, err)
		}
	}
	cn.Fresh = cfg.now()
	res.Conn, res.LocalPort, res.Outcome = cn, localPort, OutcomeOK
	cn.Phases = res.Phases
	return res
}

// prepareSocket binds the socket to an ephemeral port before connect, so
// that its port is known (and observed) even if the SYN is answered by a
// RST, and sets TCP_USER_TIMEOUT.
func prepareSocket(fd int, v6 bool, userTimeout time.Duration, minTTL int) (uint16, error) {
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	if v6 {
		sa = &unix.SockaddrInet6{}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, fmt.Errorf("bind ephemeral port: %w", err)
	}
	if userTimeout > 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond)); err != nil {
			return 0, fmt.Errorf("TCP_USER_TIMEOUT: %w", err)
		}
	}
	if minTTL > 0 {
		level, opt := unix.IPPROTO_IP, unix.IP_MINTTL
		if v6 {
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT
		}
		if err := unix.SetsockoptInt(fd, level, opt, minTTL); err != nil {
			return 0, fmt.Errorf("minimum TTL %d: %w", minTTL, err)
		}
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port), nil
	case *unix.SockaddrInet6:
		return uint16(a.Port), nil
	}
	return 0, nil
}

// now is the connection's clock.
func (cn *Conn) now() time.Time { return cn.cfg.now() }

// read runs the protocol's reader and closes events at the end.
func (cn *Conn) read() {
	defer close(cn.events)
	cn.proto.read(cn)
}

// Events delivers what arrives while the connection idles. The caller
// that watches an idle connection reads it; exchanges read it too.
func (cn *Conn) Events() <-chan event { return cn.events }

// write sends msg, giving up at deadline.
func (cn *Conn) write(msg []byte, deadline time.Time) error {
	_ = cn.c.SetWriteDeadline(deadline)
	_, err := cn.c.Write(msg)
	return err
}

// exchange sends one request and waits for its answer (HTTP response,
// echo) or, for AMQP whose heartbeats are not answered, until the request
// is acknowledged.
func (cn *Conn) exchange(deadline time.Time) (event, error) {
	if cn.ended != nil {
		return *cn.ended, cn.ended.err
	}
	if err := cn.write(cn.proto.request(cn.cfg), deadline); err != nil {
		// The reader has probably seen why (RST): prefer its error.
		select {
		case ev, ok := <-cn.events:
			if ok && ev.err != nil {
				cn.ended = &ev
				return ev, ev.err
			}
		case <-time.After(50 * time.Millisecond):
		}
		return event{at: cn.now(), err: err}, err
	}
	timer := time.NewTimer(deadline.Sub(cn.now()))
	defer timer.Stop()
	var tick <-chan time.Time
	if cn.proto.ackOnly() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev, ok := <-cn.events:
			if !ok {
				ev = event{at: cn.now(), err: io.EOF}
			}
			if ev.err != nil {
				cn.ended = &ev
				return ev, ev.err
			}
			if cn.proto.ackOnly() {
				continue
			}
			return ev, nil
		case <-tick:
			if cn.unacked() == 0 {
				return event{at: cn.now()}, nil
			}
		case <-timer.C:
			err := fmt.Errorf("no answer within %v: %w", cn.cfg.RequestTimeout, errTimeout)
			return event{at: cn.now(), err: err}, err
		}
	}
}

var errTimeout = syscall.ETIMEDOUT

// unacked is tcpi_unacked from TCP_INFO (-1 on error).
func (cn *Conn) unacked() int {
	rc, err := cn.tcp.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int(info.Unacked)
		}
	})
	return n
}

// TCPInfo returns the kernel's TCP_INFO for the connection.
func (cn *Conn) TCPInfo() (*unix.TCPInfo, error) {
	rc, err := cn.tcp.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, ierr
}

// Reuse does one request after idling and reports its outcome.
func (cn *Conn) Reuse() (Outcome, time.Time, error) {
	ev, err := cn.exchange(cn.now().Add(cn.cfg.RequestTimeout))
	if err == nil {
		cn.Fresh = cn.now()
	}
	return Classify(PhaseRequest, err), ev.at, err
}

// Close closes the connection (FIN).
func (cn *Conn) Close() error {
	err := cn.c.Close()
	if cn.c != net.Conn(cn.tcp) {
		cn.tcp.Close()
	}
	return err
}

// Abort closes with a RST (SO_LINGER 0) so that no state lingers.
func (cn *Conn) Abort() error {
	_ = cn.tcp.SetLinger(0)
	return cn.Close()
}

// SetMinTTL makes the kernel ignore segments of this connection that
// arrive with a TTL / hop limit below v.
func (cn *Conn) SetMinTTL(v int) error {
	rc, err := cn.tcp.SyscallConn()
	if err != nil {
		return err
	}
	level, opt := unix.IPPROTO_IP, unix.IP_MINTTL
	if cn.Local.Addr().Is6() {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return err
	}
	return serr
}

// SetKeepAlive turns TCP keepalive on with probes every interval after
// idle (the verification of an idle-timeout fix).
func (cn *Conn) SetKeepAlive(idle time.Duration) error {
	return cn.tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: idle, Count: 3})
}

// TCP is the connection's TCP socket (for TCP_INFO-based flow state of
// in-flow probes); nil before it is established.
func (cn *Conn) TCP() *net.TCPConn { return cn.tcp }
