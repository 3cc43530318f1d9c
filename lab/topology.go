package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Interface names inside every lab namespace. Each veth end lives in its own
// namespace from the moment it is created, so the same short names can be
// reused on every node and never collide with the root namespace.
const (
	ifToClient = "toclient" // a node's interface on the link toward the client
	ifToServer = "toserver" // a node's interface on the link toward the server
)

// The ECMP twin's links: the node before the twin reaches it through
// ifToServerB, the node after it through ifToClientB; inside the twin's own
// namespace they are the usual ifToClient and ifToServer.
const (
	ifToServerB = "toserverb"
	ifToClientB = "toclientb"
)

// isLabInterface reports whether name is one of the lab's veth ends.
func isLabInterface(name string) bool {
	switch name {
	case ifToClient, ifToServer, ifToClientB, ifToServerB:
		return true
	case ifToDetour, ifFromDetour:
		return true
	}
	return false
}

// Interface indexes: ifIndexToServer+k and ifIndexToClient+k are the two
// ends of link k; ifIndexTwinToServer+k and ifIndexTwinToClient+k of twin
// link k.
const (
	ifIndexToServer     = 1000
	ifIndexToClient     = 2000
	ifIndexTwinToServer = 3000
	ifIndexTwinToClient = 4000
)

// maxRouters bounds the chain so that link k fits 198.18.k.0/24.
const maxRouters = 250

// Idle actions of Router.IdleAction.
const (
	IdleActionReset = "reset"
	IdleActionDrop  = "drop"
)

// link4 returns the IPv4 address of side (1 = left, 2 = right) on link k.
func link4(k, side int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(k), byte(side)})
}

// link6 returns the IPv6 address of side (1 = left, 2 = right) on link k:
// 2001:db8:0:k::side.
func link6(k, side int) netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	b[6], b[7] = byte(k>>8), byte(k)
	b[15] = byte(side)
	return netip.AddrFrom16(b)
}

func linkPrefix4(k int) netip.Prefix { return netip.PrefixFrom(link4(k, 0), 24) }
func linkPrefix6(k int) netip.Prefix { return netip.PrefixFrom(link6(k, 0), 64) }

// twinLink4 and twinLink6 address the ECMP twin's links: twin link k-1
// joins router k-1 (side 1) and the twin of router k (side 2), twin link k
// joins the twin (side 1) and the node after router k (side 2), in
// 198.19.k.0/24 and 2001:db8:1:k::/64.
func twinLink4(k, side int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(k), byte(side)})
}

func twinLink6(k, side int) netip.Addr {
	b := link6(k, side).As16()
	b[5] = 1
	return netip.AddrFrom16(b)
}

func twinPrefix4(k int) netip.Prefix { return netip.PrefixFrom(twinLink4(k, 0), 24) }
func twinPrefix6(k int) netip.Prefix { return netip.PrefixFrom(twinLink6(k, 0), 64) }

// node is one namespace of the chain and everything needed to configure it.
type node struct {
	ns      string
	role    string   // "client", "router" or "server"
	sysctls []string // key=value, applied with sysctl -w after the ruleset
	ruleset string   // nft ruleset (routers only), loaded before the sysctls
	ipBatch []string // `ip -n ns -batch -` lines: addresses, links up, routes
}

// topology is the full plan of a lab: pure data, built by planTopology.
type topology struct {
	rootBatch  []string // `ip -batch -` lines run in the root namespace
	nodes      []node   // client, routers..., server
	clientNS   string
	serverNS   string
	routerNS   []string
	detourNS   []string       // Router.ReturnDetour's extra routers (lab/attrib.go)
	injectors  []injectorPlan // Router.InjectRST's processes (lab/inject.go)
	client4    netip.Addr
	client6    netip.Addr
	server4    netip.Addr
	server6    netip.Addr
	router4    []netip.Addr
	router6    []netip.Addr
	twinNS     string // ECMP twin of router Scenario.ECMPRouter, "" none
	twin4      netip.Addr
	twin6      netip.Addr
	afterTwin4 netip.Addr
	afterTwin6 netip.Addr
	// serverExtra4/6: Server.ExtraAddresses.
	serverExtra4, serverExtra6 []netip.Addr
}

// namespaceName names node index idx (0 = client, N+1 = server) of lab id.
func namespaceName(id string, idx, routers int) string {
	switch idx {
	case 0:
		return id + "-c"
	case routers + 1:
		return id + "-s"
	default:
		return id + "-r" + strconv.Itoa(idx)
	}
}

