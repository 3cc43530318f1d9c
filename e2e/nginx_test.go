package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// nginxKeepalive is the real nginx's keepalive_timeout and the lab
// double's idle close in TestNginxMatchesDouble.
const nginxKeepalive = 6 * time.Second

// hopcheck's HTTPS tests against a real nginx (the Debian nginx-light
// package) as the UOF API server in the server namespace, on 443, next to
// the lab double on 10443 with the same idle close: the idle test finds
// nginx's keepalive_timeout and names the server, the data test downloads
// the market descriptions with no finding, connect finds nothing, and the
// double answers the same. A connection that never sent a request is held
// by both past the keep-alive close (nginx: client_header_timeout, 60 s).
// Skips without the package, fails under HOPCHECK_LAB=required.
func TestNginxMatchesDouble(t *testing.T) {
	t.Parallel() // mostly waiting for idle closes
	labtest.RequireNginx(t)
	const doublePort = 10443
	l := buildLab(t, lab.Scenario{Name: "nginx", Routers: make([]lab.Router, 2),
		Server: lab.Server{HTTPSPort: doublePort, IdleClose: nginxKeepalive}})
	n := labtest.StartNginx(t, l, lab.NginxOptions{KeepaliveTimeout: nginxKeepalive})
	nginx := fmt.Sprintf("https://%s", l.Server4)
	double := fmt.Sprintf("https://%s:%d", l.Server4, doublePort)

	for _, tc := range []struct{ name, target string }{{"nginx", nginx}, {"double", double}} {
		t.Run("idle: "+tc.name+"'s keep-alive close, by the server", func(t *testing.T) {
			t.Parallel()
			rep, wall := tcpJSON(t, l, "idle", "--idle-max", "12s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), tc.target)
			f := oneFinding(t, rep, tcpcheck.KindIdleClose)
			if len(rep.Findings) != 1 {
				t.Errorf("findings %+v, want the idle close alone", rep.Findings)
			}
			want := nginxKeepalive.Seconds()
			if math.Abs(f.IdleTimeoutS-want) > want/10 || len(f.IdleBracketS) != 2 || f.IdleBracketS[1] < want*0.9 || f.IdleBracketS[0] > want*1.1 {
				t.Errorf("idle timeout %.2fs bracket %v, want %.0fs ±10%%", f.IdleTimeoutS, f.IdleBracketS, want)
			}
			if f.Origin != probe.OriginServer || f.Method != "server" || f.Hop != rep.Results[0].ServerHop || f.Hop != 3 {
				t.Errorf("origin %s method %q hop %d (server hop %d), want the server at hop 3; evidence %v",
					f.Origin, f.Method, f.Hop, rep.Results[0].ServerHop, f.Evidence)
			}
			t.Logf("%s: idle close %.2fs bracket %v, %s by %s at hop %d, wall %v", tc.name, f.IdleTimeoutS, f.IdleBracketS,
				f.Confidence, f.Method, f.Hop, wall.Round(100*time.Millisecond))
		})
	}
	for _, tc := range []struct{ name, target string }{{"nginx", nginx}, {"double", double}} {
		t.Run("data: "+tc.name+" serves the market descriptions, no finding", func(t *testing.T) {
			t.Parallel()
			rep, _ := tcpJSON(t, l, "data", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), tc.target)
			if len(rep.Findings) != 0 || len(rep.Results) != 1 || rep.Results[0].Error != "" {
				t.Fatalf("findings %+v; %s", rep.Findings, resultSummary(rep))
			}
			tr := rep.Results[0].Transfer
			if tr == nil || tr.Bytes < int64(n.MarketsSize) || tr.Stalled || !strings.HasPrefix(tr.Path, lab.MarketsPath) {
				t.Fatalf("transfer %+v, want all %d bytes of %s", tr, n.MarketsSize, lab.MarketsPath)
			}
			t.Logf("%s data: %d bytes in %.2fs", tc.name, tr.Bytes, tr.DurationS)
		})
		t.Run("data without the token: "+tc.name+"'s 401, not run, exit 3", func(t *testing.T) {
			t.Parallel()
			r := runIn(t, l, l.ClientNS, nil, "--format", "json", "tcp", "data", "--ca-file", l.CAFile, tc.target)
			rep := decodeJSON[tcpcheck.Report](t, r)
			if r.code != 3 || len(rep.Findings) != 0 || len(rep.Results) != 1 || !strings.Contains(rep.Results[0].Error, "HTTP 401") {
				t.Fatalf("exit %d, findings %+v; want exit 3, the test not run for HTTP 401; %s", r.code, rep.Findings, resultSummary(rep))
			}
		})
	}
	t.Run("connect: no finding", func(t *testing.T) {
		t.Parallel()
		rep, _ := tcpJSON(t, l, "connect", "--count", "10", "--rate", "10", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), nginx)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 || rep.Results[0].Counts[tcpcheck.OutcomeOK] != 10 {
			t.Fatalf("findings %+v; want 10 ok connections; %s", rep.Findings, resultSummary(rep))
		}
	})
	// How each server ends a connection, seen from a TLS 1.2 client (whose
	// alerts show their record type): after a response, a close_notify and
	// a FIN at the keep-alive close; without a request, nothing before
	// nginx's client_header_timeout (60 s), so still open well past the
	// keep-alive close.
	for _, tc := range []struct {
		name string
		port int
	}{{"nginx", 443}, {"double", doublePort}} {
		t.Run("close: "+tc.name, func(t *testing.T) {
			t.Parallel()
			addr := netip.AddrPortFrom(l.Server4, uint16(tc.port))
			t.Run("after a response", func(t *testing.T) {
				t.Parallel()
				c := tls12Conn(t, l, addr)
				fmt.Fprintf(c.tls, "GET %s HTTP/1.1\r\nHost: %s\r\nx-access-token: %s\r\n\r\n", lab.WhoamiPath, lab.ServerName, l.Server.Token)
				resp, err := c.readToEnd(3 * nginxKeepalive)
				if !errors.Is(err, io.EOF) || !strings.HasPrefix(resp, "HTTP/1.1 200") {
					t.Fatalf("%v, response %.60q: want a 200, then EOF", err, resp)
				}
				if d := c.since(); math.Abs(d.Seconds()-nginxKeepalive.Seconds()) > nginxKeepalive.Seconds()/10 {
					t.Errorf("closed after %v, want the keep-alive close (%v)", d, nginxKeepalive)
				}
				if got := c.recordTypes(); len(got) == 0 || got[len(got)-1] != 21 {
					t.Errorf("records after the handshake %v: want an alert (21, close_notify) last, before the FIN", got)
				}
			})
			t.Run("without a request", func(t *testing.T) {
				t.Parallel()
				c := tls12Conn(t, l, addr)
				wait := nginxKeepalive + 3*time.Second
				_, err := c.readToEnd(wait)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("%v after %v: want the connection still open %v after the handshake (nginx's client_header_timeout is 60s)",
						err, c.since().Round(10*time.Millisecond), wait)
				}
			})
		})
	}
}

