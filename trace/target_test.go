package trace

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in          string
		defaultPort int
		want        Spec
	}{
		{"example.com", 443, Spec{Raw: "example.com", Host: "example.com", Port: 443}},
		{"example.com", 0, Spec{Raw: "example.com", Host: "example.com"}},
		{"Example.COM.", 443, Spec{Raw: "Example.COM.", Host: "Example.COM.", Port: 443}},
		{"localhost", 80, Spec{Raw: "localhost", Host: "localhost", Port: 80}},
		{"_srv.example.com", 1, Spec{Raw: "_srv.example.com", Host: "_srv.example.com", Port: 1}},
		{"example.com:8443", 443, Spec{Raw: "example.com:8443", Host: "example.com", Port: 8443, PortFromInput: true}},
		{"198.18.0.1", 443, Spec{Raw: "198.18.0.1", Host: "198.18.0.1", Addr: netip.MustParseAddr("198.18.0.1"), Port: 443}},
		{"198.18.0.1:65535", 443, Spec{Raw: "198.18.0.1:65535", Host: "198.18.0.1", Addr: netip.MustParseAddr("198.18.0.1"), Port: 65535, PortFromInput: true}},
		{"2001:db8::1", 443, Spec{Raw: "2001:db8::1", Host: "2001:db8::1", Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}},
		{"[2001:db8::1]", 443, Spec{Raw: "[2001:db8::1]", Host: "2001:db8::1", Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}},
		{"[2001:db8::1]:8443", 443, Spec{Raw: "[2001:db8::1]:8443", Host: "2001:db8::1", Addr: netip.MustParseAddr("2001:db8::1"), Port: 8443, PortFromInput: true}},
		{"::ffff:198.18.0.1", 0, Spec{Raw: "::ffff:198.18.0.1", Host: "::ffff:198.18.0.1", Addr: netip.MustParseAddr("198.18.0.1")}},
		{"https://example.com", 0, Spec{Raw: "https://example.com", Host: "example.com", Port: 443, Scheme: "https"}},
		{"HTTPS://example.com/path?q=1#f", 80, Spec{Raw: "HTTPS://example.com/path?q=1#f", Host: "example.com", Port: 443, Scheme: "https"}},
		{"https://example.com:8443/", 0, Spec{Raw: "https://example.com:8443/", Host: "example.com", Port: 8443, PortFromInput: true, Scheme: "https"}},
		{"http://example.com", 443, Spec{Raw: "http://example.com", Host: "example.com", Port: 80, Scheme: "http"}},
		{"amqps://broker.example.com", 0, Spec{Raw: "amqps://broker.example.com", Host: "broker.example.com", Port: 5671, Scheme: "amqps"}},
		{"amqp://broker.example.com:5673/vhost", 0, Spec{Raw: "amqp://broker.example.com:5673/vhost", Host: "broker.example.com", Port: 5673, PortFromInput: true, Scheme: "amqp"}},
		{"amqps://user:s3cret@broker.example.com/vh", 0, Spec{Raw: "amqps://broker.example.com/vh", Host: "broker.example.com", Port: 5671, Scheme: "amqps"}},
		{"tcp://198.18.1.1:25", 0, Spec{Raw: "tcp://198.18.1.1:25", Host: "198.18.1.1", Addr: netip.MustParseAddr("198.18.1.1"), Port: 25, PortFromInput: true, Scheme: "tcp"}},
		{"tcp://example.com", 443, Spec{Raw: "tcp://example.com", Host: "example.com", Port: 443, Scheme: "tcp"}},
		{"https://[2001:db8::5]:443", 0, Spec{Raw: "https://[2001:db8::5]:443", Host: "2001:db8::5", Addr: netip.MustParseAddr("2001:db8::5"), Port: 443, PortFromInput: true, Scheme: "https"}},
		{"https://[2001:db8::5]", 0, Spec{Raw: "https://[2001:db8::5]", Host: "2001:db8::5", Addr: netip.MustParseAddr("2001:db8::5"), Port: 443, Scheme: "https"}},
		{"example.com:0443", 0, Spec{Raw: "example.com:0443", Host: "example.com", Port: 443, PortFromInput: true}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTarget(tt.in, tt.defaultPort)
			if err != nil {
				t.Fatalf("ParseTarget(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseTarget(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseTargetErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		in   string
		want string // the whole message
	}{
		{"", `empty target`},
		{"x:70000", `port 70000 in "x:70000" is out of range 1-65535`},
		{"x:0", `port 0 in "x:0" is out of range 1-65535`},
		{"x:99999999999999999999", `port 99999999999999999999 in "x:99999999999999999999" is out of range 1-65535`},
		{"x:", `empty port in "x:"`},
		{"x:https", `port "https" in "x:https" is not a number`},
		{"x:-1", `port "-1" in "x:-1" is not a number`},
		{":443", `empty host in ":443"`},
		{"ftp://example.com", `unknown scheme "ftp" in "ftp://example.com" (want https, http, amqps, amqp or tcp)`},
		{"://example.com", `missing URL scheme in "://example.com"`},
		{"https://", `empty host in "https://"`},
		{"https://:443", `empty host in "https://:443"`},
		{"https://x:70000", `port 70000 in "https://x:70000" is out of range 1-65535`},
		{"example .com", `target "example .com" contains whitespace`},
		{" example.com", `target " example.com" contains whitespace`},
		{"example.com\n", `target "example.com\n" contains whitespace`},
		{"https://exa mple.com", `target "https://exa mple.com" contains whitespace`},
		{"example.com/path", `target "example.com/path" is neither a host, host:port nor a URL (scheme://host[:port])`},
		{"[2001:db8::1", `missing ']' in "[2001:db8::1"`},
		{"[2001:db8::1]x", `unexpected "x" after ']' in "[2001:db8::1]x"`},
		{"[198.18.0.1]:80", `brackets in "[198.18.0.1]:80" are for IPv6 addresses only`},
		{"[example.com]", `invalid IPv6 address "example.com" in "[example.com]"`},
		{"2001:db8::zz", `invalid IPv6 address "2001:db8::zz" in "2001:db8::zz"`},
		{"2001:db8::1]:80", `misplaced bracket in "2001:db8::1]:80"`},
		{"256.1.1.1", `host "256.1.1.1" in "256.1.1.1": not a valid IPv4 address nor a host name`},
		{"1.2.3", `host "1.2.3" in "1.2.3": not a valid IPv4 address nor a host name`},
		{"-bad.example.com", `host "-bad.example.com" in "-bad.example.com": label "-bad" starts or ends with a hyphen`},
		{"a..b", `host "a..b" in "a..b": empty label`},
		{"a!b.com", `host "a!b.com" in "a!b.com": invalid character '!'`},
		{"bücher.example", `host "bücher.example" in "bücher.example": non-ASCII name: use its xn-- (punycode) form`},
		{long + ".com", `host "` + long + `.com" in "` + long + `.com": label "` + long + `" is longer than 63 characters`},
		{"amqps://user:s3cret@:5671", `empty host in "amqps://:5671"`},
		{"user:s3cret@broker.example.com", `target "<credentials>@broker.example.com" is neither a host, host:port nor a URL (scheme://host[:port])`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseTarget(tt.in, 443)
			if err == nil {
				t.Fatalf("ParseTarget(%q): no error, want %q", tt.in, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("ParseTarget(%q) error\n got %q\nwant %q", tt.in, err.Error(), tt.want)
			}
			if !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("ParseTarget(%q): error does not match ErrInvalidTarget", tt.in)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("ParseTarget(%q): error leaks the password: %q", tt.in, err)
			}
		})
	}
}

func TestParseTargetEdges(t *testing.T) {
	if _, err := ParseTarget("tcp://example.com", 0); err == nil || err.Error() != `missing port in "tcp://example.com" (tcp://host:port)` {
		t.Errorf("tcp without port or default: err = %v", err)
	}
	label := strings.Repeat("a", 63)
	name := strings.Join([]string{label, label, label, strings.Repeat("b", 61)}, ".") // 253
	if _, err := ParseTarget(name, 443); err != nil {
		t.Errorf("253-character name: %v", err)
	}
	if _, err := ParseTarget(name+".", 443); err != nil {
		t.Errorf("253-character name with root dot: %v", err)
	}
	if _, err := ParseTarget(name+"b", 443); err == nil || !strings.Contains(err.Error(), "more than 253") {
		t.Errorf("254-character name: err = %v, want 'more than 253'", err)
	}
	if _, err := ParseTarget("x", 70000); err == nil {
		t.Error("default port 70000 accepted")
	}
}

// fakeResolver answers from a table and records the network asked for.
type fakeResolver struct {
	answers map[string][]netip.Addr
	err     error
	asked   []string
}

func (f *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.asked = append(f.asked, network+" "+host)
	if f.err != nil {
		return nil, f.err
	}
	addrs, ok := f.answers[host]
	if !ok {
		return nil, errors.New("lookup " + host + ": no such host")
	}
	var out []netip.Addr
	for _, a := range addrs {
		switch {
		case network == "ip4" && !a.Unmap().Is4(), network == "ip6" && !a.Is6():
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestResolveAll(t *testing.T) {
	r := &fakeResolver{answers: map[string][]netip.Addr{
		"dual.example": addrs("2001:db8::20", "198.18.0.9", "2001:db8::3", "::ffff:198.18.0.2", "198.18.0.9", "198.18.0.2"),
		"v4.example":   addrs("198.18.1.1"),
		"v6.example":   addrs("2001:db8::1"),
		"none.example": nil,
	}}
	tests := []struct {
		host    string
		family  int
		want    []netip.Addr
		wantErr string
	}{
		{"dual.example", 0, addrs("198.18.0.2", "198.18.0.9", "2001:db8::3", "2001:db8::20"), ""},
		{"dual.example", 4, addrs("198.18.0.2", "198.18.0.9"), ""},
		{"dual.example", 6, addrs("2001:db8::3", "2001:db8::20"), ""},
		{"v4.example", 6, nil, `resolve "v4.example": no IPv6 address (AAAA record)`},
		{"v6.example", 4, nil, `resolve "v6.example": no IPv4 address (A record)`},
		{"none.example", 0, nil, `resolve "none.example": no address`},
		{"nx.example", 0, nil, `resolve "nx.example": lookup nx.example: no such host`},
		{"dual.example", 5, nil, `resolve "dual.example": address family 5 is not 0, 4 or 6`},
	}
	for _, tt := range tests {
		spec, err := ParseTarget(tt.host, 443)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ResolveAll(context.Background(), r, spec, tt.family)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ResolveAll(%s, %d) error = %v, want %q", tt.host, tt.family, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ResolveAll(%s, %d): %v", tt.host, tt.family, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ResolveAll(%s, %d) = %v, want %v", tt.host, tt.family, got, tt.want)
		}
	}
}

func TestResolveAllLiteral(t *testing.T) {
	r := &fakeResolver{}
	spec, _ := ParseTarget("198.18.0.1", 443)
	got, err := ResolveAll(context.Background(), r, spec, 0)
	if err != nil || !slices.Equal(got, addrs("198.18.0.1")) {
		t.Errorf("literal: %v, %v", got, err)
	}
	if _, err := ResolveAll(context.Background(), r, spec, 6); err == nil || err.Error() != "198.18.0.1 is not an IPv6 address" {
		t.Errorf("literal v4 with family 6: err = %v", err)
	}
	if len(r.asked) != 0 {
		t.Errorf("literal address looked up: %v", r.asked)
	}
}

func TestResolveAllWrapsError(t *testing.T) {
	r := &fakeResolver{err: context.DeadlineExceeded}
	spec, _ := ParseTarget("slow.example", 443)
	_, err := ResolveAll(context.Background(), r, spec, 4)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want wrapping context.DeadlineExceeded", err)
	}
	if !slices.Equal(r.asked, []string{"ip4 slow.example"}) {
		t.Errorf("asked %v", r.asked)
	}
}

// FuzzParseTarget checks that any input gives a usable Spec or a one-line
// error that does not echo URL credentials.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com", "198.18.0.1:443", "[2001:db8::1]:443", "2001:db8::1",
		"https://user:pw@example.com:8443/x?y#z", "amqps://h", "tcp://h:1", "x:70000", "[::1", "a..b", ""} {
		f.Add(s, 443)
	}
	f.Fuzz(func(t *testing.T, s string, defaultPort int) {
		spec, err := ParseTarget(s, defaultPort)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			if !errors.Is(err, ErrInvalidTarget) {
				t.Fatalf("error %q does not match ErrInvalidTarget", err)
			}
			return
		}
		if spec.Host == "" || spec.Port < 0 || spec.Port > 65535 {
			t.Fatalf("ParseTarget(%q) = %+v", s, spec)
		}
		if spec.PortFromInput && spec.Port == 0 {
			t.Fatalf("ParseTarget(%q): port 0 from input", s)
		}
		if spec.Addr.IsValid() && spec.Addr.Is4In6() {
			t.Fatalf("ParseTarget(%q): mapped address kept", s)
		}
	})
}
