package localise

import (
	"bufio"
	"context"
	"crypto/rand"
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

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/probe"
)

// buildLab builds a lab for a localisation test; -short (make unit)
// skips them: they build namespaces.
func buildLab(t *testing.T, sc lab.Scenario) *lab.Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test: skipped with -short")
	}
	return labtest.Build(t, sc, lab.Options{})
}

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
func labOptions(t *testing.T) Options {
	return Options{Timeout: 700 * time.Millisecond, Log: t.Logf}
}

func logRewrites(t *testing.T, rows []HopRewrite) {
	t.Helper()
	for _, r := range rows {
		t.Logf("hop %d %-13s %-15s quote %-7s seen %v changes %v (up to %d)", r.Hop, r.Answer, r.Address, r.Quote, r.Seen, r.Changes, r.HopUpTo)
	}
}

// TestLabRewritesMSSClamp: router 2 of 4 clamps the MSS of forwarded SYNs
// to 1200; quotes from hop 3 on show it, so the rewrite is hop 2's.
func TestLabRewritesMSSClamp(t *testing.T) {
	t.Parallel()
	l := buildLab(t, lab.Scenario{Name: "mss-clamp", Routers: []lab.Router{{}, {MSSClamp: 1200}, {}, {}}})
	for _, tc := range []struct {
		name   string
		server netip.Addr
		hop2   netip.Addr
		// spent: every router's ICMP burst toward us is spent just before
		// (as by a trace): the probe must ask again, not see silence.
		spent bool
	}{
		{"v4", l.Server4, l.Router4[1], false}, {"v4 after the routers' ICMP burst was spent", l.Server4, l.Router4[1], true},
		{"v6", l.Server6, l.Router6[1], false}, {"v6 after the routers' ICMP burst was spent", l.Server6, l.Router6[1], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var rows []HopRewrite
			inClient(t, l, func() (err error) {
				if tc.spent {
					spendICMPBurst(t, tc.server, 4)
				}
				rows, err = RawRewrites(ctx, netip.AddrPortFrom(tc.server, 443), 8, labOptions(t))
				return err
			})
			logRewrites(t, rows)
			if len(rows) != 5 || rows[4].Answer != AnswerDestination || rows[4].Address != tc.server.String() {
				t.Fatalf("want 4 routers and the server at TTL 5, got %d rows", len(rows))
			}
			for i, r := range rows[:4] {
				if r.Answer != AnswerTimeExceeded || r.Address != l.Router4[i].String() && r.Address != l.Router6[i].String() || r.Quote != QuoteFull {
					t.Errorf("ttl %d: %s from %s quote %s, want time-exceeded from router %d with a full quote", r.Hop, r.Answer, r.Address, r.Quote, i+1)
				}
				wantSeen, wantChanges := "", ""
				if r.Hop >= 3 {
					wantSeen = "[mss 1460→1200]"
				}
				if r.Hop == 2 {
					wantChanges = "[mss 1460→1200]"
				}
				if got := listText(r.Seen); got != wantSeen {
					t.Errorf("ttl %d: seen %s, want %q", r.Hop, got, wantSeen)
				}
				if got := listText(r.Changes); got != wantChanges {
					t.Errorf("ttl %d: rewrites %s, want %q", r.Hop, got, wantChanges)
				}
			}
			if rows[1].Address != tc.hop2.String() || rows[1].HopUpTo > 2 || RewritesFound(rows) != tri.Yes {
				t.Errorf("rewrite at hop 2 from %s (up to %d), want %s exactly", rows[1].Address, rows[1].HopUpTo, tc.hop2)
			}
			// No NAT on this path: the server sees us as we are.
			sent, seen := serverView(t, l, tc.server)
			var nat NAT
			inClient(t, l, func() (err error) { nat, err = RawNAT(ctx, sent, seen, tc.server, 6, labOptions(t)); return err })
			if nat.Translated != tri.No || nat.Status != tri.No || nat.Hop != 0 || len(nat.Changes) != 0 || nat.Error != "" {
				t.Errorf("nat %+v, want no translation", nat)
			}
		})
	}
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
	l := buildLab(t, lab.Scenario{Name: "nat", Routers: []lab.Router{{Masquerade: true}, {}, {}}})
	for _, tc := range []struct {
		name         string
		server, hop1 netip.Addr
	}{{"v4", l.Server4, l.Router4[0]}, {"v6", l.Server6, l.Router6[0]}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sent, seen := serverView(t, l, tc.server)
			t.Logf("sent from %s, server saw %s", sent, seen)
			var nat NAT
			var rows []HopRewrite
			inClient(t, l, func() (err error) {
				if rows, err = RawRewrites(ctx, netip.AddrPortFrom(tc.server, 443), 6, labOptions(t)); err != nil {
					return err
				}
				nat, err = RawNAT(ctx, sent, seen, tc.server, 6, labOptions(t))
				return err
			})
			logRewrites(t, rows)
			t.Logf("nat: %+v", nat)
			for _, r := range rows {
				if len(r.Seen)+len(r.Changes) != 0 {
					t.Errorf("hop %d: quote changed %v; Linux NAT should have translated it back", r.Hop, r.Seen)
				}
			}
			if nat.Translated != tri.Yes || nat.Status != tri.Yes || nat.Hop != 1 || nat.HopAddress != tc.hop1.String() {
				t.Fatalf("nat %+v, want translated at hop 1 (%s)", nat, tc.hop1)
			}
			if want := "src address " + sent.Addr().String() + "→" + seen.Addr().String(); len(nat.Changes) == 0 || nat.Changes[0] != want {
				t.Errorf("changes %v, want src-addr %s→%s", nat.Changes, sent.Addr(), seen.Addr())
			}
		})
	}
}

