package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Spec is a parsed trace target: what the user typed, reduced to a host, an
// optional literal address and a port.
type Spec struct {
	// Raw is the input as typed, except that URL credentials
	// (user:password@) are removed so that they never reach a report.
	Raw string
	// Host is the host name or the literal address (without brackets).
	Host string
	// Addr is set when Host is a literal IP address (v4-mapped addresses
	// are unmapped).
	Addr netip.Addr
	// Port is the destination port: from the input, from the URL scheme's
	// default or the caller's default; 0 when none applies.
	Port int
	// PortFromInput is true when the port was written in the input.
	PortFromInput bool
	// Scheme is the lower-case URL scheme, "" for a plain host[:port].
	Scheme string
}

// ErrInvalidTarget is matched (errors.Is) by every error of ParseTarget.
var ErrInvalidTarget = errors.New("invalid target")

// TargetError is a ParseTarget failure: a one-line message naming the value.
type TargetError struct {
	Input string // the input, credentials removed
	Msg   string // the full message
}

func (e *TargetError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrInvalidTarget) true.
func (e *TargetError) Is(target error) bool { return target == ErrInvalidTarget }

// schemePorts maps the URL schemes hopcheck understands to their default
// port; tcp has none and needs an explicit port (or the caller's default).
var schemePorts = map[string]int{
	"https": 443,
	"http":  80,
	"amqps": 5671,
	"amqp":  5672,
	"tcp":   0,
}

// ParseTarget parses a trace target: a host name, an IPv4 or IPv6 address
// (bare or bracketed), host:port, or a URL with scheme https, http, amqps,
// amqp or tcp. defaultPort (0 for none) applies when neither the input nor
// its scheme gives a port. Host names are validated, not resolved.
func ParseTarget(s string, defaultPort int) (Spec, error) {
	raw := s
	fail := func(format string, a ...any) (Spec, error) {
		return Spec{}, &TargetError{Input: raw, Msg: fmt.Sprintf(format, a...)}
	}
	if defaultPort < 0 || defaultPort > 65535 {
		return fail("default port %d is out of range 0-65535", defaultPort)
	}
	if s == "" {
		return fail("empty target")
	}

	spec := Spec{Port: defaultPort}
	hostport := s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme := strings.ToLower(s[:i])
		rest := s[i+3:]
		// Drop path, query and fragment: a pasted URL is fine.
		authority := rest
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			authority = rest[:j]
		}
		// Drop credentials (amqps://user:secret@host) from everything we
		// keep or print.
		if j := strings.LastIndexByte(authority, '@'); j >= 0 {
			raw = s[:i+3] + rest[j+1:]
			authority = authority[j+1:]
		}
		rest = authority
		spec.Raw = raw
		if hasSpace(raw) {
			return fail("target %q contains whitespace", raw)
		}
		port, known := schemePorts[scheme]
		if !known {
			if scheme == "" {
				return fail("missing URL scheme in %q", raw)
			}
			return fail("unknown scheme %q in %q (want https, http, amqps, amqp or tcp)", scheme, raw)
		}
		spec.Scheme = scheme
		if port != 0 {
			spec.Port = port
		}
		hostport = rest
		if hostport == "" {
			return fail("empty host in %q", raw)
		}
	} else {
		// user:secret@host without a scheme is rejected below; keep the
		// secret out of the message.
		if j := strings.LastIndexByte(s, '@'); j >= 0 {
			raw = "<credentials>" + s[j:]
		}
		spec.Raw = raw
		if hasSpace(raw) {
			return fail("target %q contains whitespace", raw)
		}
		if strings.ContainsAny(s, "/?#@") {
			return fail("target %q is neither a host, host:port nor a URL (scheme://host[:port])", raw)
		}
	}

	host, portStr, hasPort, err := splitHostPort(hostport)
	if err != nil {
		return fail("%s in %q", err, raw)
	}
	if hasPort {
		if portStr == "" {
			return fail("empty port in %q", raw)
		}
		for _, c := range portStr {
			if c < '0' || c > '9' {
				return fail("port %q in %q is not a number", portStr, raw)
			}
		}
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return fail("port %s in %q is out of range 1-65535", portStr, raw)
		}
		spec.Port = p
		spec.PortFromInput = true
	}
	if spec.Scheme == "tcp" && spec.Port == 0 {
		return fail("missing port in %q (tcp://host:port)", raw)
	}
	if host == "" {
		return fail("empty host in %q", raw)
	}

	bracketed := strings.HasPrefix(host, "[")
	if bracketed {
		host = host[1 : len(host)-1]
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if bracketed && !addr.Is6() {
			return fail("brackets in %q are for IPv6 addresses only", raw)
		}
		spec.Addr = addr.Unmap()
		spec.Host = host
		return spec, nil
	}
	if bracketed || strings.Contains(host, ":") {
		return fail("invalid IPv6 address %q in %q", host, raw)
	}
	if err := validateHostname(host); err != nil {
		return fail("host %q in %q: %s", host, raw, err)
	}
	spec.Host = host
	return spec, nil
}

