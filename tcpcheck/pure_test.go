package tcpcheck

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/hopcheck/hopcheck/probe"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in   string
		app  App
		port int
		host string
		err  string
	}{
		{"https://api.betradar.com", AppHTTPS, 443, "api.betradar.com", ""},
		{"amqps://mq.betradar.com", AppAMQPS, 5671, "mq.betradar.com", ""},
		{"amqps://user:secret@mq.betradar.com:5671", AppAMQPS, 5671, "mq.betradar.com", ""},
		{"tcp://198.18.0.10:7", AppTCP, 7, "198.18.0.10", ""},
		{"198.18.0.10:443", AppTCP, 443, "198.18.0.10", ""},
		{"[2001:db8::1]:443", AppTCP, 443, "2001:db8::1", ""},
		{"ftp://x.example", "", 0, "", "unknown scheme"},
		{"http://x.example", "", 0, "", "not supported"},
		{"x.example", "", 0, "", "missing port"},
		{"x.example:70000", "", 0, "", "out of range"},
		{"tcp://x.example", "", 0, "", "missing port"},
	} {
		got, err := ParseTarget(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got.App != c.app || got.Spec.Port != c.port || got.Spec.Host != c.host {
			t.Errorf("%q: got %+v", c.in, got)
		}
		if strings.Contains(got.Name(), "secret") {
			t.Errorf("%q: credentials kept in %q", c.in, got.Name())
		}
	}
}

