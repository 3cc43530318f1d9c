package lab

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLinkAddresses(t *testing.T) {
	tests := []struct {
		got  netip.Addr
		want string
	}{
		{link4(0, 1), "198.18.0.1"},
		{link4(6, 2), "198.18.6.2"},
		{link6(0, 1), "2001:db8::1"},
		{link6(6, 2), "2001:db8:0:6::2"},
		{link6(10, 2), "2001:db8:0:a::2"},
	}
	for _, tc := range tests {
		if tc.got.String() != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	if p := linkPrefix6(3).String(); p != "2001:db8:0:3::/64" {
		t.Errorf("linkPrefix6(3) = %s", p)
	}
}

func TestPlanTopologyChain(t *testing.T) {
	sc := Scenario{Name: "t", Routers: []Router{{}, {LinkMTU: 1400}, {IdleTimeout: 2500 * time.Millisecond, IdleAction: "reset"}}}
	topo, err := planTopology("hc1x0abc", sc)
	if err != nil {
		t.Fatal(err)
	}
	if topo.clientNS != "hc1x0abc-c" || topo.serverNS != "hc1x0abc-s" ||
		!slices.Equal(topo.routerNS, []string{"hc1x0abc-r1", "hc1x0abc-r2", "hc1x0abc-r3"}) {
		t.Fatalf("names: %s %v %s", topo.clientNS, topo.routerNS, topo.serverNS)
	}
	wantRoot := []string{
		"netns add hc1x0abc-c", "netns add hc1x0abc-r1", "netns add hc1x0abc-r2", "netns add hc1x0abc-r3", "netns add hc1x0abc-s",
		"link add name toserver index 1000 netns hc1x0abc-c type veth peer name toclient index 2000 netns hc1x0abc-r1",
		"link add name toserver index 1001 netns hc1x0abc-r1 type veth peer name toclient index 2001 netns hc1x0abc-r2",
		"link add name toserver index 1002 netns hc1x0abc-r2 type veth peer name toclient index 2002 netns hc1x0abc-r3",
		"link add name toserver index 1003 netns hc1x0abc-r3 type veth peer name toclient index 2003 netns hc1x0abc-s",
	}
	if !slices.Equal(topo.rootBatch, wantRoot) {
		t.Errorf("root batch:\n%s", strings.Join(topo.rootBatch, "\n"))
	}
	if topo.server4.String() != "198.18.3.2" || topo.server6.String() != "2001:db8:0:3::2" ||
		topo.client4.String() != "198.18.0.1" || topo.client6.String() != "2001:db8::1" {
		t.Errorf("endpoints: %v %v %v %v", topo.client4, topo.client6, topo.server4, topo.server6)
	}
	if got := addrStrings(topo.router4); !slices.Equal(got, []string{"198.18.0.2", "198.18.1.2", "198.18.2.2"}) {
		t.Errorf("router4 = %v", got)
	}
	if got := addrStrings(topo.router6); !slices.Equal(got, []string{"2001:db8::2", "2001:db8:0:1::2", "2001:db8:0:2::2"}) {
		t.Errorf("router6 = %v", got)
	}

	r2 := topo.nodes[2] // router 2: left link 1, right link 2 (MTU 1400 toward the server)
	mustContain(t, r2.ipBatch,
		"addr add 198.18.1.2/24 dev toclient",
		"addr add 2001:db8:0:1::2/64 dev toclient nodad",
		"link set toclient up",
		"addr add 198.18.2.1/24 dev toserver",
		"link set toserver mtu 1400 up",
		"route add 198.18.0.0/24 via 198.18.1.1",
		"route add 2001:db8::/64 via 2001:db8:0:1::1",
		"route add 198.18.3.0/24 via 198.18.2.2",
		"route add 2001:db8:0:3::/64 via 2001:db8:0:2::2")
	mustContain(t, topo.nodes[3].ipBatch, "link set toclient mtu 1400 up") // the other end of that link
	mustContain(t, r2.sysctls, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv6.conf.toclient.accept_dad=0", "net.ipv6.conf.toserver.accept_dad=0")
	for _, nd := range topo.nodes {
		for _, s := range nd.sysctls {
			if strings.Contains(s, "icmp") {
				t.Errorf("%s: the lab must keep the kernel's ICMP rate limits, got %q", nd.ns, s)
			}
		}
	}
	mustContain(t, topo.nodes[3].sysctls,
		"net.netfilter.nf_conntrack_tcp_timeout_established=3", "net.netfilter.nf_conntrack_tcp_loose=0")
	if slices.ContainsFunc(r2.sysctls, func(s string) bool { return strings.Contains(s, "nf_conntrack") }) {
		t.Errorf("router without IdleTimeout got conntrack sysctls: %v", r2.sysctls)
	}
	mustContain(t, topo.nodes[0].ipBatch, "route add default via 198.18.0.2", "route add default via 2001:db8::2")
	mustContain(t, topo.nodes[4].ipBatch, "route add default via 198.18.3.1", "route add default via 2001:db8:0:3::1")
	if topo.nodes[0].ruleset != "" || topo.nodes[4].ruleset != "" {
		t.Error("client or server got an nft ruleset")
	}
	for _, nd := range topo.nodes {
		if slices.Contains(nd.sysctls, "net.ipv4.ip_forward=1") != (nd.role == "router") {
			t.Errorf("%s: forwarding only on routers: %v", nd.ns, nd.sysctls)
		}
	}
}

func TestPlanTopologyNoRouters(t *testing.T) {
	topo, err := planTopology("hc1x0abc", Scenario{})
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.nodes) != 2 || topo.server4.String() != "198.18.0.2" {
		t.Fatalf("nodes %d server %v", len(topo.nodes), topo.server4)
	}
	mustContain(t, topo.nodes[1].ipBatch, "route add default via 198.18.0.1")
}

func TestPlanTopologyResetAfterBytesTurnsOnAccounting(t *testing.T) {
	topo, err := planTopology("hc1x0abc", Scenario{Routers: []Router{{}, {ResetAfterBytes: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, topo.nodes[2].sysctls, "net.netfilter.nf_conntrack_acct=1")
	if slices.Contains(topo.nodes[1].sysctls, "net.netfilter.nf_conntrack_acct=1") {
		t.Errorf("router without ResetAfterBytes got conntrack accounting: %v", topo.nodes[1].sysctls)
	}
}

func TestPlanTopologyECMPTwin(t *testing.T) {
	sc := Scenario{Routers: make([]Router, 4), ECMPRouter: 2}
	sc.Routers[1].NoICMP = true // the twin gets router 2's knobs
	topo, err := planTopology("hc1x0abc", sc)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := planTopology("hc1x0abc", Scenario{Routers: sc.Routers})
	if err != nil {
		t.Fatal(err)
	}
	// The chain is planned as without a twin, then the twin is added.
	if !slices.Equal(topo.rootBatch[:len(plain.rootBatch)], plain.rootBatch) {
		t.Errorf("root batch of the chain changed:\n%s", strings.Join(topo.rootBatch, "\n"))
	}
	if got := topo.rootBatch[len(plain.rootBatch):]; !slices.Equal(got, []string{
		"netns add hc1x0abc-r2b",
		"link add name toserverb index 3001 netns hc1x0abc-r1 type veth peer name toclient index 4001 netns hc1x0abc-r2b",
		"link add name toserver index 3002 netns hc1x0abc-r2b type veth peer name toclientb index 4002 netns hc1x0abc-r3",
	}) {
		t.Errorf("twin root batch:\n%s", strings.Join(got, "\n"))
	}
	if topo.twinNS != "hc1x0abc-r2b" || topo.twin4.String() != "198.19.1.2" || topo.twin6.String() != "2001:db8:1:1::2" ||
		topo.afterTwin4.String() != "198.19.2.2" || topo.afterTwin6.String() != "2001:db8:1:2::2" {
		t.Errorf("twin %s %s %s, after it %s %s", topo.twinNS, topo.twin4, topo.twin6, topo.afterTwin4, topo.afterTwin6)
	}
	if len(topo.nodes) != 7 || topo.nodes[6].ns != "hc1x0abc-r2b" || topo.nodes[6].role != "router" || topo.nodes[6].ruleset != topo.nodes[2].ruleset {
		t.Fatalf("%d nodes, last %+v", len(topo.nodes), topo.nodes[len(topo.nodes)-1])
	}

	r1 := topo.nodes[1] // splits: every link beyond router 2 over both
	mustContain(t, r1.ipBatch,
		"addr add 198.19.1.1/24 dev toserverb", "addr add 2001:db8:1:1::1/64 dev toserverb nodad", "link set toserverb up",
		"route add 198.18.2.0/24 nexthop via 198.18.1.2 nexthop via 198.19.1.2",
		"route add 198.18.4.0/24 nexthop via 198.18.1.2 nexthop via 198.19.1.2",
		"route add 2001:db8:0:4::/64 nexthop via 2001:db8:0:1::2 nexthop via 2001:db8:1:1::2",
		"route add 198.19.2.0/24 via 198.19.1.2", "route add 2001:db8:1:2::/64 via 2001:db8:1:1::2")
	if i, j := slices.Index(r1.ipBatch, "link set toserverb up"), slices.IndexFunc(r1.ipBatch, func(l string) bool { return strings.HasPrefix(l, "route ") }); i > j {
		t.Errorf("router 1 routes over the twin link before it is up:\n%s", strings.Join(r1.ipBatch, "\n"))
	}
	mustContain(t, r1.sysctls, "net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1", "net.ipv6.conf.toserverb.accept_dad=0")
	mustContain(t, topo.nodes[2].ipBatch, "route add 198.19.1.0/24 via 198.18.1.1", "route add 198.19.2.0/24 via 198.18.2.2",
		"route add 198.18.3.0/24 via 198.18.2.2") // router 2 itself stays single-path
	mustContain(t, topo.nodes[3].ipBatch, "addr add 198.19.2.2/24 dev toclientb", "link set toclientb up",
		"route add 198.19.1.0/24 via 198.19.2.1", "route add 2001:db8:1:1::/64 via 2001:db8:1:2::1",
		"route add 198.18.0.0/24 via 198.18.2.1") // replies go back through router 2
	mustContain(t, topo.nodes[3].sysctls, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.toclientb.rp_filter=0")
	mustContain(t, topo.nodes[4].ipBatch, "route add 198.19.1.0/24 via 198.18.3.1", "route add 2001:db8:1:2::/64 via 2001:db8:0:3::1")
	twin := topo.nodes[6]
	mustContain(t, twin.ipBatch,
		"addr add 198.19.1.2/24 dev toclient", "addr add 198.19.2.1/24 dev toserver", "addr add 2001:db8:1:2::1/64 dev toserver nodad",
		"route add 198.18.0.0/24 via 198.19.1.1", "route add 198.18.1.0/24 via 198.19.1.1",
		"route add 198.18.2.0/24 via 198.19.2.2", "route add 198.18.4.0/24 via 198.19.2.2", "route add 2001:db8:0:4::/64 via 2001:db8:1:2::2")
	mustContain(t, twin.sysctls, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for _, nd := range plain.nodes {
		for _, l := range append(append([]string{}, nd.ipBatch...), nd.sysctls...) {
			if strings.Contains(l, "nexthop") || strings.Contains(l, "198.19.") || strings.Contains(l, "2001:db8:1:") || strings.Contains(l, "multipath") {
				t.Errorf("%s: twin configuration without a twin: %q", nd.ns, l)
			}
		}
	}

	// The last router's twin joins the server, whose default route covers it.
	last, err := planTopology("hc1x0abc", Scenario{Routers: make([]Router, 2), ECMPRouter: 2})
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, last.nodes[3].ipBatch, "addr add 198.19.2.2/24 dev toclientb", "route add default via 198.18.2.1")
}

func TestValidateScenario(t *testing.T) {
	tests := []struct {
		name string
		r    Router
		s    Server
		want string // substring of the error; "" = valid
	}{
		{"zero", Router{}, Server{}, ""},
		{"all knobs", Router{NoICMP: true, ICMPRateLimit: 5, DropTCPPort: 443, IdleTimeout: time.Second, IdleAction: "reset",
			LinkMTU: 1280, HideFragNeeded: true, MSSClamp: 1200, Masquerade: true, SYNResetPercent: 100, ResetAfterBytes: 1}, Server{}, ""},
		{"idle action typo", Router{IdleTimeout: time.Second, IdleAction: "rst"}, Server{}, `IdleAction "rst"`},
		{"idle action without timeout", Router{IdleAction: "drop"}, Server{}, "needs an IdleTimeout"},
		{"mtu below v6 minimum", Router{LinkMTU: 1000}, Server{}, "LinkMTU 1000"},
		{"syn percent", Router{SYNResetPercent: 101}, Server{}, "SYNResetPercent 101"},
		{"negative rate", Router{ICMPRateLimit: -1}, Server{}, "ICMPRateLimit -1"},
		{"burst without rate", Router{ICMPBurst: 3}, Server{}, "ICMPBurst 3"},
		{"negative every nth", Router{ICMPEveryNth: -2}, Server{}, "ICMPEveryNth -2"},
		{"mss", Router{MSSClamp: 40}, Server{}, "MSSClamp 40"},
		{"negative byte limit", Router{ResetAfterBytes: -1}, Server{}, "ResetAfterBytes -1"},
		{"port", Router{}, Server{EchoPort: 70000}, "EchoPort 70000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateScenario(Scenario{Name: "v", Routers: []Router{tc.r}, Server: tc.s})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateECMPRouter(t *testing.T) {
	for _, c := range []struct {
		k    int
		want string
	}{{0, ""}, {2, ""}, {3, ""}, {1, "ECMPRouter 1 outside 2..3"}, {4, "ECMPRouter 4"}, {-1, "ECMPRouter -1"}} {
		err := validateScenario(Scenario{Name: "v", Routers: make([]Router, 3), ECMPRouter: c.k})
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("ECMPRouter %d: error %v, want %q", c.k, err, c.want)
		}
	}
}

func TestRouterRuleset(t *testing.T) {
	tests := []struct {
		name    string
		r       Router
		want    []string
		notWant []string
	}{
		{"plain keeps conntrack on", Router{},
			[]string{"table inet hopcheck {", "hook forward", "ct state invalid counter"},
			[]string{"chain output", "masquerade", "ct bytes", "ct mark"}},
		{"no icmp spares neighbour discovery", Router{NoICMP: true},
			[]string{"icmp type { destination-unreachable, source-quench, redirect, time-exceeded, parameter-problem } drop",
				"icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } drop"},
			[]string{"nd-neighbor", "echo"}},
		{"rate limit shared by both families", Router{ICMPRateLimit: 3},
			[]string{"jump icmp_error_limit", "limit rate over 3/second burst 3 packets drop"}, nil},
		{"a few answers per second", Router{ICMPRateLimit: 2, ICMPBurst: 3},
			[]string{"limit rate over 2/second burst 3 packets drop"}, nil},
		{"every third icmp error", Router{ICMPEveryNth: 3},
			[]string{"chain icmp_every_nth {", "hook output priority filter + 1",
				"icmp type { destination-unreachable, source-quench, redirect, time-exceeded, parameter-problem } numgen inc mod 3 != 0 drop",
				"icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } numgen inc mod 3 != 0 drop"}, nil},
		{"drop port", Router{DropTCPPort: 8443}, []string{`iifname "toclient" tcp dport 8443 drop`}, nil},
		{"idle reset", Router{IdleTimeout: time.Second, IdleAction: "reset"},
			[]string{"meta l4proto tcp ct state invalid reject with tcp reset"}, []string{"ct state invalid counter"}},
		{"idle drop is the default", Router{IdleTimeout: time.Second},
			[]string{"meta l4proto tcp ct state invalid drop"}, nil},
		{"hide frag needed", Router{HideFragNeeded: true},
			[]string{"icmp type destination-unreachable icmp code frag-needed drop", "icmpv6 type packet-too-big drop"}, nil},
		{"mss clamp", Router{MSSClamp: 1200}, []string{"tcp flags syn tcp option maxseg size set 1200"}, nil},
		{"masquerade", Router{Masquerade: true}, []string{"hook postrouting priority srcnat", `oifname "toserver" masquerade`}, nil},
		{"syn reset", Router{SYNResetPercent: 30},
			[]string{"tcp flags & (syn | ack) == syn numgen random mod 100 < 30 reject with tcp reset"}, nil},
		{"reset after bytes: the client's packets by count, the server's once marked", Router{ResetAfterBytes: 1 << 20},
			[]string{"meta l4proto tcp ct direction original ct bytes > 1048576 ct mark set 0x68630001 reject with tcp reset",
				"meta l4proto tcp ct direction reply ct mark 0x68630001 reject with tcp reset"},
			[]string{"ct direction reply ct bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := routerRuleset(tc.r)
			for _, w := range tc.want {
				if !strings.Contains(rs, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, rs)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(rs, w) {
					t.Errorf("ruleset has %q:\n%s", w, rs)
				}
			}
			if strings.Count(rs, "{") != strings.Count(rs, "}") {
				t.Errorf("unbalanced braces:\n%s", rs)
			}
		})
	}
}

func TestIdleSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{time.Millisecond: 1, time.Second: 1, 2500 * time.Millisecond: 3, time.Minute: 60} {
		if got := idleSeconds(d); got != want {
			t.Errorf("idleSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestParseLabName(t *testing.T) {
	tests := []struct {
		name    string
		pid     int
		ok      bool
		comment string
	}{
		{"hc123x0abc-c", 123, true, "namespace"},
		{"hc123x0abc-r12", 123, true, "router"},
		{"hc123x0abc-887766", 123, true, "temp dir"},
		{"hc123x0abc", 123, true, "bare id"},
		{"hcx0abc-c", 0, false, "no pid"},
		{"hc0123x0abc-c", 0, false, "leading zero"},
		{"hc123x0ab-c", 0, false, "short random"},
		{"hc123x0ABC-c", 0, false, "upper hex"},
		{"hc123y0abc-c", 0, false, "no x"},
		{"other123x0abc-c", 0, false, "other prefix"},
		{"hc-123x0abc", 0, false, "dash"},
	}
	for _, tc := range tests {
		pid, ok := parseLabName("hc", tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("%s (%s): got %d %v, want %d %v", tc.name, tc.comment, pid, ok, tc.pid, tc.ok)
		}
	}
}

func TestNewIDRoundTrips(t *testing.T) {
	id, err := newID("hc")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseLabName("hc", id+"-r7"); !ok {
		t.Fatalf("parseLabName rejects newID's %q", id)
	}
}

func TestReadyWriter(t *testing.T) {
	var log bytes.Buffer
	w := newReadyWriter(&log)
	for _, chunk := range []string{"lab-serve: starting\nrea", "dy\n", "more\n"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-w.ready:
	default:
		t.Fatal("ready not signalled")
	}
	if log.String() != "lab-serve: starting\nready\nmore\n" {
		t.Errorf("log = %q", log.String())
	}
}

func mustContain(t *testing.T, have []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(have, "\n"))
		}
	}
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}