// validateScenario reports the first invalid knob, naming it.
func validateScenario(sc Scenario) error {
	if len(sc.Routers) > maxRouters {
		return fmt.Errorf("scenario %q: %d routers, at most %d", sc.Name, len(sc.Routers), maxRouters)
	}
	if sc.Server.ExtraAddresses < 0 || sc.Server.ExtraAddresses > 200 {
		return fmt.Errorf("scenario %q: server ExtraAddresses %d outside 0..200", sc.Name, sc.Server.ExtraAddresses)
	}
	if sc.ECMPRouter != 0 && (sc.ECMPRouter < 2 || sc.ECMPRouter > len(sc.Routers)) {
		// Router k-1 splits the flows: router 1's twin would need the client to.
		return fmt.Errorf("scenario %q: ECMPRouter %d outside 2..%d (the number of routers)", sc.Name, sc.ECMPRouter, len(sc.Routers))
	}
	for i, r := range sc.Routers {
		where := fmt.Sprintf("scenario %q router %d", sc.Name, i+1)
		switch {
		case r.ICMPRateLimit < 0:
			return fmt.Errorf("%s: ICMPRateLimit %d is negative", where, r.ICMPRateLimit)
		case r.ICMPBurst < 0 || (r.ICMPBurst > 0 && r.ICMPRateLimit == 0):
			return fmt.Errorf("%s: ICMPBurst %d needs a positive ICMPRateLimit", where, r.ICMPBurst)
		case r.ICMPEveryNth < 0:
			return fmt.Errorf("%s: ICMPEveryNth %d is negative", where, r.ICMPEveryNth)
		case r.IdleTimeout < 0:
			return fmt.Errorf("%s: IdleTimeout %v is negative", where, r.IdleTimeout)
		case r.IdleAction != "" && r.IdleAction != IdleActionReset && r.IdleAction != IdleActionDrop:
			return fmt.Errorf("%s: IdleAction %q is neither %q nor %q", where, r.IdleAction, IdleActionReset, IdleActionDrop)
		case r.IdleAction != "" && r.IdleTimeout == 0:
			return fmt.Errorf("%s: IdleAction %q needs an IdleTimeout", where, r.IdleAction)
		case r.LinkMTU != 0 && (r.LinkMTU < 1280 || r.LinkMTU > 65535):
			// Below 1280 the kernel removes IPv6 from the interface.
			return fmt.Errorf("%s: LinkMTU %d outside 1280..65535", where, r.LinkMTU)
		case r.MSSClamp != 0 && (r.MSSClamp < 88 || r.MSSClamp > 65495):
			return fmt.Errorf("%s: MSSClamp %d outside 88..65495", where, r.MSSClamp)
		case r.SYNResetPercent < 0 || r.SYNResetPercent > 100:
			return fmt.Errorf("%s: SYNResetPercent %d outside 0..100", where, r.SYNResetPercent)
		case r.ResetAfterBytes < 0:
			return fmt.Errorf("%s: ResetAfterBytes %d is negative", where, r.ResetAfterBytes)
		}
	}
	s := sc.Server
	for _, p := range []struct {
		name string
		v    int
	}{{"HTTPSPort", s.HTTPSPort}, {"AMQPPort", s.AMQPPort}, {"EchoPort", s.EchoPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("scenario %q server: %s %d outside 1..65535", sc.Name, p.name, p.v)
		}
	}
	if s.IdleClose < 0 || s.MaxConns < 0 || s.LargeSize < 0 {
		return fmt.Errorf("scenario %q server: IdleClose, MaxConns and LargeSize must not be negative", sc.Name)
	}
	return nil
}

