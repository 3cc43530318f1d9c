package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/internal/amqp"
)

func TestHTTPHandler(t *testing.T) {
	h := NewHTTPHandler(Server{Token: "secret", LargeSize: 100_000})
	tests := []struct {
		name, path, token string
		status            int
		body              string // substring
		size              int    // exact body size if > 0
	}{
		{"whoami with token", WhoamiPath, "secret", 200, "<bookmaker_details ", 0},
		{"whoami without token", WhoamiPath, "", 401, "<error", 0},
		{"whoami wrong token", WhoamiPath, "secreT", 401, "<error", 0},
		{"whoami token prefix", WhoamiPath, "secre", 401, "", 0},
		{"large", "/large", "", 200, "hopcheck-lab-large-body", 100_000},
		{"markets with token", MarketsPath + "?include_mappings=true", "secret", 200, "hopcheck-lab-large-body", 100_000},
		{"markets without token", MarketsPath, "", 401, "<error", 0},
		{"peer", "/peer", "", 200, "192.0.2.1:1234", 0},
		{"root", "/", "", 200, "hopcheck lab server", 0},
		{"unknown", "/nope", "", 404, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", tc.path, nil)
			if tc.token != "" {
				req.Header.Set("x-access-token", tc.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := rec.Body.String()
			if rec.Code != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("status %d body %.200q, want %d with %q", rec.Code, body, tc.status, tc.body)
			}
			if tc.size > 0 && (len(body) != tc.size || rec.Header().Get("Content-Length") != strconv.Itoa(tc.size)) {
				t.Fatalf("body %d bytes, Content-Length %s, want %d", len(body), rec.Header().Get("Content-Length"), tc.size)
			}
			if strings.Contains(body, "secret") {
				t.Fatal("response leaks the token")
			}
		})
	}
}

func TestWriteCertsVerifies(t *testing.T) {
	dir := t.TempDir()
	ips := []netip.Addr{netip.MustParseAddr("198.18.6.2"), netip.MustParseAddr("2001:db8:0:6::2")}
	caFile, certFile, keyFile, err := WriteCerts(dir, ips)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 2 {
		t.Fatalf("server.pem holds %d certificates, want leaf and intermediate", len(pair.Certificate))
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(pair.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PublicKeyAlgorithm != x509.RSA || !inter.IsCA {
		t.Errorf("leaf key %v, intermediate CA %v: want an RSA leaf under an intermediate CA", leaf.PublicKeyAlgorithm, inter.IsCA)
	}
	// The server's flight must not fit one segment (as a public CA's
	// does not): chain + RSA CertificateVerify (256 B) + the other
	// messages (~200 B) above a 1460-byte segment.
	if n := len(pair.Certificate[0]) + len(pair.Certificate[1]); n+256+200 < 1460 {
		t.Errorf("chain of %d bytes: the server flight would fit one segment", n)
	}
	pool := caPool(t, caFile)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	for _, name := range []string{"198.18.6.2", "2001:db8:0:6::2", ServerName} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, DNSName: "198.18.6.3"}); err == nil {
		t.Error("verified for an address not in the SANs")
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
}

// Server.SmallCertChain: one ECDSA leaf signed by the CA, verifying for
// the addresses, so small that the server's whole flight (leaf + ECDSA
// CertificateVerify ~80 B + the other messages ~200 B) fits one segment
// of a 1280-byte path: the handshake passes a black hole a download dies in.
func TestWriteCertsSmallChain(t *testing.T) {
	dir := t.TempDir()
	ips := []netip.Addr{netip.MustParseAddr("198.18.6.2"), netip.MustParseAddr("2001:db8:0:6::2")}
	caFile, certFile, keyFile, err := writeCerts(dir, ips, true)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 1 {
		t.Fatalf("server.pem holds %d certificates, want the leaf alone", len(pair.Certificate))
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("leaf key %v, want ECDSA", leaf.PublicKeyAlgorithm)
	}
	if n := len(pair.Certificate[0]); n+80+200 > 1280-60 {
		t.Errorf("leaf of %d bytes: the server flight would not fit one 1280-byte packet", n)
	}
	for _, name := range []string{"198.18.6.2", "2001:db8:0:6::2", ServerName} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool(t, caFile), DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
}

func caPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in " + caFile)
	}
	return pool
}

