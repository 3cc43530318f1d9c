package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A real nginx in the lab: the Debian nginx-light package run in a lab's
// server namespace as the UOF API server (api.betradar.com is an HTTPS
// API behind a web server), so that hopcheck's HTTPS tests are checked
// against a real server's keep-alive, TLS and close behaviour, not only
// against the lab double (lab/server.go). It serves the two paths
// hopcheck fetches: whoami (200 with the lab token, else 401) and the
// market descriptions (a static file, the data test's download).

// NginxBinary is the Debian package's server binary.
const NginxBinary = "/usr/sbin/nginx"

// RealNginxMissing returns why a real nginx cannot run here, or "".
func RealNginxMissing() string {
	if _, err := os.Stat(NginxBinary); err != nil {
		return fmt.Sprintf("nginx tests need the nginx-light package (%s: %v)", NginxBinary, err)
	}
	return ""
}

// NginxOptions configure StartNginx. Zero values mean the defaults.
type NginxOptions struct {
	Port int // TLS listener; 0 = 443 (build the lab with Server.HTTPSPort elsewhere)
	// KeepaliveTimeout is nginx's keepalive_timeout: how long an idle
	// keep-alive connection is held after a response; 0 = nginx's 75s.
	KeepaliveTimeout time.Duration
	// KeepaliveRequests is nginx's keepalive_requests: requests per
	// connection before nginx closes it; 0 = nginx's 1000.
	KeepaliveRequests int
	// MarketsSize is the size of the market descriptions file; 0 = the
	// lab server's LargeSize.
	MarketsSize int
	StartWait   time.Duration // how long nginx may take to accept connections; 0 = 20s
}

// Nginx is a server started by StartNginx. Close it (before the lab).
type Nginx struct {
	Port        int
	MarketsSize int

	ns, dir string
	d       *daemon

	mu       sync.Mutex
	closed   bool
	closeErr error
}

// nginxConfig is the whole nginx.conf: one process in the foreground
// (master_process off: no user switch, nothing left behind when it is
// killed), every path in dir, TLS with the lab's leaf and intermediate.
// nginx's own defaults (client_header_timeout 60s, lingering_close,
// reset_timedout_connection off, HTTP/1.1 only: no http2 on the listener)
// stay as a stock server has them.
func nginxConfig(dir string, port int, v6 bool, token string, keepaliveTimeout time.Duration, keepaliveRequests int) string {
	p := func(name string) string { return filepath.Join(dir, name) }
	listen := fmt.Sprintf("        listen %d ssl;\n", port)
	if v6 {
		listen += fmt.Sprintf("        listen [::]:%d ssl;\n", port)
	}
	var keepalive string
	if keepaliveTimeout > 0 {
		// nginx takes milliseconds as "ms".
		keepalive += fmt.Sprintf("        keepalive_timeout %dms;\n", keepaliveTimeout.Milliseconds())
	}
	if keepaliveRequests > 0 {
		keepalive += fmt.Sprintf("        keepalive_requests %d;\n", keepaliveRequests)
	}
	unauthorized := `'<?xml version="1.0" encoding="UTF-8"?>\n<error code="401" message="invalid or missing x-access-token"/>\n'`
	return `daemon off;
master_process off;
pid ` + p("nginx.pid") + `;
error_log ` + p("error.log") + ` info;
events {
    worker_connections 1024;
}
http {
    access_log ` + p("access.log") + `;
    client_body_temp_path ` + p("tmp/body") + `;
    proxy_temp_path ` + p("tmp/proxy") + `;
    fastcgi_temp_path ` + p("tmp/fastcgi") + `;
    uwsgi_temp_path ` + p("tmp/uwsgi") + `;
    scgi_temp_path ` + p("tmp/scgi") + `;
    types {
        application/xml xml;
    }
    default_type application/octet-stream;
    sendfile on;
    server {
` + listen + `        server_name _;
        ssl_certificate ` + p("chain.pem") + `;
        ssl_certificate_key ` + p("server-key.pem") + `;
        ssl_protocols TLSv1.2 TLSv1.3;
` + keepalive + `        root ` + p("www") + `;
        location = ` + WhoamiPath + ` {
            default_type application/xml;
            if ($http_x_access_token != "` + token + `") {
                return 401 ` + unauthorized + `;
            }
            return 200 '<?xml version="1.0" encoding="UTF-8"?>\n<bookmaker_details response_code="OK" expire_at="2099-01-01T00:00:00Z" bookmaker_id="1" virtual_host="` + VHost + `"/>\n';
        }
        location = ` + MarketsPath + ` {
            if ($http_x_access_token != "` + token + `") {
                return 401 ` + unauthorized + `;
            }
        }
        location / {
            return 404;
        }
    }
}
`
}

