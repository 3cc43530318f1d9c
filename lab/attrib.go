package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Knobs for attribution tests (Router.ReturnDetour, InitialTTL,
// ForgeServerTTL): a return path longer than the way there, boxes whose own
// packets start from another TTL, and a box that forges the server's TTL.

// Interfaces of a return detour: the router with the detour sends toward
// the client through ifToDetour, the router on its left receives the
// detour's packets on ifFromDetour. Inside the detour's own namespaces the
// usual ifToServer (toward the detouring router) and ifToClient are used.
const (
	ifToDetour   = "todetour"
	ifFromDetour = "fromdetour"
)

// Interface indexes of detour link i: ifIndexDetourA+i on its server side,
// ifIndexDetourB+i on its client side.
const (
	ifIndexDetourA = 5000
	ifIndexDetourB = 6000
)

// maxReturnDetour bounds Router.ReturnDetour (detour links use
// 198.19.251-254.0/24).
const maxReturnDetour = 3

// detourLink4 addresses detour link i (0: from the detouring router): side
// 1 on its server side, side 2 on its client side; 198.19.(251+i).side and
// 2001:db8:2:i::side.
func detourLink4(i, side int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(251 + i), byte(side)})
}

func detourLink6(i, side int) netip.Addr {
	b := link6(i, side).As16()
	b[5] = 2
	return netip.AddrFrom16(b)
}

// validateAttrib checks the attribution knobs of sc.
func validateAttrib(sc Scenario) error {
	detours := 0
	for i, r := range sc.Routers {
		where := fmt.Sprintf("scenario %q router %d", sc.Name, i+1)
		switch {
		case r.ReturnDetour < 0 || r.ReturnDetour > maxReturnDetour:
			return fmt.Errorf("%s: ReturnDetour %d outside 0..%d", where, r.ReturnDetour, maxReturnDetour)
		case r.ReturnDetour > 0 && i == 0:
			// The client is on router 1's own link: nothing to detour through.
			return fmt.Errorf("%s: ReturnDetour needs a router on the left (router 2 or later)", where)
		case r.InitialTTL != 0 && r.InitialTTL != 64 && r.InitialTTL != 128 && r.InitialTTL != 255:
			return fmt.Errorf("%s: InitialTTL %d is none of 64, 128, 255", where, r.InitialTTL)
		case (r.ReturnDetour > 0 || r.InitialTTL != 0 || r.ForgeServerTTL) && sc.ECMPRouter > 0:
			return fmt.Errorf("%s: ReturnDetour, InitialTTL and ForgeServerTTL do not combine with ECMPRouter", where)
		}
		if r.ReturnDetour > 0 {
			detours++
		}
	}
	if detours > 1 {
		return fmt.Errorf("scenario %q: ReturnDetour on %d routers, at most one", sc.Name, detours)
	}
	return nil
}

// returnRouters is how many routers a packet from node idx (1..n routers,
// n+1 the server) crosses back to the client, detours included.
func returnRouters(sc Scenario, idx int) int {
	extra := 0
	for j := 1; j <= idx && j <= len(sc.Routers); j++ {
		extra += sc.Routers[j-1].ReturnDetour
	}
	return idx - 1 + extra
}

// planAttrib adds the attribution knobs to a planned chain.
func planAttrib(t *topology, sc Scenario, id string) {
	n := len(sc.Routers)
	for idx := 1; idx <= n; idx++ {
		r := sc.Routers[idx-1]
		nd := &t.nodes[idx]
		if r.ReturnDetour > 0 {
			planDetour(t, sc, id, idx)
		}
		if r.InitialTTL != 0 {
			ttl := strconv.Itoa(r.InitialTTL)
			nd.sysctls = append(nd.sysctls, "net.ipv4.ip_default_ttl="+ttl,
				"net.ipv6.conf.all.hop_limit="+ttl, "net.ipv6.conf.default.hop_limit="+ttl)
			ifaces := []string{ifToClient, ifToServer}
			if r.ReturnDetour > 0 {
				ifaces = append(ifaces, ifToDetour)
			}
			for _, ifc := range ifaces {
				nd.sysctls = append(nd.sysctls, "net.ipv6.conf."+ifc+".hop_limit="+ttl)
			}
		}
		if r.ForgeServerTTL {
			// Start the box's resets so that they arrive like the server's
			// packets: the server's initial 64 less its return routers, plus
			// this box's return routers.
			forged := 64 - returnRouters(sc, n+1) + returnRouters(sc, idx)
			nd.ruleset += fmt.Sprintf(`table inet hopcheck_forge {
	chain output {
		type filter hook output priority filter; policy accept;
		meta nfproto ipv4 tcp flags & rst == rst ip ttl set %d
		meta nfproto ipv6 tcp flags & rst == rst ip6 hoplimit set %d
	}
}
`, forged, forged)
		}
	}
}

