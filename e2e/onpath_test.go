package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// An on-path injector on router 2 of 3 (lab.Router.InjectRST: the router
// forwards everything, a packet program beside it resets the flow toward
// the client as soon as the client sends its echo line) against an in-path
// box on the same router (nft reject once the flow passes 200 bytes: the
// line never reaches the server). Both resets come from hop 2 with the
// router's TTL; only after the injected one does the server's echo still
// arrive, and `tcp connect` must say so: on-path-injection for the
// injector, in-path-blocking for the reject.
func TestOnPathInjectorVersusInPathReject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		knob    func(r *lab.Router)
		want    string // the observation the finding must carry
		notWant string
		v6      bool // also over IPv6
	}{
		{"on-path", func(r *lab.Router) { r.InjectRST = &lab.Injector{Port: lab.DefaultHTTPSPort} }, "on-path-injection", "in-path-blocking", true},
		// SYN, SYN-ACK and ACK make 172 bytes (IPv4, timestamps); the
		// client's line takes the flow past 200.
		{"in-path", func(r *lab.Router) { r.ResetAfterBytes = 200 }, "in-path-blocking", "on-path-injection", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rs := make([]lab.Router, 3)
			tc.knob(&rs[1])
			l := buildLab(t, lab.Scenario{Name: "onpath-" + tc.name, Routers: rs})
			servers := []netip.Addr{l.Server4}
			routers := []netip.Addr{l.Router4[1]}
			if tc.v6 {
				servers, routers = append(servers, l.Server6), append(routers, l.Router6[1])
			}
			for i, server := range servers {
				target := fmt.Sprintf("https://%s", netip.AddrPortFrom(server, uint16(l.Server.HTTPSPort)))
				rep, wall := tcpJSON(t, l, "connect", "--count", "3", "--rate", "20", "--insecure", target)
				f := oneFinding(t, rep, tcpcheck.KindConnectReset)
				t.Logf("%s: hop %d (%s) origin %s confidence %s observations %v, wall %v; evidence:\n  %s",
					target, f.Hop, f.HopAddress, f.Origin, f.Confidence, f.Observations, wall, strings.Join(f.Evidence, "\n  "))
				if f.Origin != probe.OriginMiddlebox || f.Hop != 2 || f.HopAddress != routers[i].String() || len(f.HopCandidates) > 1 {
					t.Errorf("%s: origin %s hop %d (%s) candidates %v, want middlebox hop 2 (%s), decided", target, f.Origin, f.Hop, f.HopAddress, f.HopCandidates, routers[i])
				}
				if !slices.Contains(f.Observations, tc.want) || slices.Contains(f.Observations, tc.notWant) {
					t.Errorf("%s: observations %v, want %s and not %s", target, f.Observations, tc.want, tc.notWant)
				}
				// The resets were the router's own: 64 less router 1. The
				// injector races the server's answer (2-3 ms away) and can
				// lose it on a loaded machine: that connection then passes.
				resets := 0
				for _, c := range rep.Results[0].Connections {
					if c.Outcome.IsReset() {
						resets++
					}
					for _, p := range c.Packets {
						if strings.Contains(p.Flags, "RST") && p.TTL != 63 {
							t.Errorf("%s: connection %d: RST with TTL %d, want 63 (router 2's 64 less router 1)", target, c.ID, p.TTL)
						}
					}
				}
				if resets < 2 {
					t.Errorf("%s: %d of 3 connections reset; counts %v", target, resets, rep.Results[0].Counts)
				}
			}
			if tc.name != "on-path" {
				return
			}
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(l.Dir, "inject-r2.log"))
				t.Logf("injector log:\n%s", b)
			}
			// Tearing the lab down ends the injector.
			pids := injectorPIDs(t, l.RouterNS[1])
			if len(pids) != 1 {
				t.Errorf("injector processes in router 2: %v, want one", pids)
			}
			if err := l.Close(); err != nil {
				t.Errorf("closing the lab: %v", err)
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("injector %d still there after Close (kill 0: %v)", pid, err)
				}
			}
		})
	}
}

// injectorPIDs lists the injector processes in namespace ns.
func injectorPIDs(t *testing.T, ns string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), lab.InjectCommand) {
			pids = append(pids, pid)
		}
	}
	return pids
}
