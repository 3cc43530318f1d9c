package tcpcheck

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"
)

// httpsProtocol is TLS + HTTP/1.1 keep-alive requests (the UOF API).
type httpsProtocol struct{}

func (httpsProtocol) tlsConfig(cfg DialConfig) *tls.Config {
	return clientTLSConfig(cfg, []string{"http/1.1"})
}

// start sends the first request and waits for its response.
func (p httpsProtocol) start(cn *Conn, deadline time.Time) error {
	ev, err := cn.exchange(deadline)
	if err != nil {
		return err
	}
	cn.Status = ev.status
	return nil
}

func (httpsProtocol) request(cfg DialConfig) []byte { return httpGet(cfg, cfg.Path) }

// httpGet is one GET of path with the access token, if any.
func httpGet(cfg DialConfig, path string) []byte {
	req := "GET " + path + " HTTP/1.1\r\nHost: " + hostHeader(cfg.ServerName) + "\r\nUser-Agent: hopcheck\r\nAccept: */*\r\n"
	if cfg.Token != "" {
		req += "x-access-token: " + cfg.Token + "\r\n"
	}
	return []byte(req + "\r\n")
}

func hostHeader(h string) string {
	if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
		return "[" + h + "]"
	}
	return h
}

// read delivers each response (status and body size) and finally the end
// of the stream; a body that ends early is a cut.
func (httpsProtocol) read(cn *Conn) {
	br := bufio.NewReader(countingReader{cn})
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			cn.events <- event{at: cn.now(), err: err}
			return
		}
		at := cn.now()
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			cn.events <- event{at: cn.now(), err: err, body: n,
				cut: &bodyCut{status: resp.StatusCode, got: n, want: resp.ContentLength}}
			return
		}
		cn.events <- event{at: at, status: resp.StatusCode, body: n}
	}
}

func (httpsProtocol) ackOnly() bool { return false }

// transfer sends one GET of the large object.
func (httpsProtocol) transfer(cn *Conn, t transferSpec) (transfer, error) {
	return httpsTransfer{p: t.path}, cn.write(httpGet(cn.cfg, t.path), cn.now().Add(t.timeout))
}

// httpsTransfer is one large download.
type httpsTransfer struct{ p string }

func (httpsTransfer) complete(ev event, _ int64) (bool, int) { return ev.status != 0, ev.status }

// due: without response headers nothing of the body is known.
func (httpsTransfer) due(_ int64, cut *bodyCut) (int64, int64) {
	if cut != nil {
		return cut.got, cut.want
	}
	return 0, -1
}

func (t httpsTransfer) path() string { return t.p }

func (httpsTransfer) truncation(e transferEnd, cut *bodyCut) string {
	switch {
	case cut == nil:
		return "the connection ended with a FIN (end of stream) before the response headers arrived"
	case e.want < 0:
		return fmt.Sprintf("the response (HTTP %d, chunked) ended with a FIN (end of stream) after %d body bytes, before its last chunk", cut.status, e.got)
	}
	return fmt.Sprintf("the response (HTTP %d) ended with a FIN (end of stream) after %d of %d bytes (Content-Length)", cut.status, e.got, e.want)
}

func (httpsTransfer) writeEnd() error { return nil }
