package lab

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNginxConfig(t *testing.T) {
	conf := nginxConfig("/d", 443, true, "tok-1", 6*time.Second, 50)
	for _, want := range []string{
		"daemon off;\n",
		"master_process off;\n", // one process: no user switch, nothing left when killed
		"pid /d/nginx.pid;\n",
		"error_log /d/error.log info;\n",
		"access_log /d/access.log;\n",
		"client_body_temp_path /d/tmp/body;\n",
		"listen 443 ssl;\n",
		"listen [::]:443 ssl;\n",
		"ssl_certificate /d/chain.pem;\n",
		"ssl_certificate_key /d/server-key.pem;\n",
		"keepalive_timeout 6000ms;\n",
		"keepalive_requests 50;\n",
		"root /d/www;\n",
		"location = " + WhoamiPath + " {",
		"location = " + MarketsPath + " {",
		`if ($http_x_access_token != "tok-1") {`,
		"return 401 ",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	// Nothing outside the lab's directory: no /var/log/nginx, /run/nginx.pid.
	for _, bad := range []string{"/var/", "/run/", "/etc/", "http2"} {
		if strings.Contains(conf, bad) {
			t.Errorf("config names %q:\n%s", bad, conf)
		}
	}
	// Defaults stay nginx's own; no IPv6 listener without a v6 server address.
	conf = nginxConfig("/d", 8443, false, "tok", 0, 0)
	for _, bad := range []string{"keepalive_timeout", "keepalive_requests", "[::]", "listen 443"} {
		if strings.Contains(conf, bad) {
			t.Errorf("default config names %q:\n%s", bad, conf)
		}
	}
	if !strings.Contains(conf, "listen 8443 ssl;\n") {
		t.Errorf("config lacks the port 8443 listener:\n%s", conf)
	}
}

func TestNginxTokenOK(t *testing.T) {
	for tok, want := range map[string]bool{
		"lab-token": true, "0123abcd": true, "": false, `a"b`: false, "a$b": false, "a;b": false, "a b": false, "a}b": false, `a\b`: false,
	} {
		if got := nginxTokenOK(tok); got != want {
			t.Errorf("nginxTokenOK(%q) = %v, want %v", tok, got, want)
		}
	}
}

func TestMarketsBody(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 1 << 20} {
		if b := marketsBody(n); len(b) != n {
			t.Errorf("marketsBody(%d): %d bytes", n, len(b))
		}
	}
}

// The lab server holds a connection that never sent a request for
// nginx's client_header_timeout, not for its keep-alive idle close
// (nginx with keepalive_timeout 6s closes a request-less connection
// after 60 s: e2e TestNginxMatchesDouble). Both times are shortened here;
// not parallel, since it shortens headerTimeout.
func TestServeHeaderTimeoutIsNotIdleClose(t *testing.T) {
	old := headerTimeout
	headerTimeout = 1500 * time.Millisecond
	t.Cleanup(func() { headerTimeout = old })
	s, pool := startLoopbackServer(t, Server{Token: "tok", IdleClose: 400 * time.Millisecond, LargeSize: 1 << 16})
	closedAfter := func(t *testing.T, request bool) time.Duration {
		t.Helper()
		conn, err := tls.Dial("tcp", loopback(s.HTTPSPort), &tls.Config{RootCAs: pool, ServerName: ServerName})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		if request {
			req, _ := http.NewRequest("GET", "https://"+ServerName+WhoamiPath, nil)
			req.Header.Set("x-access-token", "tok")
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("request %v: %v, want EOF (a close)", request, err)
		}
		return time.Since(start)
	}
	if d := closedAfter(t, true); d < 300*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("after a response: closed after %v, want the idle close (400ms)", d)
	}
	if d := closedAfter(t, false); d < 1300*time.Millisecond || d > 3*time.Second {
		t.Errorf("without a request: closed after %v, want the header timeout (1.5s), not the idle close (400ms)", d)
	}
}
