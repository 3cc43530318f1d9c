package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
)

// inClient runs fn inside the lab's client namespace: every probe of
// these tests leaves from there, never from the root namespace.
func inClient(t *testing.T, l *lab.Lab, fn func() error) {
	t.Helper()
	if err := lab.InNamespace(l.ClientNS, fn); err != nil {
		t.Fatal(err)
	}
}

// labOptions are the localisation options of the lab tests: answers come
// within a millisecond there.
func labOptions(t *testing.T) LocaliseOptions {
	return LocaliseOptions{Timeout: 700 * time.Millisecond, Log: t.Logf}
}

func logRewrites(t *testing.T, rows []HopRewrite) {
	t.Helper()
	for _, r := range rows {
		t.Logf("ttl %d %-13s %-15s quote %-7s changes %v rewrites %v", r.TTL, r.Answer, r.From, r.Quote, r.Changes, r.Rewrites)
	}
}

// TestLabRewritesMSSClamp: router 2 of 4 clamps the MSS of forwarded SYNs
// to 1200; quotes from hop 3 on show it, so the rewrite is hop 2's.
func TestLabRewritesMSSClamp(t *testing.T) {
	t.Parallel()
	l := labtest.Build(t, lab.Scenario{Name: "mss-clamp", Routers: []lab.Router{{}, {MSSClamp: 1200}, {}, {}}}, lab.Options{})
	for _, tc := range []struct {
		name   string
		server netip.Addr
		hop2   netip.Addr
	}{{"v4", l.Server4, l.Router4[1]}, {"v6", l.Server6, l.Router6[1]}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var rows []HopRewrite
			inClient(t, l, func() (err error) {
				rows, err = ProbeRewrites(ctx, netip.AddrPortFrom(tc.server, 443), 8, labOptions(t))
				return err
			})
			logRewrites(t, rows)
			if len(rows) != 5 || rows[4].Answer != AnswerDestination || rows[4].From != tc.server {
				t.Fatalf("want 4 routers and the server at TTL 5, got %d rows", len(rows))
			}
			var all []Rewrite
			for i, r := range rows[:4] {
				if r.Answer != AnswerTimeExceeded || r.From != l.Router4[i] && r.From != l.Router6[i] || r.Quote != QuoteFull {
					t.Errorf("ttl %d: %s from %s quote %s, want time-exceeded from router %d with a full quote", r.TTL, r.Answer, r.From, r.Quote, i+1)
				}
				all = append(all, r.Rewrites...)
				wantChanges := ""
				if r.TTL >= 3 {
					wantChanges = "[mss 1460→1200]"
				}
				if got := changesText(r.Changes); got != wantChanges {
					t.Errorf("ttl %d: changes %s, want %q", r.TTL, got, wantChanges)
				}
			}
			if len(all) != 1 || len(rows[1].Rewrites) != 1 {
				t.Fatalf("rewrites %v, want exactly one at hop 2", all)
			}
			rw := rows[1].Rewrites[0]
			if rw.String() != "mss 1460→1200 at hop 2" || rw.SeenAt != 3 || rows[1].From != tc.hop2 {
				t.Errorf("rewrite %s (seen at %d) from %s, want mss 1460→1200 at hop 2 seen at 3 from %s", rw, rw.SeenAt, rows[1].From, tc.hop2)
			}
		})
	}
}

func changesText(cs []FieldChange) string {
	if len(cs) == 0 {
		return ""
	}
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// serverView fetches /peer from the lab server over one TLS connection
// made in the client namespace: our end as we sent it and as the server
// saw it.
func serverView(t *testing.T, l *lab.Lab, server netip.Addr) (sent, seen netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Dial(ctx, l.ClientNS, "tcp", netip.AddrPortFrom(server, uint16(l.Server.HTTPSPort)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pem, err := os.ReadFile(l.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: lab.ServerName})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(tc, "GET /peer HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", lab.ServerName)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/peer: %v %s", err, resp.Status)
	}
	seen, err = netip.ParseAddrPort(strings.TrimSpace(string(body)))
	if err != nil {
		t.Fatalf("/peer answered %q: %v", body, err)
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), seen
}

// TestLabNATMasquerade: router 1 of 3 masquerades. Its conntrack
// translates the quotes of the ICMP errors back, so the quotes look
// untouched (the limit of tracebox's method); the server's view of our
// address and the distance of the translated address place the NAT at
// hop 1.
func TestLabNATMasquerade(t *testing.T) {
	t.Parallel()
	l := labtest.Build(t, lab.Scenario{Name: "nat", Routers: []lab.Router{{Masquerade: true}, {}, {}}}, lab.Options{})
	for _, tc := range []struct {
		name         string
		server, hop1 netip.Addr
	}{{"v4", l.Server4, l.Router4[0]}, {"v6", l.Server6, l.Router6[0]}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sent, seen := serverView(t, l, tc.server)
			t.Logf("sent from %s, server saw %s", sent, seen)
			var nat NATResult
			var rows []HopRewrite
			inClient(t, l, func() (err error) {
				if rows, err = ProbeRewrites(ctx, netip.AddrPortFrom(tc.server, 443), 6, labOptions(t)); err != nil {
					return err
				}
				nat, err = ProbeNAT(ctx, sent, seen, tc.server, 6, labOptions(t))
				return err
			})
			logRewrites(t, rows)
			t.Logf("nat: %+v", nat)
			for _, r := range rows {
				if len(r.Changes) != 0 {
					t.Errorf("ttl %d: quote changed %v; Linux NAT should have translated it back", r.TTL, r.Changes)
				}
			}
			if nat.Translated != TriYes || nat.Hop != 1 || nat.HopAddress != tc.hop1 {
				t.Fatalf("nat %+v, want translated at hop 1 (%s)", nat, tc.hop1)
			}
			if len(nat.Changes) == 0 || nat.Changes[0].Field != FieldSrcAddr || nat.Changes[0].Seen != seen.Addr().String() {
				t.Errorf("changes %v, want src-addr %s→%s", nat.Changes, sent.Addr(), seen.Addr())
			}
		})
	}
}