func TestIsBetradar(t *testing.T) {
	for h, want := range map[string]bool{"api.betradar.com": true, "BETRADAR.COM.": true, "global.stgapi.betradar.com": true,
		"notbetradar.com": false, "betradar.com.example": false, "198.18.0.1": false} {
		if IsBetradar(h) != want {
			t.Errorf("IsBetradar(%q) != %v", h, want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		phase Phase
		err   error
		want  Outcome
	}{
		{PhaseTCP, nil, OutcomeOK},
		{PhaseTCP, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), OutcomeRefused},
		{PhaseTCP, os.ErrDeadlineExceeded, OutcomeTimeout},
		{PhaseTCP, context.DeadlineExceeded, OutcomeTimeout},
		{PhaseTLS, fmt.Errorf("read: %w", syscall.ECONNRESET), OutcomeResetInHandshake},
		{PhaseTLS, x509.UnknownAuthorityError{}, OutcomeTLSError},
		{PhaseTLS, io.EOF, OutcomeTLSError},
		{PhaseApp, syscall.ECONNRESET, OutcomeResetInHandshake},
		{PhaseApp, &appError{"no Connection.Start"}, OutcomeAppError},
		{PhaseRequest, syscall.ECONNRESET, OutcomeReset},
		{PhaseRequest, syscall.EPIPE, OutcomeReset},
		{PhaseRequest, syscall.ETIMEDOUT, OutcomeTimeout},
		{PhaseRequest, io.EOF, OutcomeClosed},
		{PhaseRequest, errors.New("strange"), OutcomeAppError},
	} {
		if got := Classify(c.phase, c.err); got != c.want {
			t.Errorf("Classify(%s, %v) = %s, want %s", c.phase, c.err, got, c.want)
		}
	}
}

func TestWilson(t *testing.T) {
	for _, c := range []struct {
		k, n   int
		lo, hi float64
	}{
		{0, 0, 0, 1},
		{0, 10, 0, 0.2775},
		{10, 10, 0.7225, 1},
		{20, 1000, 0.01302, 0.03063},
		{1, 1000, 0.000177, 0.005642},
		{50, 100, 0.4038, 0.5962},
	} {
		lo, hi := Wilson(c.k, c.n)
		if math.Abs(lo-c.lo) > 5e-4 || math.Abs(hi-c.hi) > 5e-4 {
			t.Errorf("Wilson(%d, %d) = [%.5f, %.5f], want [%.5f, %.5f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

func TestClosedOrReset(t *testing.T) {
	reset := fmt.Errorf("write tcp: %w", syscall.ECONNRESET)
	rst := []PacketRec{{Flags: "RST+ACK"}}
	fin := []PacketRec{{Flags: "FIN+ACK"}, {Flags: "RST"}}
	for _, c := range []struct {
		name     string
		writeErr error
		packets  []PacketRec
		want     Outcome
	}{
		{"plain EOF", nil, nil, OutcomeClosed},
		{"the writer took the reset", reset, nil, OutcomeReset},
		{"a broken pipe alone is no evidence", syscall.EPIPE, nil, OutcomeClosed},
		{"captured RST", nil, rst, OutcomeReset},
		{"FIN first, RST after: closed", reset, fin, OutcomeClosed},
		{"captured RST and the writer's reset", reset, rst, OutcomeReset},
	} {
		got, err := closedOrReset(io.EOF, c.writeErr, c.packets)
		if got != c.want || err == nil {
			t.Errorf("%s: %s (%v), want %s", c.name, got, err, c.want)
		}
	}
}

func TestTransferKind(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name string
		end  transferEnd
		want string
	}{
		{"complete body, no close seen", transferEnd{outcome: OutcomeOK, got: 8 * mib, want: 8 * mib}, ""},
		{"complete body, then a normal close", transferEnd{outcome: OutcomeClosed, got: 8 * mib, want: 8 * mib}, ""},
		{"all echoed, then a normal close", transferEnd{outcome: OutcomeClosed, got: echoVolume, want: echoVolume}, ""},
		{"empty body, then a close", transferEnd{outcome: OutcomeClosed, got: 0, want: 0}, ""},
		{"FIN after 1 of 8 MiB", transferEnd{outcome: OutcomeClosed, got: mib, want: 8 * mib}, KindMidstreamClose},
		{"FIN one byte short", transferEnd{outcome: OutcomeClosed, got: 8*mib - 1, want: 8 * mib}, KindMidstreamClose},
		{"FIN in a chunked body", transferEnd{outcome: OutcomeClosed, got: mib, want: -1}, KindMidstreamClose},
		{"FIN before the response headers", transferEnd{outcome: OutcomeClosed, got: 0, want: -1}, KindMidstreamClose},
		{"echo cut short", transferEnd{outcome: OutcomeClosed, got: 32 << 10, want: echoVolume}, KindMidstreamClose},
		{"reset mid-body", transferEnd{outcome: OutcomeReset, got: mib, want: 8 * mib}, KindMidstreamReset},
		{"reset after the body is no close", transferEnd{outcome: OutcomeReset, got: 8 * mib, want: 8 * mib}, KindMidstreamReset},
		{"stall outranks the rest", transferEnd{outcome: OutcomeTimeout, stalled: true, got: mib, want: 8 * mib}, KindDataStall},
		{"cancelled, not stalled", transferEnd{outcome: OutcomeTimeout, got: mib, want: 8 * mib}, ""},
	} {
		if got := transferKind(c.end); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestCloseAdvice(t *testing.T) {
	for _, c := range []struct {
		origin      probe.Origin
		hop         int
		addr        string
		want, never []string
	}{
		{probe.OriginServer, 4, "", []string{"graceful restart", "keep-alive", "retry idempotent"}, []string{"session limits"}},
		{probe.OriginMiddlebox, 2, "198.18.1.2", []string{"hop 2 (198.18.1.2)", "session limits", "retry idempotent"}, []string{"graceful restart"}},
		{probe.OriginUnknown, 0, "", []string{"graceful restart", "session limits", "retry idempotent", "CAP_NET_RAW"}, nil},
	} {
		got := closeAdvice(c.origin, c.hop, c.addr)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: advice %q lacks %q", c.origin, got, w)
			}
		}
		for _, n := range c.never {
			if strings.Contains(got, n) {
				t.Errorf("%s: advice %q should not mention %q", c.origin, got, n)
			}
		}
	}
}
