// Package tcpcheck measures how TCP connections toward a service fail —
// refused, reset or timed out, during setup, data transfer or after
// sitting idle — and attributes every reset to its origin (the server or
// a box at hop k) with the flow observer of package probe.
package tcpcheck

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hopcheck/hopcheck/trace"
)

// App is the application layer spoken over a connection.
type App string

// Application layers.
const (
	AppHTTPS App = "https" // TLS + HTTP/1.1 keep-alive requests
	AppAMQPS App = "amqps" // TLS + AMQP 0-9-1 protocol header
	AppTCP   App = "tcp"   // TCP only (echo for data tests)
)

// Target is a parsed tcpcheck target.
type Target struct {
	Spec trace.Spec
	App  App
}

// Name is the target as shown in reports (credentials removed).
func (t Target) Name() string { return t.Spec.Raw }

// ParseTarget parses https://host[:port], amqps://host[:port],
// tcp://host:port or host:port.
func ParseTarget(s string) (Target, error) {
	spec, err := trace.ParseTarget(s, 0)
	if err != nil {
		return Target{}, err
	}
	t := Target{Spec: spec}
	switch spec.Scheme {
	case "https":
		t.App = AppHTTPS
	case "amqps":
		t.App = AppAMQPS
	case "tcp", "":
		t.App = AppTCP
	default:
		return Target{}, fmt.Errorf("scheme %q in %q is not supported by tcp tests (want https, amqps or tcp)", spec.Scheme, spec.Raw)
	}
	if spec.Port == 0 {
		return Target{}, fmt.Errorf("missing port in %q (host:port, tcp://host:port, https://host or amqps://host)", spec.Raw)
	}
	return t, nil
}

// MaxBetradarConns is Sportradar's limit: more connections from one client
// block new ones.
const MaxBetradarConns = 40

// IsBetradar reports whether host is betradar.com or below it.
func IsBetradar(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return h == "betradar.com" || strings.HasSuffix(h, ".betradar.com")
}

// ServerName is the TLS SNI for a target: the host name, or the literal
// address.
func (t Target) ServerName() string { return t.Spec.Host }

// Endpoint is one address of a target.
func (t Target) Endpoint(a netip.Addr) netip.AddrPort {
	return netip.AddrPortFrom(a, uint16(t.Spec.Port))
}