// TestLabInFlowStateLoss: a real TCP connection through the lab, probed
// in-flow while healthy and again after idling past a router's conntrack
// timeout: the router that resets (router 3 of 5) or drops (router 2 of
// 4) the expired flow is found.
func TestLabInFlowStateLoss(t *testing.T) {
	t.Parallel()
	idle := lab.Router{IdleTimeout: 3 * time.Second}
	reset, drop := idle, idle
	reset.IdleAction, drop.IdleAction = lab.IdleActionReset, lab.IdleActionDrop
	for _, sc := range []struct {
		name     string
		routers  []lab.Router
		hop      int
		behave   LossBehaviour
		lastKind InFlowKind
	}{
		{"reset at router 3 of 5", []lab.Router{{}, {}, reset, {}, {}}, 3, LossReset, InFlowRST},
		{"drop at router 2 of 4", []lab.Router{{}, drop, {}, {}}, 2, LossDrop, InFlowNone},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "inflow", Routers: sc.routers})
			serverTTL := len(sc.routers) + 1
			for _, fam := range []struct {
				name    string
				server  netip.Addr
				routers []netip.Addr
			}{{"v4", l.Server4, l.Router4}, {"v6", l.Server6, l.Router6}} {
				t.Run(fam.name, func(t *testing.T) {
					t.Parallel()
					ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
					defer cancel()
					remote := netip.AddrPortFrom(fam.server, uint16(l.Server.EchoPort))
					var obs *probe.Observer
					inClient(t, l, func() (err error) { obs, err = probe.NewObserver(remote); return err })
					defer obs.Close()
					nc, err := l.Dial(ctx, l.ClientNS, "tcp", remote.String())
					if err != nil {
						t.Fatal(err)
					}
					defer nc.Close()
					conn := nc.(*net.TCPConn)
					if _, err := conn.Write([]byte("hello hopcheck")); err != nil {
						t.Fatal(err)
					}
					conn.SetReadDeadline(time.Now().Add(3 * time.Second))
					if _, err := io.ReadFull(conn, make([]byte, 14)); err != nil {
						t.Fatal(err)
					}
					flow := flowOf(t, obs, conn)
					var healthy, expired []InFlowAnswer
					// The routers' ICMP burst toward us spent first: every
					// router must still show in the healthy run.
					inClient(t, l, func() (err error) {
						spendICMPBurst(t, fam.server, serverTTL-1)
						healthy, err = RawInFlow(ctx, flow, serverTTL, labOptions(t))
						return err
					})
					logInFlow(t, "healthy", healthy)
					if len(healthy) != serverTTL {
						t.Fatalf("healthy run: %d answers, want %d", len(healthy), serverTTL)
					}
					for i, a := range healthy[:serverTTL-1] {
						if a.Kind != InFlowTimeExceeded || a.From != fam.routers[i].String() {
							t.Errorf("healthy ttl %d: %s from %s, want time-exceeded from %s", a.TTL, a.Kind, a.From, fam.routers[i])
						}
					}
					if a := healthy[serverTTL-1]; a.Kind != InFlowACK || a.From != fam.server.String() || a.SenderHop != serverTTL {
						t.Errorf("healthy ttl %d: %+v, want the server's ACK from hop %d", serverTTL, a, serverTTL)
					}

					time.Sleep(4 * time.Second) // past router's 3 s conntrack timeout
					again := flowOf(t, obs, conn)
					if again != flow {
						t.Errorf("flow state moved while idle: %+v, then %+v", flow, again)
					}
					inClient(t, l, func() (err error) { expired, err = RawInFlow(ctx, flow, serverTTL, labOptions(t)); return err })
					logInFlow(t, "expired", expired)
					loss := ExplainStateLoss(healthy, expired)
					t.Logf("state loss: %+v", loss)
					if loss.Hop != sc.hop || loss.UpTo != sc.hop || loss.Behaviour != sc.behave {
						t.Errorf("state loss %+v, want %s at hop %d", loss, sc.behave, sc.hop)
					}
					if hop, b := LocateStateLoss(healthy, expired); hop != sc.hop || b != sc.behave {
						t.Errorf("LocateStateLoss = %d %q", hop, b)
					}
					if a := expired[len(expired)-1]; a.Kind != sc.lastKind {
						t.Errorf("expired run ends with %+v, want %s", a, sc.lastKind)
					}
				})
			}
		})
	}
}

