package lab

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hopcheck/hopcheck/internal/amqp"
)

// ServeConfig configures the lab server process (`hopcheck lab-serve`).
type ServeConfig struct {
	Server
	CertFile, KeyFile string
	Listen4, Listen6  string    // listen addresses; "" = 0.0.0.0 and ::; "-" = that family off
	Ready             io.Writer // optional: gets "ready\n" once every listener is bound
	Log               io.Writer // optional: connection events and errors
}

// Serve runs the lab server until ctx is done: a TLS HTTP server, a TLS
// AMQP broker double (login only) and a TCP echo, each on both families.
// It returns nil after ctx is done, or the error that stopped it.
func Serve(ctx context.Context, cfg ServeConfig) error {
	s := cfg.Server.WithDefaults()
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "lab-serve: ", log.LstdFlags|log.Lmicroseconds)
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("lab-serve: loading certificate: %w", err)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	httpTLS := tlsConf.Clone()
	httpTLS.NextProtos = []string{"http/1.1"}

	hosts := []string{}
	for _, h := range []struct{ v, def string }{{cfg.Listen4, "0.0.0.0"}, {cfg.Listen6, "::"}} {
		switch h.v {
		case "-":
		case "":
			hosts = append(hosts, h.def)
		default:
			hosts = append(hosts, h.v)
		}
	}
	if len(hosts) == 0 {
		return errors.New("lab-serve: both families are off")
	}

	conns := newConnTracker(s.MaxConns, logger)
	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	listen := func(port int) ([]net.Listener, error) {
		var out []net.Listener
		for _, h := range hosts {
			network := "tcp4"
			if net.ParseIP(h).To4() == nil {
				network = "tcp6" // IPV6_V6ONLY: the tcp4 listener takes v4
			}
			// No TCP keepalive from the server: its probes would refresh the
			// routers' conntrack entries and hide idle timeouts above 15 s.
			lc := net.ListenConfig{KeepAlive: -1}
			ln, err := lc.Listen(context.Background(), network, net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				return nil, fmt.Errorf("lab-serve: %w", err)
			}
			listeners = append(listeners, ln)
			out = append(out, &trackedListener{Listener: ln, conns: conns})
		}
		return out, nil
	}
	httpLns, err := listen(s.HTTPSPort)
	if err != nil {
		closeAll()
		return err
	}
	amqpLns, err := listen(s.AMQPPort)
	if err != nil {
		closeAll()
		return err
	}
	echoLns, err := listen(s.EchoPort)
	if err != nil {
		closeAll()
		return err
	}

	srv := &http.Server{
		Handler:     NewHTTPHandler(s),
		IdleTimeout: s.IdleClose,
		// A connection's TLS handshake and its first request get nginx's
		// client_header_timeout, not the keep-alive idle close: nginx holds
		// a connection that never sent a request for 60 s whatever its
		// keepalive_timeout (e2e/nginx_test.go checks it against nginx).
		ReadHeaderTimeout: headerTimeout,
		ErrorLog:          logger,
	}
	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	for _, ln := range httpLns {
		wg.Go(func() {
			if err := srv.Serve(tls.NewListener(ln, httpTLS)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("lab-serve: https: %w", err)
			}
		})
	}
	for _, ln := range amqpLns {
		wg.Go(func() {
			acceptLoop(tls.NewListener(ln, tlsConf), serveErr, func(c net.Conn) { serveAMQP(c, s, logger) })
		})
	}
	for _, ln := range echoLns {
		wg.Go(func() {
			acceptLoop(ln, serveErr, func(c net.Conn) { serveEcho(c, s.IdleClose) })
		})
	}
	logger.Printf("listening: https %d, amqp %d, echo %d on %v; max conns %d, idle close %v, amqp handshake timeout %v",
		s.HTTPSPort, s.AMQPPort, s.EchoPort, hosts, s.MaxConns, s.IdleClose, s.HandshakeTimeout)
	if cfg.Ready != nil {
		if _, err := io.WriteString(cfg.Ready, "ready\n"); err != nil {
			logger.Printf("writing ready: %v", err)
		}
	}
	var result error
	select {
	case <-ctx.Done():
	case result = <-serveErr:
	}
	closeAll()
	srv.Close()
	conns.closeAll()
	wg.Wait()
	return result
}

// headerTimeout is how long the lab HTTPS server waits for a TLS handshake
// and for the headers of a request: nginx's client_header_timeout default.
// A variable so that unit tests can shorten it.
var headerTimeout = 60 * time.Second