// nginxTokenOK: the token goes into the config between double quotes and
// in a regex-free comparison; characters nginx would interpret are refused.
func nginxTokenOK(token string) bool {
	return token != "" && !strings.ContainsAny(token, "\"'\\$;{} \t\r\n")
}

// StartNginx starts nginx in l's server namespace and waits until it
// accepts connections on its port. The lab server must not listen on that
// port (build the lab with Server.HTTPSPort set elsewhere). Its files
// (config, certificates, document root, logs, temp paths) live in a
// directory of l.Dir. Close stops it.
func (l *Lab) StartNginx(ctx context.Context, opt NginxOptions) (*Nginx, error) {
	if why := RealNginxMissing(); why != "" {
		return nil, errors.New(why)
	}
	if opt.Port == 0 {
		opt.Port = DefaultHTTPSPort
	}
	if opt.MarketsSize == 0 {
		opt.MarketsSize = l.Server.WithDefaults().LargeSize
	}
	if opt.StartWait == 0 {
		opt.StartWait = 20 * time.Second
	}
	if l.Server.HTTPSPort == opt.Port {
		return nil, fmt.Errorf("nginx: the lab server listens on %d itself: build the lab with Server.HTTPSPort set elsewhere", opt.Port)
	}
	token := l.Server.WithDefaults().Token
	if !nginxTokenOK(token) {
		return nil, fmt.Errorf("nginx: the lab token %q cannot go into nginx.conf as is", token)
	}
	n := &Nginx{Port: opt.Port, MarketsSize: opt.MarketsSize, ns: l.ServerNS, dir: filepath.Join(l.Dir, "nginx")}
	www := filepath.Join(n.dir, "www", filepath.Dir(MarketsPath))
	for _, d := range []string{www, filepath.Join(n.dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("nginx: %w", err)
		}
	}
	certDir := filepath.Dir(l.CAFile)
	// nginx sends the whole ssl_certificate file: the leaf and the
	// intermediate, as lab-serve does (not the CA).
	chain, err := os.ReadFile(filepath.Join(certDir, "server.pem"))
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(certDir, "server-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	files := map[string][]byte{
		"chain.pem":      chain,
		"server-key.pem": key,
		"nginx.conf": []byte(nginxConfig(n.dir, opt.Port, l.Server6.IsValid(), token,
			opt.KeepaliveTimeout, opt.KeepaliveRequests)),
		filepath.Join("www", MarketsPath): marketsBody(opt.MarketsSize),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(n.dir, name), body, 0o600); err != nil {
			return nil, fmt.Errorf("nginx: %w", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	// -e: the error log before the config is read (the package's default
	// is stderr; never /var/log/nginx). ip netns exec execs nginx in
	// place: SIGKILL when this process dies reaches nginx itself.
	d, err := startDaemon("nginx", l.ServerNS, filepath.Join(n.dir, "stderr.log"), nil, syscall.SIGKILL,
		NginxBinary, "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"), "-e", filepath.Join(n.dir, "error.log"))
	if err != nil {
		return nil, err
	}
	n.d = d
	addr := netip.AddrPortFrom(l.Server4, uint16(opt.Port)).String()
	if err := d.waitAccepting(ctx, l, l.ServerNS, addr, opt.StartWait, 100*time.Millisecond, n.Log); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// marketsBody is n bytes of XML-ish filler.
func marketsBody(n int) []byte {
	const line = "<market id=\"1\" name=\"hopcheck lab filler\"/>\n"
	b := make([]byte, 0, n)
	for len(b) < n {
		b = append(b, line...)
	}
	return b[:n]
}

// Log returns the end of nginx's error log and stderr.
func (n *Nginx) Log() string {
	return tail(filepath.Join(n.dir, "error.log"), 3000) + "\n" + tail(filepath.Join(n.dir, "stderr.log"), 1000)
}

// AccessLog returns the end of nginx's access log.
func (n *Nginx) AccessLog() string { return tail(filepath.Join(n.dir, "access.log"), 3000) }

// Close stops nginx (SIGKILL: nothing of it is worth a graceful stop) and
// waits for it. Idempotent.
func (n *Nginx) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return n.closeErr
	}
	n.closed = true
	if n.d != nil {
		// Anything of it left in the namespace (none with master_process off).
		n.closeErr = n.d.stop(syscall.SIGKILL, 0, "nginx")
	}
	return n.closeErr
}