// planTopology computes namespaces, veths, addresses, routes, sysctls and
// rulesets of the chain client → routers → server. It runs nothing.
func planTopology(id string, sc Scenario) (topology, error) {
	if err := validateScenario(sc); err != nil {
		return topology{}, err
	}
	if err := validateAttrib(sc); err != nil {
		return topology{}, err
	}
	if err := validateInject(sc); err != nil {
		return topology{}, err
	}
	n := len(sc.Routers)
	tw := sc.ECMPRouter // 0: no twin
	t := topology{}
	names := make([]string, n+2)
	for idx := range names {
		names[idx] = namespaceName(id, idx, n)
		t.rootBatch = append(t.rootBatch, "netns add "+names[idx])
	}
	for k := 0; k <= n; k++ {
		// Distinct ifindexes on the two ends: in fresh namespaces both would
		// get index 2, and the kernel's linkwatch then treats the veth as
		// not "urgent" and reports carrier up to a second late, during
		// which IPv6 on it has no link-local address and loses packets.
		t.rootBatch = append(t.rootBatch, fmt.Sprintf("link add name %s index %d netns %s type veth peer name %s index %d netns %s",
			ifToServer, ifIndexToServer+k, names[k], ifToClient, ifIndexToClient+k, names[k+1]))
	}
	t.clientNS, t.serverNS = names[0], names[n+1]
	t.routerNS = names[1 : n+1]
	t.client4, t.client6 = link4(0, 1), link6(0, 1)
	t.server4, t.server6 = link4(n, 2), link6(n, 2)
	for i := 1; i <= n; i++ {
		t.router4 = append(t.router4, link4(i-1, 2))
		t.router6 = append(t.router6, link6(i-1, 2))
	}

	for idx := 0; idx <= n+1; idx++ {
		nd := node{ns: names[idx]}
		var ifaces []string
		b := []string{"link set lo up"}
		if idx > 0 { // left link idx-1: this node is its right side
			k := idx - 1
			ifaces = append(ifaces, ifToClient)
			b = append(b,
				fmt.Sprintf("addr add %s/24 dev %s", link4(k, 2), ifToClient),
				fmt.Sprintf("addr add %s/64 dev %s nodad", link6(k, 2), ifToClient))
			up := "link set " + ifToClient + " up"
			if k > 0 && sc.Routers[k-1].LinkMTU > 0 { // the router on the left owns this link's MTU
				up = fmt.Sprintf("link set %s mtu %d up", ifToClient, sc.Routers[k-1].LinkMTU)
			}
			b = append(b, up)
		}
		if idx <= n { // right link idx: this node is its left side
			k := idx
			ifaces = append(ifaces, ifToServer)
			b = append(b,
				fmt.Sprintf("addr add %s/24 dev %s", link4(k, 1), ifToServer),
				fmt.Sprintf("addr add %s/64 dev %s nodad", link6(k, 1), ifToServer))
			up := "link set " + ifToServer + " up"
			if idx > 0 && sc.Routers[idx-1].LinkMTU > 0 {
				up = fmt.Sprintf("link set %s mtu %d up", ifToServer, sc.Routers[idx-1].LinkMTU)
			}
			b = append(b, up)
		}
		nd.sysctls = nodeSysctls(ifaces)
		switch idx {
		case 0:
			nd.role = "client"
			b = append(b,
				fmt.Sprintf("route add default via %s", link4(0, 2)),
				fmt.Sprintf("route add default via %s", link6(0, 2)))
		case n + 1:
			nd.role = "server"
			b = append(b,
				fmt.Sprintf("route add default via %s", link4(n, 1)),
				fmt.Sprintf("route add default via %s", link6(n, 1)))
			for e := 0; e < sc.Server.ExtraAddresses; e++ {
				a4, a6 := link4(n, 3+e), link6(n, 3+e)
				t.serverExtra4, t.serverExtra6 = append(t.serverExtra4, a4), append(t.serverExtra6, a6)
				b = append(b, fmt.Sprintf("addr add %s/24 dev %s", a4, ifToClient),
					fmt.Sprintf("addr add %s/64 dev %s nodad", a6, ifToClient))
			}
		default:
			nd.role = "router"
			r := sc.Routers[idx-1]
			nd.ruleset = routerRuleset(r)
			nd.sysctls = append(nd.sysctls, routerSysctls(r)...)
			for k := 0; k <= n; k++ {
				switch {
				case k < idx-1: // behind the left neighbour
					b = append(b,
						fmt.Sprintf("route add %s via %s", linkPrefix4(k), link4(idx-1, 1)),
						fmt.Sprintf("route add %s via %s", linkPrefix6(k), link6(idx-1, 1)))
				case k > idx && tw == idx+1: // behind the right neighbour and its twin
					b = append(b,
						fmt.Sprintf("route add %s nexthop via %s nexthop via %s", linkPrefix4(k), link4(idx, 2), twinLink4(idx, 2)),
						fmt.Sprintf("route add %s nexthop via %s nexthop via %s", linkPrefix6(k), link6(idx, 2), twinLink6(idx, 2)))
				case k > idx: // behind the right neighbour
					b = append(b,
						fmt.Sprintf("route add %s via %s", linkPrefix4(k), link4(idx, 2)),
						fmt.Sprintf("route add %s via %s", linkPrefix6(k), link6(idx, 2)))
				}
			}
		}
		nd.ipBatch = b
		t.nodes = append(t.nodes, nd)
	}
	if tw > 0 {
		planTwin(&t, sc, id, names)
	}
	planAttrib(&t, sc, id)
	planInject(&t, sc)
	return t, nil
}