// acceptLoop serves each accepted connection on its own goroutine until the
// listener is closed.
func acceptLoop(ln net.Listener, errc chan<- error, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("lab-serve: accept: %w", err)
			}
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// serveEcho copies back what it reads until EOF or idleClose without data.
func serveEcho(c net.Conn, idleClose time.Duration) {
	buf := make([]byte, 32<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleClose))
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// AMQP reply codes the lab broker closes with (AMQP 0-9-1 constants).
const (
	amqpReplyAccessRefused = 403
	amqpReplyNotAllowed    = 530
	amqpReplyFrameError    = 501
)

// amqpRefusalDelay is how long RabbitMQ keeps a connection it refuses
// during the handshake before it drops the socket: its NORMAL_TIMEOUT
// (3 s) before tuning, which is also its SILENT_CLOSE_DELAY for errors
// that it answers with silence (rabbit_reader).
const amqpRefusalDelay = 3 * time.Second

// amqpLogin is where a connection stands in the AMQP handshake.
type amqpLogin int

const (
	awaitStartOk amqpLogin = iota
	awaitTuneOk
	awaitOpen
	loggedIn
	closing // refused: waits for Close-Ok or the refusal delay, then drops the socket
)

// serveAMQP plays a RabbitMQ 3.x broker's connection handshake. The right
// protocol header gets Connection.Start; Start-Ok with PLAIN and the lab
// token as user name (password empty) gets Connection.Tune; after
// Tune-Ok, Connection.Open of VHost gets Open-Ok. Refusals are RabbitMQ's
// (rabbit_reader's handle_exception):
//   - a wrong token gets Connection.Close 403 ACCESS_REFUSED only when the
//     client announced the authentication_failure_close capability in
//     Start-Ok; otherwise nothing: the socket is dropped after 3 s;
//   - a wrong vhost gets Connection.Close 530 NOT_ALLOWED, whatever the
//     capabilities;
//   - any other error before login (a frame or method out of place) gets
//     silence and a dropped socket after 3 s.
//
// After a Close the broker drops the socket on Close-Ok or after 3 s.
// A connection that has not logged in within s.HandshakeTimeout of its
// accept is closed (FIN), as RabbitMQ's handshake_timeout does. A
// logged-in connection is held, heartbeat frames accepted, until the peer
// closes, s.IdleClose passes without a frame, or, with a negotiated
// heartbeat h > 0, 2h pass without one (RabbitMQ's missed-heartbeats
// close). The lab broker sends no heartbeats of its own: hopcheck
// negotiates them off.
func serveAMQP(c net.Conn, s Server, logger *log.Logger) {
	handshakeBy := time.Now().Add(s.HandshakeTimeout)
	_ = c.SetReadDeadline(earliest(handshakeBy, time.Now().Add(s.IdleClose)))
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if time.Now().After(handshakeBy) {
			logger.Printf("amqp %v: handshake timeout %v: closing", c.RemoteAddr(), s.HandshakeTimeout)
		}
		return
	}
	if string(hdr[:]) != amqp.ProtocolHeader {
		logger.Printf("amqp %v: wrong header %q", c.RemoteAddr(), hdr[:])
		_, _ = c.Write([]byte(amqp.ProtocolHeader))
		return
	}
	frame, err := amqp.EncodeStart(LabConnectionStart())
	if err != nil {
		logger.Printf("amqp: encoding Connection.Start: %v", err)
		return
	}
	if _, err := c.Write(frame); err != nil {
		return
	}
	st := amqpConn{c: c, s: s, logger: logger}
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		deadline := time.Now().Add(s.IdleClose)
		switch {
		case st.state == closing:
			deadline = st.dropAt
		case st.state != loggedIn:
			deadline = earliest(deadline, handshakeBy)
		case st.heartbeat > 0:
			deadline = earliest(deadline, time.Now().Add(2*st.heartbeat))
		}
		_ = c.SetReadDeadline(deadline)
		n, rerr := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		for st.state != closing || len(buf) > 0 {
			fr, used, err := amqp.DecodeFrame(buf)
			if errors.Is(err, amqp.ErrShort) {
				break
			}
			if err != nil {
				if st.state == closing {
					buf = nil // refused already: the rest is not read
					break
				}
				logger.Printf("amqp %v: %v", c.RemoteAddr(), err)
				if st.state == loggedIn {
					_, _ = c.Write(amqp.EncodeClose(amqp.Close{Code: amqpReplyFrameError, Text: "FRAME_ERROR - " + err.Error()}))
					return
				}
				st.refuseSilently()
				buf = nil
				break
			}
			buf = buf[used:]
			if !st.handle(fr) {
				return
			}
		}
		if rerr != nil {
			switch {
			case st.state == closing:
				logger.Printf("amqp %v: refused: dropping the connection", c.RemoteAddr())
			case st.state != loggedIn && time.Now().After(handshakeBy):
				logger.Printf("amqp %v: handshake timeout %v: closing", c.RemoteAddr(), s.HandshakeTimeout)
			}
			return
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// amqpConn is the lab broker's state of one connection.
type amqpConn struct {
	c         net.Conn
	s         Server
	logger    *log.Logger
	state     amqpLogin
	heartbeat time.Duration
	// authFailureClose: the client announced authentication_failure_close.
	authFailureClose bool
	dropAt           time.Time // closing: when the socket is dropped
}

// handle acts on one frame; false ends the connection.
func (a *amqpConn) handle(fr amqp.Frame) bool {
	if a.state == closing {
		// RabbitMQ, closing, reads on and acts only on Close-Ok.
		if class, method, err := amqp.MethodOf(fr.Payload); err == nil && fr.Type == amqp.FrameMethod &&
			class == amqp.ClassConnection && method == amqp.MethodCloseOk {
			return false
		}
		return true
	}
	if fr.Type == amqp.FrameHeartbeat {
		return true
	}
	if fr.Type != amqp.FrameMethod || fr.Channel != 0 {
		if a.state == loggedIn {
			return true // no channels are open: nothing to do with it
		}
		a.logger.Printf("amqp %v: frame type %d on channel %d before login", a.c.RemoteAddr(), fr.Type, fr.Channel)
		return a.refuseSilently()
	}
	class, method, err := amqp.MethodOf(fr.Payload)
	if err != nil {
		return a.refuseSilently()
	}
	if class == amqp.ClassConnection && method == amqp.MethodClose {
		_, _ = a.c.Write(amqp.EncodeCloseOk())
		return false
	}
	switch a.state {
	case awaitStartOk:
		so, err := amqp.DecodeStartOk(fr.Payload)
		if err != nil {
			a.logger.Printf("amqp %v: expected connection.start_ok: %v", a.c.RemoteAddr(), err)
			return a.refuseSilently()
		}
		a.authFailureClose = amqp.Capability(so.ClientProperties, "authentication_failure_close")
		want := "\x00" + a.s.Token + "\x00"
		if so.Mechanism != "PLAIN" || subtle.ConstantTimeCompare([]byte(so.Response), []byte(want)) != 1 {
			a.logger.Printf("amqp %v: login refused (mechanism %q, authentication_failure_close %v)", a.c.RemoteAddr(), so.Mechanism, a.authFailureClose)
			if !a.authFailureClose {
				return a.refuseSilently()
			}
			return a.refuse(amqpReplyAccessRefused, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.", class, method)
		}
		a.state = awaitTuneOk
		_, err = a.c.Write(amqp.EncodeTune(amqp.Tune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}))
		return err == nil
	case awaitTuneOk:
		t, err := amqp.DecodeTuneOk(fr.Payload)
		if err != nil {
			a.logger.Printf("amqp %v: expected connection.tune_ok: %v", a.c.RemoteAddr(), err)
			return a.refuseSilently()
		}
		a.heartbeat = time.Duration(t.Heartbeat) * time.Second
		a.state = awaitOpen
		return true
	case awaitOpen:
		vhost, err := amqp.DecodeOpen(fr.Payload)
		if err != nil {
			a.logger.Printf("amqp %v: expected connection.open: %v", a.c.RemoteAddr(), err)
			return a.refuseSilently()
		}
		if vhost != VHost {
			return a.refuse(amqpReplyNotAllowed, fmt.Sprintf("NOT_ALLOWED - vhost %s not found", vhost), class, method)
		}
		a.state = loggedIn
		a.logger.Printf("amqp %v: logged in, vhost %s, heartbeat %v", a.c.RemoteAddr(), vhost, a.heartbeat)
		_, err = a.c.Write(amqp.EncodeOpenOk())
		return err == nil
	}
	return true // logged in: other connection methods are ignored
}

// refuse sends Connection.Close and waits for Close-Ok or the refusal
// delay before the socket is dropped, as RabbitMQ does.
func (a *amqpConn) refuse(code uint16, text string, class, method uint16) bool {
	if _, err := a.c.Write(amqp.EncodeClose(amqp.Close{Code: code, Text: text, Class: class, Method: method})); err != nil {
		return false
	}
	a.state, a.dropAt = closing, time.Now().Add(amqpRefusalDelay)
	return true
}

// refuseSilently sends nothing and drops the socket after the refusal
// delay: RabbitMQ's answer, before login, to a client that did not ask
// for a Close and to a connection error it does not trust the client
// with.
func (a *amqpConn) refuseSilently() bool {
	a.state, a.dropAt = closing, time.Now().Add(amqpRefusalDelay)
	return true
}

// WhoamiPath is the authenticated endpoint of the lab HTTPS server.
const WhoamiPath = "/v1/users/whoami.xml"

// MarketsPath is the UOF market descriptions document (the query string,
// e.g. ?include_mappings=true, is ignored), which the data test downloads
// by default.
const MarketsPath = "/v1/descriptions/en/markets.xml"

// NewHTTPHandler serves:
//
//	GET /v1/users/whoami.xml  200 <bookmaker_details/> XML with the right
//	                          x-access-token, else 401
//	GET /v1/descriptions/en/markets.xml
//	                          s.LargeSize bytes with the right
//	                          x-access-token, else 401
//	GET /large                s.LargeSize bytes
//	GET /truncated            announces Content-Length s.LargeSize, sends
//	                          TruncatedSize(s) bytes, then closes the
//	                          connection with a FIN (a graceful restart
//	                          mid-response, as the client sees it)
//	GET /peer                 the client address as the server sees it
//	GET /                     a short text
func NewHTTPHandler(s Server) http.Handler {
	s = s.WithDefaults()
	mux := http.NewServeMux()
	// authorized answers 401 unless the request carries the token.
	authorized := func(w http.ResponseWriter, r *http.Request) bool {
		got := r.Header.Get("x-access-token")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) != 1 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<error code="401" message="invalid or missing x-access-token"/>`+"\n")
			return false
		}
		return true
	}
	mux.HandleFunc("GET "+WhoamiPath, func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<bookmaker_details response_code="OK" expire_at="2099-01-01T00:00:00Z" bookmaker_id="1" virtual_host="`+VHost+`"/>`+"\n")
	})
	mux.HandleFunc("GET "+MarketsPath, func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Content-Length", strconv.Itoa(s.LargeSize))
		writeBody(w, s.LargeSize)
	})
	mux.HandleFunc("GET /large", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(s.LargeSize))
		writeBody(w, s.LargeSize)
	})
	mux.HandleFunc("GET /truncated", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(s.LargeSize))
		if !writeBody(w, TruncatedSize(s)) {
			return
		}
		// Flush what was written, then close: TLS close_notify and a FIN
		// (nothing unread is queued, so no RST). Where hijacking is not
		// supported (HTTP/2, a recorder) returning does it too: net/http
		// closes a connection whose response fell short of its
		// Content-Length.
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		if c, _, err := rc.Hijack(); err == nil {
			c.Close()
		}
	})
	mux.HandleFunc("GET /peer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.RemoteAddr+"\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hopcheck lab server\n")
	})
	return mux
}