func hasSpace(s string) bool {
	return strings.IndexFunc(s, unicode.IsSpace) >= 0
}

// splitHostPort separates host and port. Unlike net.SplitHostPort it accepts
// a bare IPv6 address (several colons, no brackets) as a host without port
// and keeps the brackets so that the caller can tell they were there.
func splitHostPort(s string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, errors.New("missing ']'")
		}
		host, rest := s[:end+1], s[end+1:]
		switch {
		case rest == "":
			return host, "", false, nil
		case rest[0] == ':':
			return host, rest[1:], true, nil
		default:
			return "", "", false, fmt.Errorf("unexpected %q after ']'", rest)
		}
	}
	if strings.ContainsAny(s, "[]") {
		return "", "", false, errors.New("misplaced bracket")
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", false, nil
	case 1:
		i := strings.IndexByte(s, ':')
		return s[:i], s[i+1:], true, nil
	default:
		// A bare IPv6 address; a port needs brackets.
		return s, "", false, nil
	}
}

// validateHostname checks RFC 1123 syntax (letters, digits, hyphens; labels
// of 1-63 characters; 253 in all). Underscores are tolerated because they
// occur in real names. A name whose last label is numeric is rejected: it is
// a mistyped IPv4 address, not a name.
func validateHostname(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return fmt.Errorf("name is %d characters long, more than 253", len(name))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q is longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, c := range l {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			case c > unicode.MaxASCII:
				return errors.New("non-ASCII name: use its xn-- (punycode) form")
			default:
				return fmt.Errorf("invalid character %q", c)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return errors.New("not a valid IPv4 address nor a host name")
	}
	return nil
}

// Resolver looks up the addresses of a host name; *net.Resolver satisfies
// it. network is "ip", "ip4" or "ip6".
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ResolveAll returns every address of spec's host for family (0 both, 4, 6):
// deduplicated, v4-mapped addresses unmapped, IPv4 first then IPv6, each
// sorted. A literal address is returned as is when it matches the family.
func ResolveAll(ctx context.Context, r Resolver, spec Spec, family int) ([]netip.Addr, error) {
	network, familyName := "", ""
	switch family {
	case 0:
		network, familyName = "ip", "IP"
	case 4:
		network, familyName = "ip4", "IPv4"
	case 6:
		network, familyName = "ip6", "IPv6"
	default:
		return nil, fmt.Errorf("resolve %q: address family %d is not 0, 4 or 6", spec.Host, family)
	}
	if spec.Addr.IsValid() {
		a := spec.Addr.Unmap()
		if !familyMatches(a, family) {
			return nil, fmt.Errorf("%s is not an %s address", a, familyName)
		}
		return []netip.Addr{a}, nil
	}
	if spec.Host == "" {
		return nil, errors.New("resolve: empty host")
	}
	if r == nil {
		return nil, fmt.Errorf("resolve %q: no resolver", spec.Host)
	}
	found, err := r.LookupNetIP(ctx, network, spec.Host)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", spec.Host, err)
	}
	seen := make(map[netip.Addr]bool, len(found))
	var addrs []netip.Addr
	for _, a := range found {
		a = a.Unmap()
		if !a.IsValid() || seen[a] || !familyMatches(a, family) {
			continue
		}
		seen[a] = true
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		switch family {
		case 4:
			return nil, fmt.Errorf("resolve %q: no IPv4 address (A record)", spec.Host)
		case 6:
			return nil, fmt.Errorf("resolve %q: no IPv6 address (AAAA record)", spec.Host)
		}
		return nil, fmt.Errorf("resolve %q: no address", spec.Host)
	}
	// Addr.Compare orders IPv4 before IPv6, then by value.
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs, nil
}

func familyMatches(a netip.Addr, family int) bool {
	switch family {
	case 4:
		return a.Is4()
	case 6:
		return a.Is6()
	}
	return true
}
