package tcpcheck

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
)

// Broker frames assembled by hand, as RabbitMQ sends them.
var (
	fixtureTune      = []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60, 0xCE}
	fixtureOpenOk    = []byte{1, 0, 0, 0, 0, 0, 5, 0, 10, 0, 41, 0, 0xCE}
	fixtureClose403  = []byte{1, 0, 0, 0, 0, 0, 25, 0, 10, 0, 50, 1, 0x93, 14, 'A', 'C', 'C', 'E', 'S', 'S', '_', 'R', 'E', 'F', 'U', 'S', 'E', 'D', 0, 10, 0, 11, 0xCE}
	fixtureHeartbeat = []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}
)

func TestDecodeAMQPFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		payload int
		n       int
		wantErr error
	}{
		{"tune", fixtureTune, 1, 12, len(fixtureTune), nil},
		{"heartbeat then tune", append(bytes.Clone(fixtureHeartbeat), fixtureTune...), 8, 0, 8, nil},
		{"partial header", fixtureTune[:5], 0, 0, 0, errAMQPNeedMore},
		{"partial payload", fixtureTune[:19], 0, 0, 0, errAMQPNeedMore},
		{"protocol header", []byte("AMQP\x00\x00\x09\x01"), 0, 0, 0, errAMQPMalformed},
		{"bad frame end", append(bytes.Clone(fixtureTune[:19]), 0), 0, 0, 0, errAMQPMalformed},
		{"huge", []byte{1, 0, 0, 0x40, 0, 0, 0}, 0, 0, 0, errAMQPMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr, n, err := decodeAMQPFrame(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || fr.typ != tc.typ || len(fr.payload) != tc.payload || n != tc.n {
				t.Fatalf("got %+v %d %v", fr, n, err)
			}
		})
	}
}

func argsOf(t *testing.T, frame []byte) []byte {
	t.Helper()
	fr, _, err := decodeAMQPFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	_, _, args, err := amqpMethod(fr.payload)
	if err != nil {
		t.Fatal(err)
	}
	return args
}

func TestDecodeTuneAndClose(t *testing.T) {
	tune, err := decodeTune(argsOf(t, fixtureTune))
	if err != nil || tune != (amqpTuneArgs{channelMax: 2047, frameMax: 131072, heartbeat: 60}) {
		t.Fatalf("tune %+v %v", tune, err)
	}
	if _, err := decodeTune(argsOf(t, fixtureTune)[:7]); !errors.Is(err, errAMQPMalformed) {
		t.Errorf("short tune: %v", err)
	}
	c, err := decodeClose(argsOf(t, fixtureClose403))
	if err != nil || c != (amqpCloseArgs{code: 403, text: "ACCESS_REFUSED", class: 10, method: 11}) {
		t.Fatalf("close %+v %v", c, err)
	}
	for _, bad := range [][]byte{nil, {1, 0x93}, {1, 0x93, 5, 'a'}, append(argsOf(t, fixtureClose403), 0)} {
		if _, err := decodeClose(bad); !errors.Is(err, errAMQPMalformed) {
			t.Errorf("close % x: %v", bad, err)
		}
	}
	if _, _, _, err := amqpMethod([]byte{0, 10}); !errors.Is(err, errAMQPMalformed) {
		t.Errorf("two-byte method: %v", err)
	}
}

func TestEncodeLoginFrames(t *testing.T) {
	if got, want := encodeTuneOk(amqpTuneArgs{channelMax: 2047, frameMax: 131072}),
		[]byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xff, 0, 2, 0, 0, 0, 0, 0xCE}; !bytes.Equal(got, want) {
		t.Errorf("tune-ok\ngot  % x\nwant % x", got, want)
	}
	if got, want := encodeOpen("/lab"), []byte{1, 0, 0, 0, 0, 0, 11, 0, 10, 0, 40, 4, '/', 'l', 'a', 'b', 0, 0, 0xCE}; !bytes.Equal(got, want) {
		t.Errorf("open\ngot  % x\nwant % x", got, want)
	}
	so := encodeStartOk("tok")
	if !bytes.Contains(so, []byte("\x05PLAIN\x00\x00\x00\x05\x00tok\x00\x05en_US\xce")) || !bytes.Contains(so, []byte("\x07productS\x00\x00\x00\x08hopcheck")) {
		t.Errorf("start-ok % x", so)
	}
	if fr, n, err := decodeAMQPFrame(so); err != nil || n != len(so) || fr.typ != 1 {
		t.Errorf("start-ok does not frame: %v", err)
	}
}

func TestLoginErrorRemovesToken(t *testing.T) {
	e := loginError(amqpCloseArgs{code: 403, text: "ACCESS_REFUSED - user 's3cret' unknown"}, "s3cret")
	if e.Reason != AMQPAuthRefused || strings.Contains(e.Error(), "s3cret") || Classify(PhaseApp, e) != OutcomeAppError {
		t.Fatalf("%+v: %s", e, Classify(PhaseApp, e))
	}
	if loginError(amqpCloseArgs{code: 530}, "").Reason != AMQPVHostNotAllowed || loginError(amqpCloseArgs{code: 320}, "").Reason != AMQPRefused {
		t.Fatal("reasons by code")
	}
}

