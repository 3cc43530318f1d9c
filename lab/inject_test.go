package lab

import (
	"slices"
	"strings"
	"testing"
)

func TestPlanInject(t *testing.T) {
	sc := Scenario{Name: "t", Routers: []Router{{}, {InjectRST: &Injector{AfterClientBytes: 10, Port: 443}}, {InjectRST: &Injector{}, InitialTTL: 128}}}
	topo, err := planTopology("hc1x0abc", sc)
	if err != nil {
		t.Fatal(err)
	}
	want := []injectorPlan{
		{ns: "hc1x0abc-r2", router: 2, args: []string{"--after-bytes", "10", "--port", "443", "--ttl", "64", "--client-interface", "toclient"}},
		{ns: "hc1x0abc-r3", router: 3, args: []string{"--after-bytes", "0", "--port", "0", "--ttl", "128", "--client-interface", "toclient"}},
	}
	if len(topo.injectors) != len(want) {
		t.Fatalf("injectors %+v, want %+v", topo.injectors, want)
	}
	for i, p := range topo.injectors {
		if p.ns != want[i].ns || p.router != want[i].router || !slices.Equal(p.args, want[i].args) {
			t.Errorf("injector %d: %+v, want %+v", i, p, want[i])
		}
	}
	for _, sc := range []Scenario{
		{Name: "negative", Routers: []Router{{InjectRST: &Injector{AfterClientBytes: -1}}}},
		{Name: "ecmp", Routers: []Router{{}, {InjectRST: &Injector{}}}, ECMPRouter: 2},
	} {
		if _, err := planTopology("hc1x0abc", sc); err == nil || !strings.Contains(err.Error(), sc.Name) {
			t.Errorf("%s: error %v", sc.Name, err)
		}
	}
}
