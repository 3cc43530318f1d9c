package e2e

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// hopcheck against a real HAProxy (the Debian haproxy package) as an L4
// load balancer on router 2 of 3, in TCP mode on a virtual address, with
// `timeout client 6s`: the UOF cause "a load balancer on the path ends
// idle connections on its timeout". From TCP's view the load balancer is
// the server (its SYN-ACK, FIN and RST all come from router 2; the real
// server sits at hop 4 behind it), so the correct report is a close by the
// server at hop 2, on the VIP, with advice that names the load balancer's
// idle timeout. With `option nolinger` HAProxy 2.6 still shuts the client
// side down first (FIN) and then aborts (RST) at the same moment: both
// from hop 2. Skips without the package, fails under HOPCHECK_LAB=required.
func TestHAProxyIdleTimeout(t *testing.T) {
	t.Parallel() // mostly waiting
	labtest.RequireHAProxy(t)
	const timeoutClient = 6.0
	for _, tc := range []struct {
		name     string
		noLinger bool
	}{{"FIN on timeout client", false}, {"nolinger: FIN then RST", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := buildLab(t, lab.Scenario{Name: "haproxy", Routers: make([]lab.Router, 3)})
			lb := labtest.StartHAProxy(t, l, lab.HAProxyOptions{Router: 2, TimeoutClient: time.Duration(timeoutClient * float64(time.Second)),
				TimeoutServer: time.Minute, NoLinger: tc.noLinger})
			// The VIP is not in the lab certificate's names: TLS is not under test.
			rep, wall := tcpJSON(t, l, "idle", "--idle-max", "12s", "--insecure", "--token-file", l.TokenFile(), fmt.Sprintf("https://%s", lb.VIP4))
			if len(rep.Results) != 1 || rep.Results[0].ServerHop != lb.Hop {
				t.Fatalf("want one result whose server (the SYN-ACK's sender) is the load balancer at hop %d, not the server at hop %d; %s",
					lb.Hop, len(l.RouterNS)+1, resultSummary(rep))
			}
			if len(rep.Findings) != 1 {
				t.Fatalf("findings %+v: want one; %s", rep.Findings, resultSummary(rep))
			}
			f := oneFinding(t, rep, tcpcheck.KindIdleClose)
			// HAProxy's timer fires a few ms after the timeout (a
			// connection idle 6.001 s may still be served): the bracket's
			// lower end may pass 6 s by that much.
			if math.Abs(f.IdleTimeoutS-timeoutClient) > 0.1*timeoutClient || len(f.IdleBracketS) != 2 ||
				f.IdleBracketS[0] > 1.02*timeoutClient || f.IdleBracketS[1] < 0.9*timeoutClient {
				t.Errorf("idle timeout %.2fs bracket %v, want %.0fs ±10%%", f.IdleTimeoutS, f.IdleBracketS, timeoutClient)
			}
			if f.Origin != probe.OriginServer || f.Hop != lb.Hop || f.Address != lb.VIP4.String() {
				t.Errorf("origin %s hop %d address %s, want the server side at hop %d, %s (the load balancer); evidence %v",
					f.Origin, f.Hop, f.Address, lb.Hop, lb.VIP4, f.Evidence)
			}
			if f.IdleVerdict != nil {
				t.Errorf("an RFC 5382 verdict %+v for the box that answered the SYN: that is for NATs and firewalls", f.IdleVerdict)
			}
			for _, w := range []string{"load balancer", "HAProxy timeout client / timeout server", "IdleConnTimeout"} {
				if !strings.Contains(f.Advice, w) {
					t.Errorf("advice %q lacks %q", f.Advice, w)
				}
			}
			// Every FIN and RST of the failed connections is the load
			// balancer's, and there are FINs: an idle close (the finding's
			// kind says so too). With nolinger a RST comes with each FIN at
			// once. Without, a RST may still answer a request the client
			// wrote after the FIN (data to a closed socket), and a FIN that
			// came while the connection idled, before the request, is
			// outside the capture window: so neither the absence of RSTs
			// nor a FIN first is asserted.
			var flags []string
			for _, c := range rep.Results[0].Connections {
				for _, p := range c.Packets {
					flags = append(flags, p.Flags)
					if p.Hop != lb.Hop || p.Origin != probe.OriginServer {
						t.Errorf("connection %d: %s from hop %d (%s), want hop %d, the server side: %s", c.ID, p.Flags, p.Hop, p.Origin, lb.Hop, p.Reason)
					}
				}
			}
			all := strings.Join(flags, " ")
			if !strings.Contains(all, "FIN") || (tc.noLinger && !strings.Contains(all, "RST")) {
				t.Errorf("packets %v: want FINs, and with nolinger (%v) the RST sent with them", flags, tc.noLinger)
			}
			t.Logf("T=%.2fs bracket %v (true %.0fs), hop %d, packets %v, wall %v", f.IdleTimeoutS, f.IdleBracketS, timeoutClient, f.Hop, flags, wall.Round(100*time.Millisecond))
		})
	}
}
