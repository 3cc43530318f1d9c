package lab

import (
	"strings"
	"testing"
)

func TestPlanReturnDetour(t *testing.T) {
	sc := Scenario{Name: "t", Routers: []Router{{}, {}, {ReturnDetour: 2, InitialTTL: 255}, {ForgeServerTTL: true}}}
	topo, err := planTopology("hc1x0abc", sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.detourNS) != 2 || topo.detourNS[0] != "hc1x0abc-r3d1" || topo.detourNS[1] != "hc1x0abc-r3d2" {
		t.Fatalf("detour namespaces %v", topo.detourNS)
	}
	mustContain(t, topo.rootBatch,
		"link add name todetour index 5000 netns hc1x0abc-r3 type veth peer name toserver index 6000 netns hc1x0abc-r3d1",
		"link add name toclient index 5001 netns hc1x0abc-r3d1 type veth peer name toserver index 6001 netns hc1x0abc-r3d2",
		"link add name toclient index 5002 netns hc1x0abc-r3d2 type veth peer name fromdetour index 6002 netns hc1x0abc-r2")
	r3 := topo.nodes[3]
	// Toward the client through the detour, toward the server as before.
	mustContain(t, r3.ipBatch,
		"addr add 198.19.251.1/24 dev todetour",
		"route add 198.18.0.0/24 via 198.19.251.2",
		"route add 2001:db8::/64 via 2001:db8:2::2",
		"route add 198.18.1.0/24 via 198.19.251.2",
		"route add 198.18.4.0/24 via 198.18.3.2")
	for _, l := range r3.ipBatch {
		if strings.HasPrefix(l, "route add 198.18.0.0/24 via 198.18.2.1") {
			t.Errorf("router 3 keeps its direct way back: %q", l)
		}
	}
	mustContain(t, r3.sysctls, "net.ipv4.ip_default_ttl=255", "net.ipv6.conf.toclient.hop_limit=255", "net.ipv6.conf.todetour.hop_limit=255")
	mustContain(t, topo.nodes[2].ipBatch, "addr add 198.19.253.2/24 dev fromdetour")
	mustContain(t, topo.nodes[2].sysctls, "net.ipv4.conf.fromdetour.rp_filter=0")
	d1 := topo.nodes[len(topo.nodes)-2]
	mustContain(t, d1.ipBatch, "route add default via 198.19.252.2", "route add default via 2001:db8:2:1::2")
	// Router 4's resets start at 64 − 6 (the server's way back: routers
	// 4, 3, two detour routers, 2, 1) + 5 (its own: 3, detour, 2, 1).
	if !strings.Contains(topo.nodes[4].ruleset, "ip ttl set 63") || !strings.Contains(topo.nodes[4].ruleset, "ip6 hoplimit set 63") {
		t.Errorf("router 4 ruleset:\n%s", topo.nodes[4].ruleset)
	}
}

func TestValidateAttrib(t *testing.T) {
	for _, sc := range []Scenario{
		{Name: "first", Routers: []Router{{ReturnDetour: 1}, {}}},
		{Name: "long", Routers: []Router{{}, {ReturnDetour: 4}}},
		{Name: "two", Routers: []Router{{}, {ReturnDetour: 1}, {ReturnDetour: 1}}},
		{Name: "ttl", Routers: []Router{{InitialTTL: 100}}},
		{Name: "ecmp", Routers: []Router{{}, {InitialTTL: 128}}, ECMPRouter: 2},
	} {
		if _, err := planTopology("hc1x0abc", sc); err == nil || !strings.Contains(err.Error(), sc.Name) {
			t.Errorf("%s: error %v", sc.Name, err)
		}
	}
}
