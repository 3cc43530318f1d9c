package tcpcheck

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// WhoamiPath is the UOF API's harmless authenticated request; its answer
// names the AMQP virtual host of the token's bookmaker.
const WhoamiPath = "/v1/users/whoami.xml"

// ParseWhoamiVHost returns the virtual_host attribute of a whoami.xml
// answer (<bookmaker_details ... virtual_host="/unifiedfeed/123"/>).
func ParseWhoamiVHost(b []byte) (string, error) {
	var d struct {
		XMLName     xml.Name
		VirtualHost string `xml:"virtual_host,attr"`
	}
	if err := xml.Unmarshal(b, &d); err != nil {
		return "", fmt.Errorf("whoami.xml: %w", err)
	}
	if d.XMLName.Local != "bookmaker_details" {
		return "", fmt.Errorf("whoami.xml: root element %q, want bookmaker_details", d.XMLName.Local)
	}
	if err := CheckAMQPVHost(d.VirtualHost); err != nil {
		return "", fmt.Errorf("whoami.xml virtual_host: %w", err)
	}
	return d.VirtualHost, nil
}

// CheckAMQPVHost validates a virtual host name: an AMQP short string
// (1..255 bytes) without control characters.
func CheckAMQPVHost(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	if len(v) > 255 {
		return fmt.Errorf("%d bytes, at most 255", len(v))
	}
	if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return errors.New("contains control characters")
	}
	return nil
}

// FetchAMQPVHost asks the API at job's address for whoami.xml with the
// token and returns its virtual_host, as a UOF SDK learns its vhost. The
// token goes only into the request header.
func FetchAMQPVHost(ctx context.Context, d DialConfig, job Job) (string, error) {
	dst := job.Target.Endpoint(job.Addr)
	d.ServerName = job.Target.ServerName()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "tcp", dst.String())
		},
		TLSClientConfig:   clientTLSConfig(d, nil),
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := "https://" + hostHeader(job.Target.ServerName()) + WhoamiPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("whoami request: %w", err)
	}
	req.Header.Set("x-access-token", d.Token)
	req.Header.Set("User-Agent", "hopcheck")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s via %s: %w", WhoamiPath, dst, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("GET %s via %s: %w", WhoamiPath, dst, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s via %s: HTTP %s", WhoamiPath, dst, resp.Status)
	}
	return ParseWhoamiVHost(body)
}
