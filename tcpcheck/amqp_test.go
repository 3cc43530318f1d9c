package tcpcheck

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/internal/amqp"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
)

// clientPropertiesFixture is hopcheck's Start-Ok client-properties table
// as it goes on the wire: the RabbitMQ Java client's product, version,
// platform and six capabilities, and hopcheck's name.
const clientPropertiesFixture = "\x00\x00\x01\x41" + // 321 bytes
	"\x07productS\x00\x00\x00\x08RabbitMQ" +
	"\x07versionS\x00\x00\x00\x065.21.0" +
	"\x08platformS\x00\x00\x00\x04Java" +
	"\x0binformationS\x00\x00\x00\x3bhopcheck connectivity check: logs in and idles, no channels" +
	"\x0fconnection_nameS\x00\x00\x00\x08hopcheck" +
	"\x0ccapabilitiesF\x00\x00\x00\x8c" + // 140 bytes
	"\x12publisher_confirmst\x01" +
	"\x1aexchange_exchange_bindingst\x01" +
	"\x0abasic.nackt\x01" +
	"\x16consumer_cancel_notifyt\x01" +
	"\x12connection.blockedt\x01" +
	"\x1cauthentication_failure_closet\x01"

// hopcheck's Start-Ok: the Java client's client-properties, PLAIN with the
// token as user name and an empty password.
func TestStartOkFrame(t *testing.T) {
	so, err := amqp.EncodeStartOk(startOk("tok"))
	if err != nil {
		t.Fatal(err)
	}
	want := "\x01\x00\x00\x00\x00\x01\x5e" + // method frame, channel 0, 350 bytes
		"\x00\x0a\x00\x0b" + clientPropertiesFixture + "\x05PLAIN\x00\x00\x00\x05\x00tok\x00\x05en_US\xce"
	if string(so) != want {
		t.Fatalf("start-ok\ngot  %q\nwant %q", so, want)
	}
	fr, n, err := amqp.DecodeFrame(so)
	if err != nil || n != len(so) || fr.Type != amqp.FrameMethod {
		t.Fatalf("start-ok does not frame: %v", err)
	}
	got, err := amqp.DecodeStartOk(fr.Payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range JavaClientCapabilities {
		if !amqp.Capability(got.ClientProperties, c) {
			t.Errorf("capability %s not announced", c)
		}
	}
	if len(JavaClientCapabilities) != 6 || amqp.Capability(got.ClientProperties, "direct_reply_to") {
		t.Errorf("capabilities %v: want the Java client's six, none of the broker's", JavaClientCapabilities)
	}
}

func TestLoginErrorRemovesToken(t *testing.T) {
	e := loginError(amqp.Close{Code: 403, Text: "ACCESS_REFUSED - user 's3cret' unknown"}, "s3cret")
	if e.Reason != AMQPAuthRefused || strings.Contains(e.Error(), "s3cret") || Classify(PhaseApp, e) != OutcomeLoginRefused {
		t.Fatalf("%+v: %s", e, Classify(PhaseApp, e))
	}
	if loginError(amqp.Close{Code: 530}, "").Reason != AMQPVHostNotAllowed || loginError(amqp.Close{Code: 320}, "").Reason != AMQPRefused {
		t.Fatal("reasons by code")
	}
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
				if dr.Conn != nil || !errors.As(dr.Err, &le) || le.Reason != tc.reason || dr.Phase != PhaseApp || dr.Outcome != OutcomeLoginRefused {
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

func TestCheckLoginRefused(t *testing.T) {
	r403 := &AMQPReply{Reason: AMQPAuthRefused, Code: 403, Text: "ACCESS_REFUSED - Login was refused"}
	r530 := &AMQPReply{Reason: AMQPVHostNotAllowed, Code: 530, Text: "NOT_ALLOWED - vhost /x not found"}
	refused := func(r *AMQPReply) ConnRecord {
		return ConnRecord{Outcome: OutcomeLoginRefused, Phase: PhaseApp, AMQPReply: r}
	}
	tests := []struct {
		name      string
		in        Result
		want      *AMQPReply
		wantError string // substring
	}{
		{"all refused 403", Result{Error: "connections cannot be opened: see connections[]", Connections: []ConnRecord{refused(r403)}}, r403, "403 ACCESS_REFUSED - Login was refused: the access token"},
		{"all refused 530", Result{Connections: []ConnRecord{refused(r530), refused(r530)}}, r530, "530 NOT_ALLOWED - vhost /x not found: the virtual host"},
		{"one logged in", Result{Connections: []ConnRecord{refused(r403), {Outcome: OutcomeOK}}}, nil, ""},
		{"a timeout", Result{Connections: []ConnRecord{refused(r403), {Outcome: OutcomeTimeout}}}, nil, ""},
		{"no connections", Result{Error: "interrupted"}, nil, "interrupted"},
		{"interrupted keeps its error", Result{Error: "interrupted", Connections: []ConnRecord{refused(r403)}}, r403, "interrupted"},
	}
	for _, tc := range tests {
		got := CheckLoginRefused(tc.in)
		if got.LoginRefused != tc.want || !strings.Contains(got.Error, tc.wantError) {
			t.Errorf("%s: login_refused %+v error %q; want %+v, error with %q", tc.name, got.LoginRefused, got.Error, tc.want, tc.wantError)
		}
	}
}

// Against the lab broker, a refused login ends each test at its first
// connection: one refused login per test, whatever its width or count.
func TestLoginRefusedStopsTheTest(t *testing.T) {
	ap, pool, _ := labBroker(t, "s3cret")
	opt := Options{Dial: DefaultDialConfig(), Count: 10, Rate: 50, Width: 6, IdleMax: 3 * time.Second}
	opt.Dial.RootCAs, opt.Dial.Token, opt.Dial.AMQPVHost = pool, "wrong", lab.VHost
	target, err := ParseTarget("amqps://" + lab.ServerName + ":" + strconv.Itoa(int(ap.Port())))
	if err != nil {
		t.Fatal(err)
	}
	for _, test := range []string{"connect", "concurrency", "idle"} {
		rep := Run(t.Context(), test, opt, []Job{{Target: target, Addr: ap.Addr()}})
		res := rep.Results[0]
		if len(res.Connections) != 1 || res.LoginRefused == nil || res.LoginRefused.Code != 403 || res.Connections[0].AMQPReply == nil ||
			!strings.Contains(res.Error, "403") || len(rep.Findings) != 0 {
			t.Errorf("%s: %d connections, login_refused %+v, error %q, findings %v; want one refused login, no finding", test, len(res.Connections), res.LoginRefused, res.Error, rep.Findings)
		}
	}
}
