package diagnose

import (
	"encoding/json"
	"slices"
	"sort"
	"testing"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/localise"
)

// TestLocalisationJSONFields pins the localisation's JSON to
// docs/schema-run.md: the fields of schema version 1 keep their names,
// and the status/error fields are the only ones added.
func TestLocalisationJSONFields(t *testing.T) {
	failed := localise.Outcome{Status: tri.NotTested, Error: "x"}
	answer := localise.InFlowAnswer{TTL: 1, From: "198.18.0.2", Kind: localise.InFlowTimeExceeded, ReplyTTL: 64, SenderHop: 1}
	loc := Localisation{
		InFlow: &InFlow{Flow: "a > b", Healthy: []InFlowAnswer{answer}, Expired: []InFlowAnswer{answer}, Hop: 1,
			HopAddress: "198.18.0.2", HopUpTo: 2, Behaviour: "reset", Reason: "r", Outcome: failed},
		Rewrites: []HopRewrite{{Hop: 2, Address: "198.18.1.2", Changes: []string{"mss 1460→1200"}, HopUpTo: 3,
			Answer: localise.AnswerTimeExceeded, Quote: localise.QuoteFull, Seen: []string{"mss 1460→1200"}}},
		RewritesStatus: tri.Yes, RewritesError: "x",
		PMTU: &PMTU{MTU: 1280, BlackholeHop: 3, BlackholeHopAddress: "a", FragNeededSeen: true, Verdict: localise.PMTUBlackhole,
			Blackhole: tri.Yes, BlackholeHopUpTo: 4, FragNeededHop: 2, FragNeededHopAddress: "b", LocalMTU: 1500, Protocol: "tcp",
			Reason: "r", Outcome: failed},
		NAT: &NAT{Translated: tri.Yes, Sent: "a:1", Seen: "b:2", Changes: []string{"src port 1→2"}, Hop: 1, HopAddress: "c",
			Evidence: "e", Outcome: failed},
	}
	b, err := json.Marshal(loc)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(v any) []string {
		m, _ := v.(map[string]any)
		var k []string
		for name := range m {
			k = append(k, name)
		}
		sort.Strings(k)
		return k
	}
	first := func(v any) any { return v.([]any)[0] }
	for _, c := range []struct {
		what string
		obj  any
		want []string
	}{
		{"localisation", doc, []string{"in_flow", "nat", "pmtu", "rewrites", "rewrites_error", "rewrites_status"}},
		{"in_flow", doc["in_flow"], []string{"behaviour", "error", "expired", "flow", "healthy", "hop", "hop_address", "hop_up_to", "reason", "status"}},
		{"in-flow answer", first(doc["in_flow"].(map[string]any)["healthy"]), []string{"from", "kind", "reply_ttl", "sender_hop", "ttl"}},
		{"rewrite", first(doc["rewrites"]), []string{"address", "answer", "changes", "hop", "hop_up_to", "quote", "seen"}},
		{"pmtu", doc["pmtu"], []string{"blackhole", "blackhole_hop", "blackhole_hop_address", "blackhole_hop_up_to", "error",
			"frag_needed_hop", "frag_needed_hop_address", "frag_needed_seen", "local_mtu", "mtu", "protocol", "reason", "status", "verdict"}},
		{"nat", doc["nat"], []string{"changes", "error", "evidence", "hop", "hop_address", "seen", "sent", "status", "translated"}},
	} {
		if got := keys(c.obj); !slices.Equal(got, c.want) {
			t.Errorf("%s: fields %v, want %v", c.what, got, c.want)
		}
	}
	// Values keep their schema-1 types: frag_needed_seen a bool, the
	// tri-states and kinds strings.
	if v, ok := doc["pmtu"].(map[string]any)["frag_needed_seen"].(bool); !ok || !v {
		t.Errorf("frag_needed_seen %v, want true (a bool)", doc["pmtu"].(map[string]any)["frag_needed_seen"])
	}
	if v := doc["nat"].(map[string]any)["translated"]; v != "yes" {
		t.Errorf("translated %v, want \"yes\"", v)
	}
	// A report written before the status fields existed still reads.
	var old Localisation
	if err := json.Unmarshal([]byte(`{"in_flow":{"flow":"a > b","healthy":[],"expired":[],"hop":3,"hop_address":"198.18.2.2","behaviour":"reset"},"pmtu":{"mtu":1400,"frag_needed_seen":false}}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.InFlow.Hop != 3 || old.InFlow.Status != "" || old.PMTU.MTU != 1400 {
		t.Errorf("old report read as %+v %+v", old.InFlow, old.PMTU)
	}
}