// flowOf reads the flow state of an idle connection from its SYN-ACK
// (as the observer captured it) and TCP_INFO.
func flowOf(t *testing.T, obs *probe.Observer, conn *net.TCPConn) FlowState {
	t.Helper()
	port := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	var rec probe.FlowRecord
	for deadline := time.Now().Add(2 * time.Second); rec.SynAck == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		rec = obs.Flow(port)
	}
	if rec.SynAck == nil {
		t.Fatal("the observer saw no SYN-ACK")
	}
	// The server's ACK of our last data may still be on its way.
	var flow FlowState
	var err error
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if flow, err = FlowStateFromConn(conn, *rec.SynAck); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flow %s > %s seq %d ack %d window %d (SYN-ACK seq %d ack %d)", flow.Local, flow.Remote, flow.Seq, flow.Ack, flow.Window, rec.SynAck.Seq, rec.SynAck.Ack)
	return flow
}

func logInFlow(t *testing.T, run string, as []InFlowAnswer) {
	t.Helper()
	for _, a := range as {
		t.Logf("%s ttl %d: %s from %s reply ttl %d sender hop %d", run, a.TTL, a.Kind, a.From, a.ReplyTTL, a.SenderHop)
	}
}

// spendICMPBurst sends a burst of echo requests toward dst expiring at
// each of the first hops routers, so that their ICMP rate limit toward us
// (Linux: a burst of about 6, then 1 per second) is spent, and fails the
// test if every one was answered: the lab must keep the kernel's limits.
func spendICMPBurst(t *testing.T, dst netip.Addr, hops int) {
	t.Helper()
	const perHop = 12
	path, err := probe.OpenRawPath(probe.RawPathConfig{Dst: dst, Protocol: probe.ICMP})
	if err != nil {
		t.Fatal(err)
	}
	defer path.Close()
	ident, err := probe.NewIdent(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	family := 4
	if dst.Is6() {
		family = 6
	}
	for i := 0; i < perHop; i++ {
		for ttl := 1; ttl <= hops; ttl++ {
			idx := uint16(ttl*100 + i)
			b, err := probe.BuildICMPEcho(family, path.Src(), dst, ident.ICMPID(), idx, ident.FlowChecksum(int(idx)), ident.Payload(idx, 16))
			if err != nil {
				t.Fatal(err)
			}
			if err := path.Send(dst, b, ttl, idx, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	answered := map[netip.Addr]int{}
	deadline := time.Now().Add(300 * time.Millisecond)
	for {
		ev, ok := path.Next(context.Background(), deadline)
		if !ok {
			break
		}
		if ev.ICMP != nil && ev.ICMP.Kind == probe.KindTimeExceeded {
			answered[ev.From]++
		}
	}
	t.Logf("ICMP burst: %d echo requests expiring at each of %d routers; time-exceeded per router: %v", perHop, hops, answered)
	for from, n := range answered {
		if n >= perHop {
			t.Fatalf("%s answered all %d: no ICMP rate limit in the lab", from, n)
		}
	}
}