// freePorts returns n TCP ports free on 127.0.0.1 (and ::1 when available).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		p := ln.Addr().(*net.TCPAddr).Port
		if ln6, err := net.Listen("tcp6", "[::1]:"+strconv.Itoa(p)); err == nil {
			held = append(held, ln6)
		} else if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EAFNOSUPPORT) {
			continue
		}
		ports = append(ports, p)
	}
	return ports
}

// startLoopbackServer runs Serve on loopback and returns the ports.
func startLoopbackServer(t *testing.T, s Server) (Server, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile, err := WriteCerts(dir, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	s.HTTPSPort, s.AMQPPort, s.EchoPort = ports[0], ports[1], ports[2]
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeConfig{Server: s, CertFile: certFile, KeyFile: keyFile,
			Listen4: "127.0.0.1", Listen6: "-", Ready: pw, Log: testLogWriter{t}})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if line != "ready\n" {
		cancel()
		t.Fatalf("server not ready: %q %v %v", line, err, <-done)
	}
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, caPool(t, caFile)
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func TestServeLoopback(t *testing.T) {
	s, pool := startLoopbackServer(t, Server{Token: "tok", IdleClose: 700 * time.Millisecond, LargeSize: 1 << 20})

	t.Run("https whoami and keep-alive idle close", func(t *testing.T) {
		conn, err := tls.Dial("tcp", loopback(s.HTTPSPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for _, tc := range []struct {
			token  string
			status int
		}{{"tok", 200}, {"", 401}, {"tok", 200}} { // one connection: keep-alive
			req, _ := http.NewRequest("GET", "https://"+ServerName+WhoamiPath, nil)
			if tc.token != "" {
				req.Header.Set("x-access-token", tc.token)
			}
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("token %q: status %d, want %d", tc.token, resp.StatusCode, tc.status)
			}
		}
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("idle keep-alive connection: %v, want EOF", err)
		}
		if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
			t.Fatalf("server closed the idle connection after %v, want about 700ms", d)
		}
	})

	t.Run("amqp start", func(t *testing.T) {
		conn, err := tls.Dial("tcp", loopback(s.AMQPPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte(amqp.ProtocolHeader))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 0, 512)
		for {
			fr, _, err := amqp.DecodeFrame(buf)
			if err == nil {
				cs, err := amqp.DecodeStart(fr.Payload)
				if err != nil {
					t.Fatal(err)
				}
				if cs.Mechanisms != "PLAIN" || cs.Locales != "en_US" || cs.VersionMinor != 9 {
					t.Fatalf("got %+v", cs)
				}
				return
			}
			if !errors.Is(err, amqp.ErrShort) {
				t.Fatal(err)
			}
			tmp := make([]byte, 512)
			n, rerr := conn.Read(tmp)
			if rerr != nil {
				t.Fatalf("reading Connection.Start: %v (have % x)", rerr, buf)
			}
			buf = append(buf, tmp[:n]...)
		}
	})

	t.Run("amqp wrong header", func(t *testing.T) {
		conn, err := tls.Dial("tcp", loopback(s.AMQPPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("AMQP\x00\x00\x08\x00"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(conn)
		if string(got) != amqp.ProtocolHeader {
			t.Fatalf("got %q (%v), want the protocol header and close", got, err)
		}
	})

	t.Run("echo", func(t *testing.T) {
		conn, err := net.Dial("tcp", loopback(s.EchoPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if got := echoOnce(t, conn, "hello"); got != "hello" {
			t.Fatalf("echo %q", got)
		}
	})
}

func echoOnce(t *testing.T, conn net.Conn, msg string) string {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

func TestServeMaxConnsResets(t *testing.T) {
	s, pool := startLoopbackServer(t, Server{MaxConns: 2})
	a, err := net.Dial("tcp", loopback(s.EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	echoOnce(t, a, "a")
	b, err := tls.Dial("tcp", loopback(s.HTTPSPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Third connection, on a third port: accepted by the kernel, then reset.
	// The reset often arrives before connect(2) returns.
	c, err := net.Dial("tcp", loopback(s.AMQPPort))
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection over the cap: %v, want a reset", err)
	}
	// A closed connection frees its slot.
	a.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		d, err := net.Dial("tcp", loopback(s.EchoPort))
		if err == nil {
			d.SetDeadline(time.Now().Add(time.Second))
			d.Write([]byte("d"))
			_, err = io.ReadFull(d, make([]byte, 1))
			d.Close()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after closing a connection: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHTTPHandlerTruncated(t *testing.T) {
	s := Server{LargeSize: 100_000}
	rec := httptest.NewRecorder()
	NewHTTPHandler(s).ServeHTTP(rec, httptest.NewRequest("GET", "/truncated", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Length") != "100000" {
		t.Fatalf("status %d, Content-Length %q; want 200 announcing 100000", rec.Code, rec.Header().Get("Content-Length"))
	}
	if got, want := rec.Body.Len(), TruncatedSize(s); got != want || want != 50_000 {
		t.Fatalf("body %d bytes, want %d (half of a LargeSize below 2 MiB)", got, want)
	}
	if got := TruncatedSize(Server{}); got != 1<<20 {
		t.Fatalf("TruncatedSize of the default large size = %d, want 1 MiB", got)
	}
}

// GET /truncated over TLS: the body stops after TruncatedSize of the
// announced bytes, and the connection ends with a FIN (EOF on the TCP
// socket under TLS), not a RST.
func TestServeTruncatedEndsWithFIN(t *testing.T) {
	s, pool := startLoopbackServer(t, Server{LargeSize: 4 << 20})
	raw, err := net.Dial("tcp", loopback(s.HTTPSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: ServerName})
	req, _ := http.NewRequest("GET", "https://"+ServerName+"/truncated", nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || resp.ContentLength != 4<<20 {
		t.Errorf("status %d, Content-Length %d; want 200 announcing %d", resp.StatusCode, resp.ContentLength, 4<<20)
	}
	if n != int64(TruncatedSize(s)) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body %d bytes (%v), want %d then an unexpected EOF", n, err, TruncatedSize(s))
	}
	// TLS saw close_notify; below it the TCP stream must end with a FIN.
	if k, err := raw.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		t.Fatalf("TCP after the close: %d bytes, %v; want EOF (a FIN), not a reset", k, err)
	}
}

// amqpClient is a hand-driven AMQP client of the lab broker.
type amqpClient struct {
	t    *testing.T
	conn *tls.Conn
	buf  []byte
}

func dialAMQP(t *testing.T, s Server, pool *x509.CertPool) *amqpClient {
	t.Helper()
	conn, err := tls.Dial("tcp", loopback(s.AMQPPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &amqpClient{t: t, conn: conn}
	c.send([]byte(amqp.ProtocolHeader))
	if _, err := c.frame(); err != nil { // Connection.Start
		t.Fatalf("Connection.Start: %v", err)
	}
	return c
}

func (c *amqpClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// frame reads the next frame (io.EOF when the broker closed).
func (c *amqpClient) frame() (amqp.Frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		fr, n, err := amqp.DecodeFrame(c.buf)
		if err == nil {
			fr.Payload = bytes.Clone(fr.Payload)
			c.buf = c.buf[n:]
			return fr, nil
		}
		if !errors.Is(err, amqp.ErrShort) {
			return fr, err
		}
		tmp := make([]byte, 4096)
		n, err = c.conn.Read(tmp)
		c.buf = append(c.buf, tmp[:n]...)
		if err != nil && n == 0 {
			return amqp.Frame{}, err
		}
	}
}

// method reads a frame and returns its class and method.
func (c *amqpClient) method() (uint16, uint16, []byte) {
	c.t.Helper()
	fr, err := c.frame()
	if err != nil {
		c.t.Fatalf("reading a method: %v", err)
	}
	class, method, err := amqp.MethodOf(fr.Payload)
	if err != nil {
		c.t.Fatal(err)
	}
	return class, method, fr.Payload
}

func startOkFrame(token string) []byte {
	frame, _ := amqp.EncodeStartOk(amqp.StartOk{Mechanism: "PLAIN", Response: "\x00" + token + "\x00", Locale: "en_US"})
	return frame // no client properties: nothing can fail to encode
}

func tuneOkFrame(heartbeat uint16) []byte {
	return amqp.EncodeTuneOk(amqp.Tune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: heartbeat})
}

func openFrame(vhost string) []byte { return amqp.EncodeOpen(vhost) }

// login runs the handshake up to Connection.Open and returns the class and
// method of the broker's answer to it.
func (c *amqpClient) login(token, vhost string, heartbeat uint16) (uint16, uint16, []byte) {
	c.t.Helper()
	c.send(startOkFrame(token))
	class, method, payload := c.method()
	if method != amqp.MethodTune {
		return class, method, payload
	}
	c.send(tuneOkFrame(heartbeat))
	c.send(openFrame(vhost))
	return c.method()
}

// closedAfter expects the broker to close the connection between lo and
// hi after start.
func (c *amqpClient) closedAfter(t *testing.T, start time.Time, lo, hi time.Duration) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(hi + 2*time.Second))
	_, err := io.ReadAll(c.conn)
	d := time.Since(start)
	if err != nil || d < lo || d > hi {
		t.Fatalf("closed after %v (%v); want EOF between %v and %v", d, err, lo, hi)
	}
}

func TestServeAMQPLogin(t *testing.T) {
	t.Parallel()
	s, pool := startLoopbackServer(t, Server{Token: "tok", IdleClose: 2 * time.Second, HandshakeTimeout: 600 * time.Millisecond})

	t.Run("tune values", func(t *testing.T) {
		c := dialAMQP(t, s, pool)
		c.send(startOkFrame("tok"))
		_, method, payload := c.method()
		if method != amqp.MethodTune || !bytes.Equal(payload[4:], []byte{0x07, 0xff, 0, 2, 0, 0, 0, 60}) {
			t.Fatalf("method %d args % x; want Tune 2047/131072/60", method, payload[4:])
		}
	})
	t.Run("logged in outlives the handshake timeout, until the idle close", func(t *testing.T) {
		start := time.Now()
		c := dialAMQP(t, s, pool)
		if _, method, _ := c.login("tok", VHost, 0); method != amqp.MethodOpenOk {
			t.Fatalf("answer to Connection.Open: method %d, want Open-Ok", method)
		}
		time.Sleep(time.Second) // past the handshake timeout
		c.send([]byte{8, 0, 0, 0, 0, 0, 0, 0xCE})
		sent := time.Now()
		c.closedAfter(t, sent, 1500*time.Millisecond, 3*time.Second)
		if time.Since(start) < 2*time.Second {
			t.Fatalf("closed %v after connect", time.Since(start))
		}
	})
	t.Run("heartbeat 1s: closed after two missed", func(t *testing.T) {
		c := dialAMQP(t, s, pool)
		if _, method, _ := c.login("tok", VHost, 1); method != amqp.MethodOpenOk {
			t.Fatalf("method %d, want Open-Ok", method)
		}
		c.closedAfter(t, time.Now(), 1500*time.Millisecond, 2500*time.Millisecond)
	})
	t.Run("not logged in: closed at the handshake timeout", func(t *testing.T) {
		start := time.Now()
		c := dialAMQP(t, s, pool)
		c.send(startOkFrame("tok")) // stops before Tune-Ok
		c.method()
		c.closedAfter(t, start, 400*time.Millisecond, 1500*time.Millisecond)
	})
	// Refusals as RabbitMQ's rabbit_reader makes them; each waits up to
	// the 3 s refusal delay, so they run in parallel.
	javaCaps := []amqp.Field{{Name: "capabilities", Value: []amqp.Field{{Name: "authentication_failure_close", Value: true}}}}
	for _, tc := range []struct {
		name, token, vhost string
		props              []amqp.Field // Start-Ok's client-properties
		code               uint16       // Connection.Close's reply code; 0: none, the socket is dropped
		closeOk            bool         // answer the Close with Close-Ok
		lo, hi             time.Duration
	}{
		{"wrong token, no capability: silence, dropped after 3s", "toK", VHost, nil, 0, false, 2500 * time.Millisecond, 4500 * time.Millisecond},
		{"empty token, capability announced false", "", VHost, []amqp.Field{{Name: "capabilities", Value: []amqp.Field{{Name: "authentication_failure_close", Value: false}}}}, 0, false, 2500 * time.Millisecond, 4500 * time.Millisecond},
		{"wrong token, authentication_failure_close: 403, dropped after 3s", "toK", VHost, javaCaps, 403, false, 2500 * time.Millisecond, 4500 * time.Millisecond},
		{"wrong token, authentication_failure_close: 403, Close-Ok ends it", "toK", VHost, javaCaps, 403, true, 0, time.Second},
		{"wrong vhost without capabilities: 530", "tok", "/unifiedfeed/1", nil, 530, true, 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialAMQP(t, s, pool)
			so, err := amqp.EncodeStartOk(amqp.StartOk{ClientProperties: tc.props, Mechanism: "PLAIN", Response: "\x00" + tc.token + "\x00", Locale: "en_US"})
			if err != nil {
				t.Fatal(err)
			}
			c.send(so)
			if tc.code == 0 {
				start := time.Now()
				fr, err := c.frame()
				if err != io.EOF || time.Since(start) < tc.lo || time.Since(start) > tc.hi {
					t.Fatalf("after a refused Start-Ok: frame %+v, %v after %v; want nothing, EOF after %v-%v", fr, err, time.Since(start), tc.lo, tc.hi)
				}
				return
			}
			_, method, payload := c.method()
			if method == amqp.MethodTune {
				c.send(tuneOkFrame(0))
				c.send(openFrame(tc.vhost))
				_, method, payload = c.method()
			}
			if method != amqp.MethodClose || len(payload) < 6 || uint16(payload[4])<<8|uint16(payload[5]) != tc.code {
				t.Fatalf("method %d payload %q; want Connection.Close %d", method, payload, tc.code)
			}
			if strings.Contains(string(payload), "tok") {
				t.Fatalf("reply text names the token: %q", payload)
			}
			start := time.Now()
			if tc.closeOk {
				c.send(amqp.EncodeCloseOk())
			}
			if _, err := c.frame(); err != io.EOF || time.Since(start) < tc.lo || time.Since(start) > tc.hi {
				t.Fatalf("after Connection.Close: %v after %v, want EOF after %v-%v", err, time.Since(start), tc.lo, tc.hi)
			}
		})
	}
	t.Run("channel frame before login: silence, dropped after 3s", func(t *testing.T) {
		t.Parallel()
		c := dialAMQP(t, s, pool)
		c.send([]byte{1, 0, 1, 0, 0, 0, 4, 0, 20, 0, 10, 0xCE}) // channel.open on channel 1
		start := time.Now()
		if fr, err := c.frame(); err != io.EOF || time.Since(start) < 2500*time.Millisecond {
			t.Fatalf("frame %+v, %v after %v; want EOF after 3s", fr, err, time.Since(start))
		}
	})
}