// planDetour gives router idx a return detour of sc.Routers[idx-1].ReturnDetour
// extra routers toward router idx-1: its routes toward the client side go
// through them; the way toward the server is unchanged.
func planDetour(t *topology, sc Scenario, id string, idx int) {
	d := sc.Routers[idx-1].ReturnDetour
	// Nodes along the detour, server side first: the router, D1..Dd, the
	// router on its left.
	names := make([]string, d)
	for i := range names {
		names[i] = id + "-r" + strconv.Itoa(idx) + "d" + strconv.Itoa(i+1)
		t.rootBatch = append(t.rootBatch, "netns add "+names[i])
		t.detourNS = append(t.detourNS, names[i])
	}
	right, left := t.nodes[idx].ns, t.nodes[idx-1].ns
	for i := 0; i <= d; i++ {
		aNS, aIf, bNS, bIf := right, ifToDetour, left, ifFromDetour
		if i > 0 {
			aNS, aIf = names[i-1], ifToClient
		}
		if i < d {
			bNS, bIf = names[i], ifToServer
		}
		t.rootBatch = append(t.rootBatch, fmt.Sprintf("link add name %s index %d netns %s type veth peer name %s index %d netns %s",
			aIf, ifIndexDetourA+i, aNS, bIf, ifIndexDetourB+i, bNS))
	}
	addrs := func(i, side int, ifc string) []string {
		return []string{
			fmt.Sprintf("addr add %s/24 dev %s", detourLink4(i, side), ifc),
			fmt.Sprintf("addr add %s/64 dev %s nodad", detourLink6(i, side), ifc),
			"link set " + ifc + " up"}
	}
	noRPFilter := func(ifc string) []string {
		return []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf." + ifc + ".rp_filter=0"}
	}

	// The detouring router: its routes toward the client side (the links
	// behind its left neighbour) now go into the detour. Addresses first:
	// the new next hop is on the detour link.
	rt := &t.nodes[idx]
	var routes []string
	for _, line := range rt.ipBatch {
		for k := 0; k < idx-1; k++ {
			switch line {
			case fmt.Sprintf("route add %s via %s", linkPrefix4(k), link4(idx-1, 1)):
				line = fmt.Sprintf("route add %s via %s", linkPrefix4(k), detourLink4(0, 2))
			case fmt.Sprintf("route add %s via %s", linkPrefix6(k), link6(idx-1, 1)):
				line = fmt.Sprintf("route add %s via %s", linkPrefix6(k), detourLink6(0, 2))
			}
		}
		routes = append(routes, line)
	}
	first := len(routes)
	for i, line := range routes {
		if strings.HasPrefix(line, "route ") {
			first = i
			break
		}
	}
	rt.ipBatch = append(append(append([]string{}, routes[:first]...), addrs(0, 1, ifToDetour)...), routes[first:]...)
	rt.sysctls = append(rt.sysctls, "net.ipv6.conf."+ifToDetour+".accept_dad=0")

	// The router on the left takes the detour's packets in on another
	// interface than its route toward their sources: no reverse-path filter.
	lt := &t.nodes[idx-1]
	lt.ipBatch = append(lt.ipBatch, addrs(d, 2, ifFromDetour)...)
	lt.sysctls = append(lt.sysctls, "net.ipv6.conf."+ifFromDetour+".accept_dad=0")
	lt.sysctls = append(lt.sysctls, noRPFilter(ifFromDetour)...)

	// The detour's routers forward everything toward the client side; they
	// carry only the way back.
	for i, ns := range names {
		nd := node{ns: ns, role: "router", ruleset: routerRuleset(Router{})}
		nd.ipBatch = append([]string{"link set lo up"}, addrs(i, 2, ifToServer)...)
		nd.ipBatch = append(nd.ipBatch, addrs(i+1, 1, ifToClient)...)
		nd.ipBatch = append(nd.ipBatch,
			fmt.Sprintf("route add default via %s", detourLink4(i+1, 2)),
			fmt.Sprintf("route add default via %s", detourLink6(i+1, 2)))
		nd.sysctls = append(nodeSysctls([]string{ifToClient, ifToServer}), routerSysctls(Router{})...)
		nd.sysctls = append(nd.sysctls, noRPFilter(ifToServer)...)
		t.nodes = append(t.nodes, nd)
	}
}

// DetourSource returns the addresses the router with a ReturnDetour
// answers from toward the client (its detour link: the kernel sends ICMPv4
// errors from the interface toward their destination); invalid when the
// lab has no detour. ICMPv6 errors keep the interface the probe came in on
// (Router6 as usual).
func (l *Lab) DetourSource() (v4, v6 netip.Addr) {
	if len(l.DetourNS) == 0 {
		return netip.Addr{}, netip.Addr{}
	}
	return detourLink4(0, 1), detourLink6(0, 1)
}
