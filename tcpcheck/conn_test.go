package tcpcheck

import (
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Only loopback: unit tests never touch another network.

func loopbackTLS(t *testing.T, idle time.Duration, h http.HandlerFunc) (netip.AddrPort, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.IdleTimeout = idle
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "https://"))
	return ap, pool
}

func TestDialHTTPSReuseAndIdleClose(t *testing.T) {
	var gotToken string
	ap, pool := loopbackTLS(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
		gotToken = r.Header.Get("x-access-token")
		io.WriteString(w, "<bookmaker_details/>")
	})
	cfg := DefaultDialConfig()
	cfg.App, cfg.ServerName, cfg.RootCAs, cfg.Token = AppHTTPS, "example.com", pool, "secret-token"
	dr := Dial(t.Context(), cfg, ap)
	if dr.Outcome != OutcomeOK || dr.Conn == nil {
		t.Fatalf("dial: %s %v", dr.Outcome, dr.Err)
	}
	defer dr.Conn.Close()
	if dr.Conn.Status != 200 || gotToken != "secret-token" || dr.LocalPort == 0 || dr.LocalPort != dr.Conn.Local.Port() {
		t.Errorf("status %d token %q port %d/%v", dr.Conn.Status, gotToken, dr.LocalPort, dr.Conn.Local)
	}
	if dr.Phases.TCP <= 0 || dr.Phases.TLS <= 0 || dr.Phases.FirstByte <= 0 {
		t.Errorf("phases %+v", dr.Phases)
	}
	if o, _, err := dr.Conn.Reuse(); o != OutcomeOK {
		t.Fatalf("reuse: %s %v", o, err)
	}
	// The server closes the idle connection after 300 ms: the watcher
	// sees EOF when it happens.
	fresh := dr.Conn.Fresh
	select {
	case ev := <-dr.Conn.Events():
		age := ev.at.Sub(fresh)
		if Classify(PhaseRequest, ev.err) != OutcomeClosed || endBehaviour(ev.err) != "close" || age < 250*time.Millisecond || age > 2*time.Second {
			t.Errorf("idle end: %v after %v", ev.err, age)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no close while idle")
	}
}

func TestDialRefusedAndTLSError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	cfg := DefaultDialConfig()
	cfg.App = AppTCP
	if dr := Dial(t.Context(), cfg, ap); dr.Outcome != OutcomeRefused || dr.Phase != PhaseTCP || dr.LocalPort == 0 {
		t.Errorf("closed port: %s %s %v port %d", dr.Outcome, dr.Phase, dr.Err, dr.LocalPort)
	}
	tlsAP, _ := loopbackTLS(t, time.Minute, func(w http.ResponseWriter, r *http.Request) {})
	cfg.App, cfg.ServerName = AppHTTPS, "example.com"
	cfg.RootCAs = x509.NewCertPool() // trusts nothing
	if dr := Dial(t.Context(), cfg, tlsAP); dr.Outcome != OutcomeTLSError || dr.Phase != PhaseTLS {
		t.Errorf("untrusted cert: %s %s %v", dr.Outcome, dr.Phase, dr.Err)
	}
	cfg.RootCAs, cfg.Insecure = nil, true
	if dr := Dial(t.Context(), cfg, tlsAP); dr.Outcome != OutcomeOK {
		t.Errorf("insecure: %s %v", dr.Outcome, dr.Err)
	} else {
		dr.Conn.Close()
	}
}

// serveLoopback listens on a loopback port until the test ends and hands
// every connection to handle in its own goroutine.
func serveLoopback(t *testing.T, handle func(c net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestDialTCPEchoAndReset(t *testing.T) {
	ap := serveLoopback(t, func(c net.Conn) {
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(buf[:n])
		time.Sleep(100 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	cfg := DefaultDialConfig()
	cfg.App = AppTCP
	dr := Dial(t.Context(), cfg, ap)
	if dr.Conn == nil {
		t.Fatalf("dial: %v", dr.Err)
	}
	defer dr.Conn.Close()
	if o, _, err := dr.Conn.Reuse(); o != OutcomeOK {
		t.Fatalf("echo: %s %v", o, err)
	}
	select {
	case ev := <-dr.Conn.Events():
		if endBehaviour(ev.err) != "reset" || Classify(PhaseRequest, ev.err) != OutcomeReset {
			t.Errorf("end %v", ev.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no reset while idle")
	}
}

func TestCheckConnectionStart(t *testing.T) {
	start := []byte{1, 0, 0, 0, 0, 1, 0, 0, 10, 0, 10, 0, 9}
	for _, c := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"connection.start", start, true},
		{"protocol header back", []byte("AMQP\x00\x00\x09\x01"), false},
		{"short", start[:5], false},
		{"heartbeat", []byte{8, 0, 0, 0, 0, 0, 0, 0xce, 0, 0, 0}, false},
		{"channel 1", []byte{1, 0, 1, 0, 0, 1, 0, 0, 10, 0, 10}, false},
	} {
		err := CheckConnectionStart(c.b)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		var ae *appError
		if err != nil && !errors.As(err, &ae) {
			t.Errorf("%s: not an app error: %v", c.name, err)
		}
	}
}

func FuzzCheckConnectionStart(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 1, 0, 0, 10, 0, 10})
	f.Add([]byte("AMQP\x00\x00\x09\x01"))
	f.Fuzz(func(t *testing.T, b []byte) { _ = CheckConnectionStart(b) })
}