// nodeSysctls are the sysctls of every node with lab interfaces ifaces.
func nodeSysctls(ifaces []string) []string {
	out := []string{
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0"}
	for _, ifc := range ifaces {
		out = append(out, "net.ipv6.conf."+ifc+".accept_dad=0")
	}
	// The kernel's default ICMP rate limits (per destination: a burst of
	// about 6, then 1/s) stay on, as on real routers: the engine must cope
	// with them. ICMPRateLimit adds an nft limit on top.
	return out
}

// routerSysctls are a router's own sysctls: forwarding and its knobs'.
func routerSysctls(r Router) []string {
	out := []string{
		"net.ipv4.ip_forward=1",
		"net.ipv6.conf.all.forwarding=1"}
	if r.IdleTimeout > 0 {
		out = append(out,
			"net.netfilter.nf_conntrack_tcp_timeout_established="+strconv.Itoa(idleSeconds(r.IdleTimeout)),
			"net.netfilter.nf_conntrack_tcp_loose=0")
	}
	if r.ResetAfterBytes > 0 {
		// ct bytes reads conntrack's per-flow counters, which exist only
		// for flows created while accounting is on (nft turns it on for
		// such a rule on recent kernels; older ones need this).
		out = append(out, "net.netfilter.nf_conntrack_acct=1")
	}
	return out
}

// planTwin adds the ECMP twin of router k = sc.ECMPRouter to a planned
// chain: its namespace and two links (from router k-1, to node k+1), the
// split at router k-1 (its ECMP routes are planned with the chain), hashing
// on the 5-tuple there, and routes to the twin's links everywhere.
func planTwin(t *topology, sc Scenario, id string, names []string) {
	k := sc.ECMPRouter
	n := len(sc.Routers)
	t.twinNS = id + "-r" + strconv.Itoa(k) + "b"
	t.twin4, t.twin6 = twinLink4(k-1, 2), twinLink6(k-1, 2)
	t.afterTwin4, t.afterTwin6 = twinLink4(k, 2), twinLink6(k, 2)
	t.rootBatch = append(t.rootBatch,
		"netns add "+t.twinNS,
		fmt.Sprintf("link add name %s index %d netns %s type veth peer name %s index %d netns %s",
			ifToServerB, ifIndexTwinToServer+k-1, names[k-1], ifToClient, ifIndexTwinToClient+k-1, t.twinNS),
		fmt.Sprintf("link add name %s index %d netns %s type veth peer name %s index %d netns %s",
			ifToServer, ifIndexTwinToServer+k, t.twinNS, ifToClientB, ifIndexTwinToClient+k, names[k+1]))

	// The links' own ends: router k-1 and node k+1.
	before, after := &t.nodes[k-1], &t.nodes[k+1]
	upB, upTwinLeft := "link set "+ifToServerB+" up", "link set "+ifToClient+" up"
	if mtu := sc.Routers[k-2].LinkMTU; mtu > 0 { // router k-1 owns its links' MTU
		upB = fmt.Sprintf("link set %s mtu %d up", ifToServerB, mtu)
		upTwinLeft = fmt.Sprintf("link set %s mtu %d up", ifToClient, mtu)
	}
	// Before its routes: the ECMP routes' second next hop is on this link.
	firstRoute := slices.IndexFunc(before.ipBatch, func(l string) bool { return strings.HasPrefix(l, "route ") })
	if firstRoute < 0 {
		firstRoute = len(before.ipBatch)
	}
	before.ipBatch = slices.Insert(before.ipBatch, firstRoute,
		fmt.Sprintf("addr add %s/24 dev %s", twinLink4(k-1, 1), ifToServerB),
		fmt.Sprintf("addr add %s/64 dev %s nodad", twinLink6(k-1, 1), ifToServerB),
		upB)
	before.ipBatch = append(before.ipBatch,
		fmt.Sprintf("route add %s via %s", twinPrefix4(k), twinLink4(k-1, 2)),
		fmt.Sprintf("route add %s via %s", twinPrefix6(k), twinLink6(k-1, 2)))
	// Different source ports must be able to take different paths.
	before.sysctls = append(before.sysctls, "net.ipv6.conf."+ifToServerB+".accept_dad=0",
		"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1")
	upAfter := "link set " + ifToClientB + " up"
	if mtu := sc.Routers[k-1].LinkMTU; mtu > 0 { // the twin has router k's knobs
		upAfter = fmt.Sprintf("link set %s mtu %d up", ifToClientB, mtu)
	}
	after.ipBatch = append(after.ipBatch,
		fmt.Sprintf("addr add %s/24 dev %s", twinLink4(k, 2), ifToClientB),
		fmt.Sprintf("addr add %s/64 dev %s nodad", twinLink6(k, 2), ifToClientB),
		upAfter)
	// Packets from the client arrive through the twin while the route
	// back to the client is through router k: no strict reverse-path filter.
	after.sysctls = append(after.sysctls, "net.ipv6.conf."+ifToClientB+".accept_dad=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+ifToClientB+".rp_filter=0")
	if k+1 <= n { // a router; the server's default route covers the twin
		after.ipBatch = append(after.ipBatch,
			fmt.Sprintf("route add %s via %s", twinPrefix4(k-1), twinLink4(k, 1)),
			fmt.Sprintf("route add %s via %s", twinPrefix6(k-1), twinLink6(k, 1)))
	}
	// Every other router reaches the twin's links through its neighbour on
	// the twin's side (router k: both sides).
	for idx := 1; idx <= n; idx++ {
		if idx == k-1 || idx == k+1 {
			continue
		}
		nd := &t.nodes[idx]
		for _, tl := range []int{k - 1, k} {
			gw4, gw6 := link4(idx-1, 1), link6(idx-1, 1) // left neighbour
			if idx < k || (idx == k && tl == k) {
				gw4, gw6 = link4(idx, 2), link6(idx, 2) // right neighbour
			}
			nd.ipBatch = append(nd.ipBatch,
				fmt.Sprintf("route add %s via %s", twinPrefix4(tl), gw4),
				fmt.Sprintf("route add %s via %s", twinPrefix6(tl), gw6))
		}
	}

	// The twin: router k's knobs, links k-1 and before to the left, k and
	// after to the right.
	r := sc.Routers[k-1]
	twin := node{ns: t.twinNS, role: "router", ruleset: routerRuleset(r)}
	twin.ipBatch = []string{"link set lo up",
		fmt.Sprintf("addr add %s/24 dev %s", twinLink4(k-1, 2), ifToClient),
		fmt.Sprintf("addr add %s/64 dev %s nodad", twinLink6(k-1, 2), ifToClient),
		upTwinLeft,
		fmt.Sprintf("addr add %s/24 dev %s", twinLink4(k, 1), ifToServer),
		fmt.Sprintf("addr add %s/64 dev %s nodad", twinLink6(k, 1), ifToServer),
	}
	if r.LinkMTU > 0 {
		twin.ipBatch = append(twin.ipBatch, fmt.Sprintf("link set %s mtu %d up", ifToServer, r.LinkMTU))
	} else {
		twin.ipBatch = append(twin.ipBatch, "link set "+ifToServer+" up")
	}
	for l := 0; l <= n; l++ {
		gw4, gw6 := twinLink4(k-1, 1), twinLink6(k-1, 1)
		if l >= k {
			gw4, gw6 = twinLink4(k, 2), twinLink6(k, 2)
		}
		twin.ipBatch = append(twin.ipBatch,
			fmt.Sprintf("route add %s via %s", linkPrefix4(l), gw4),
			fmt.Sprintf("route add %s via %s", linkPrefix6(l), gw6))
	}
	twin.sysctls = append(nodeSysctls([]string{ifToClient, ifToServer}), routerSysctls(r)...)
	t.nodes = append(t.nodes, twin)
}

// idleSeconds rounds an idle timeout up to whole seconds (conntrack's unit),
// at least 1.
func idleSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// resetAfterBytesMark is the conntrack mark of a flow that
// Router.ResetAfterBytes has reset toward the client.
const resetAfterBytesMark = 0x68630001 // "hc" 1

// ICMP error types, as nft names them. Neighbour discovery (133-137) is
// deliberately absent so that IPv6 keeps working on a NoICMP router.
const (
	icmp4Errors = "{ destination-unreachable, source-quench, redirect, time-exceeded, parameter-problem }"
	icmp6Errors = "{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem }"
)

// icmpBurst is the burst of a router's ICMP rate limit.
func icmpBurst(r Router) int {
	if r.ICMPBurst > 0 {
		return r.ICMPBurst
	}
	return r.ICMPRateLimit
}

// routerRuleset renders the nft ruleset of one router: all knobs in one
// `table inet hopcheck`.
func routerRuleset(r Router) string {
	var sb strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	w("table inet hopcheck {")
	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy accept;")
	// A ct expression makes conntrack track this namespace's flows. With
	// tcp_loose=0 a packet of an expired flow has no entry and is "invalid".
	switch {
	case r.IdleTimeout > 0 && r.IdleAction == IdleActionReset:
		w("\t\tmeta l4proto tcp ct state invalid reject with tcp reset")
	case r.IdleTimeout > 0:
		w("\t\tmeta l4proto tcp ct state invalid drop")
	default:
		w("\t\tct state invalid counter")
	}
	if r.DropTCPPort != 0 {
		// Client to server only: replies to an ephemeral port that happens
		// to equal DropTCPPort must pass.
		w("\t\tiifname %q tcp dport %d drop", ifToClient, r.DropTCPPort)
	}
	switch {
	case r.SYNResetPercent >= 100: // nft: "numgen random mod 100 < 100" is out of range
		w("\t\ttcp flags & (syn | ack) == syn reject with tcp reset")
	case r.SYNResetPercent > 0:
		// Only connection-opening SYNs (not SYN-ACKs).
		w("\t\ttcp flags & (syn | ack) == syn numgen random mod 100 < %d reject with tcp reset", r.SYNResetPercent)
	}
	if r.ResetAfterBytes > 0 {
		// nft can only reset the sender of a packet. The client's packets
		// (its ACKs keep coming while data flows) draw the reset, which
		// marks the flow; the server's packets of a marked flow draw one
		// too, so both ends are reset, as by an inspecting firewall. Only
		// the client side is tied to the byte count: were the server reset
		// first, a client with nothing to send would never hear of it.
		w("\t\tmeta l4proto tcp ct direction original ct bytes > %d ct mark set 0x%08x reject with tcp reset", r.ResetAfterBytes, resetAfterBytesMark)
		w("\t\tmeta l4proto tcp ct direction reply ct mark 0x%08x reject with tcp reset", resetAfterBytesMark)
	}
	if r.MSSClamp > 0 {
		// SYN and SYN-ACK, as an MSS-clamping middlebox does.
		w("\t\ttcp flags syn tcp option maxseg size set %d", r.MSSClamp)
	}
	w("\t}")
	if r.NoICMP || r.HideFragNeeded || r.ICMPRateLimit > 0 {
		w("\tchain output {")
		w("\t\ttype filter hook output priority filter; policy accept;")
		if r.NoICMP {
			w("\t\ticmp type %s drop", icmp4Errors)
			w("\t\ticmpv6 type %s drop", icmp6Errors)
		}
		if r.HideFragNeeded {
			w("\t\ticmp type destination-unreachable icmp code frag-needed drop")
			w("\t\ticmpv6 type packet-too-big drop")
		}
		if r.ICMPRateLimit > 0 {
			// One chain with one limit: both families share the budget.
			w("\t\ticmp type %s jump icmp_error_limit", icmp4Errors)
			w("\t\ticmpv6 type %s jump icmp_error_limit", icmp6Errors)
		}
		w("\t}")
		if r.ICMPRateLimit > 0 {
			w("\tchain icmp_error_limit {")
			w("\t\tlimit rate over %d/second burst %d packets drop", r.ICMPRateLimit, icmpBurst(r))
			w("\t}")
		}
	}
	if r.ICMPEveryNth > 1 {
		// Its own output chain: one ICMP error in N leaves, whatever the
		// pace of the probes.
		w("\tchain icmp_every_nth {")
		w("\t\ttype filter hook output priority filter + 1; policy accept;")
		w("\t\ticmp type %s numgen inc mod %d != 0 drop", icmp4Errors, r.ICMPEveryNth)
		w("\t\ticmpv6 type %s numgen inc mod %d != 0 drop", icmp6Errors, r.ICMPEveryNth)
		w("\t}")
	}
	if r.Masquerade {
		w("\tchain postrouting {")
		w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
		w("\t\toifname %q masquerade", ifToServer)
		w("\t}")
	}
	w("}")
	return sb.String()
}
