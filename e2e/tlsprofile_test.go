package e2e

import (
	"fmt"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// The link between routers 2 and 3 has an MTU of 1400 (frag-needed
// allowed). Go's ClientHello (about 1.5 KB) does not fit: router 2 answers
// it with a frag-needed, the client's kernel learns a path MTU of 1400 and
// every later connection is shaped by it (segment.pmtu). The Java
// profile's hello (a few hundred bytes) draws none: every connection sees
// the path as the SDK does.
func TestTLSProfilePathMTULearned(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile string
		learned bool
	}{
		{"go", true},
		{"java", false},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			t.Parallel()
			rs := make([]lab.Router, 3)
			rs[1].LinkMTU = 1400
			l := buildLab(t, lab.Scenario{Name: "pmtu-learned-" + tc.profile, Routers: rs})
			rep, _ := tcpJSON(t, l, "connect", "--count", "4", "--rate", "5", "--tls-profile", tc.profile,
				"--ca-file", l.CAFile, "--token-file", l.TokenFile(), fmt.Sprintf("https://%s", l.Server4))
			if rep.TLSProfile != tcpcheck.TLSProfile(tc.profile) || len(rep.Results) != 1 || len(rep.Results[0].Connections) != 4 {
				t.Fatalf("tls_profile %q; %s", rep.TLSProfile, resultSummary(rep))
			}
			var pmtus, adv []int
			for _, c := range rep.Results[0].Connections {
				if c.Outcome != tcpcheck.OutcomeOK || c.Segment == nil {
					t.Fatalf("connection %d: %s %s, segment %+v; want ok with TCP_INFO", c.ID, c.Outcome, c.Error, c.Segment)
				}
				if c.Segment.LinkMTU != 1500 {
					t.Errorf("connection %d: link_mtu %d, want the client's 1500", c.ID, c.Segment.LinkMTU)
				}
				pmtus = append(pmtus, c.Segment.PathMTU)
				adv = append(adv, c.Segment.AdvMSS)
			}
			if pmtus[0] != 1500 {
				t.Errorf("first connection pmtu %d, want the link's 1500 (nothing learned yet)", pmtus[0])
			}
			last := pmtus[len(pmtus)-1]
			if tc.learned && last != 1400 {
				t.Errorf("pmtus %v: want the last connection at the learned 1400", pmtus)
			}
			if !tc.learned && last != 1500 {
				t.Errorf("pmtus %v: want 1500 throughout (the hello draws no frag-needed)", pmtus)
			}
			t.Logf("%s: path MTU per connection %v, advertised MSS %v", tc.profile, pmtus, adv)
		})
	}
}