// tls12Test is a TLS 1.2 client connection from the lab's client
// namespace that records the raw bytes it reads.
type tls12Test struct {
	tls   *tls.Conn
	raw   *recordingConn
	mark  int
	start time.Time
}

func tls12Conn(t *testing.T, l *lab.Lab, addr netip.AddrPort) *tls12Test {
	t.Helper()
	c, err := l.Dial(context.Background(), l.ClientNS, "tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ca, err := os.ReadFile(l.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	raw := &recordingConn{Conn: c}
	// TLS 1.2: alert records keep their type (TLS 1.3 hides it).
	tc := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: lab.ServerName, MaxVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1 (no HTTP/2: hopcheck speaks HTTP/1.1)", p)
	}
	return &tls12Test{tls: tc, raw: raw, mark: raw.len(), start: time.Now()}
}

// readToEnd reads until an error or d; it returns what it read.
func (c *tls12Test) readToEnd(d time.Duration) (string, error) {
	_ = c.tls.SetReadDeadline(time.Now().Add(d))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.tls.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return string(got), err
		}
	}
}

func (c *tls12Test) since() time.Duration { return time.Since(c.start) }

// recordTypes lists the TLS record types read after the handshake.
func (c *tls12Test) recordTypes() []byte {
	b := c.raw.bytes()[c.mark:]
	var out []byte
	for len(b) >= 5 {
		out = append(out, b[0])
		n := int(b[3])<<8 | int(b[4])
		if len(b) < 5+n {
			break
		}
		b = b[5+n:]
	}
	return out
}

type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

func (r *recordingConn) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	r.buf = append(r.buf, b[:n]...)
	r.mu.Unlock()
	return n, err
}

func (r *recordingConn) len() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.buf) }

func (r *recordingConn) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...)
}