func FuzzDecodeAMQPFrame(f *testing.F) {
	for _, s := range [][]byte{fixtureTune, fixtureOpenOk, fixtureClose403, fixtureHeartbeat, []byte("AMQP\x00\x00\x09\x01")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := decodeAMQPFrame(b)
		if err == nil && (n > len(b) || n != len(fr.payload)+8) {
			t.Fatalf("consumed %d of %d, payload %d", n, len(b), len(fr.payload))
		}
	})
}

func FuzzDecodeTune(f *testing.F) {
	f.Add(fixtureTune[11:19])
	f.Add(fixtureClose403[11:32])
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeTune(b) })
}

func FuzzDecodeClose(f *testing.F) {
	f.Add(fixtureClose403[11:32])
	f.Add(fixtureTune[11:19])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeClose(b)
		if err == nil && len(c.text) > len(b) {
			t.Fatalf("text %q longer than the arguments", c.text)
		}
	})
}

// labBroker runs the lab server (its AMQP broker double) on loopback and
// returns its AMQP and HTTPS addresses.
func labBroker(t *testing.T, token string) (amqp netip.AddrPort, pool *x509.CertPool, https netip.AddrPort) {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile, err := lab.WriteCerts(dir, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for range 3 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- lab.Serve(ctx, lab.ServeConfig{Server: lab.Server{HTTPSPort: ports[0], AMQPPort: ports[1], EchoPort: ports[2], Token: token},
			CertFile: certFile, KeyFile: keyFile, Listen4: "127.0.0.1", Listen6: "-", Ready: pw})
		pw.Close()
	}()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "ready\n" {
		cancel()
		t.Fatalf("lab server not ready: %q %v %v", buf, err, <-done)
	}
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() { cancel(); <-done })
	pem, err := os.ReadFile(filepath.Clean(caFile))
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	lo := netip.MustParseAddr("127.0.0.1")
	return netip.AddrPortFrom(lo, uint16(ports[1])), pool, netip.AddrPortFrom(lo, uint16(ports[0]))
}

func TestDialAMQPLogin(t *testing.T) {
	ap, pool, _ := labBroker(t, "s3cret")
	tests := []struct {
		name, token, vhost string
		loggedIn           bool
		reason             string
	}{
		{"login", "s3cret", lab.VHost, true, ""},
		{"no vhost: header only", "s3cret", "", false, ""},
		{"no token: header only", "", lab.VHost, false, ""},
		{"wrong token", "s3creT", lab.VHost, false, AMQPAuthRefused},
		{"wrong vhost", "s3cret", "/unifiedfeed/1", false, AMQPVHostNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultDialConfig()
			cfg.App, cfg.ServerName, cfg.RootCAs, cfg.Token, cfg.AMQPVHost = AppAMQPS, lab.ServerName, pool, tc.token, tc.vhost
			dr := Dial(t.Context(), cfg, ap)
			if tc.reason != "" {
				var le *AMQPLoginError
				if dr.Conn != nil || !errors.As(dr.Err, &le) || le.Reason != tc.reason || dr.Phase != PhaseApp || dr.Outcome != OutcomeAppError {
					t.Fatalf("dial: conn %v outcome %s phase %s err %v; want %s in the app phase", dr.Conn != nil, dr.Outcome, dr.Phase, dr.Err, tc.reason)
				}
				if tc.token != "" && strings.Contains(dr.Err.Error(), tc.token) {
					t.Fatalf("error names the token: %v", dr.Err)
				}
				return
			}
			if dr.Conn == nil {
				t.Fatalf("dial: %s %v", dr.Outcome, dr.Err)
			}
			defer dr.Conn.Abort()
			if dr.Conn.LoggedIn != tc.loggedIn {
				t.Fatalf("logged in %v, want %v", dr.Conn.LoggedIn, tc.loggedIn)
			}
			// A heartbeat after login is acknowledged and the connection lives.
			time.Sleep(50 * time.Millisecond)
			if o, _, err := dr.Conn.Reuse(); o != OutcomeOK {
				t.Fatalf("reuse: %s %v", o, err)
			}
		})
	}
}

func TestAMQPHandshakeClose(t *testing.T) {
	amqp := DialConfig{App: AppAMQPS}
	login := DialConfig{App: AppAMQPS, Token: "t", AMQPVHost: "/v"}
	server := []idleFailure{{behaviour: "close", whileIdle: true, attr: &probe.Attribution{Origin: probe.OriginServer}}}
	box := []idleFailure{{behaviour: "close", whileIdle: true, attr: &probe.Attribution{Origin: probe.OriginMiddlebox, Hop: 2}}}
	unknown := []idleFailure{{behaviour: "close", whileIdle: true}}
	tests := []struct {
		name      string
		d         DialConfig
		behaviour string
		hi        time.Duration
		fs        []idleFailure
		want      bool
	}{
		{"no login, server close at 10s", amqp, "close", 10 * time.Second, server, true},
		{"no login, unknown origin", amqp, "close", 10 * time.Second, unknown, true},
		{"token without vhost", DialConfig{App: AppAMQPS, Token: "t"}, "close", 10 * time.Second, server, true},
		{"logged in", login, "close", 10 * time.Second, server, false},
		{"https", DialConfig{App: AppHTTPS}, "close", 10 * time.Second, server, false},
		{"reset", amqp, "reset", 10 * time.Second, server, false},
		{"box closes", amqp, "close", 10 * time.Second, box, false},
		{"long after the handshake timeout", amqp, "close", 60 * time.Second, server, false},
	}
	for _, tc := range tests {
		if got := amqpHandshakeClose(tc.d, tc.behaviour, tc.hi, tc.fs); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