// TruncatedSize is what GET /truncated sends of the s.LargeSize it
// announces: 1 MiB, or half of a smaller LargeSize.
func TruncatedSize(s Server) int {
	s = s.WithDefaults()
	return min(1<<20, s.LargeSize/2)
}

// writeBody writes n bytes of filler; false if the client went away.
func writeBody(w io.Writer, n int) bool {
	chunk := bytes.Repeat([]byte("hopcheck-lab-large-body\n"), 32<<10/24)
	for left := n; left > 0; {
		k := min(left, len(chunk))
		if _, err := w.Write(chunk[:k]); err != nil {
			return false
		}
		left -= k
	}
	return true
}

// connTracker counts open connections across all ports, enforces MaxConns
// and closes everything at shutdown.
type connTracker struct {
	max    int
	logger *log.Logger
	mu     sync.Mutex
	open   map[*trackedConn]struct{}
	closed bool
}

func newConnTracker(max int, logger *log.Logger) *connTracker {
	return &connTracker{max: max, logger: logger, open: map[*trackedConn]struct{}{}}
}

func (t *connTracker) add(c *trackedConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || (t.max > 0 && len(t.open) >= t.max) {
		return false
	}
	t.open[c] = struct{}{}
	return true
}

func (t *connTracker) remove(c *trackedConn) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	all := make([]*trackedConn, 0, len(t.open))
	for c := range t.open {
		all = append(all, c)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// trackedListener admits connections through the tracker; beyond the cap
// it closes them with SO_LINGER 0 so that the client gets a reset.
type trackedListener struct {
	net.Listener
	conns *connTracker
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, tracker: l.conns}
		if l.conns.add(tc) {
			return tc, nil
		}
		l.conns.logger.Printf("%v: over max conns %d: reset", c.RemoteAddr(), l.conns.max)
		resetClose(c)
	}
}

// resetClose closes c with a TCP reset instead of a FIN.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

type trackedConn struct {
	net.Conn
	tracker *connTracker
	once    sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.tracker.remove(c) })
	return err
}
