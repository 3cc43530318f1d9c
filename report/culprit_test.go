package report

import (
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestCulpritSummaryNamesEachCulpritOnce(t *testing.T) {
	target := func(target, addr string, hop int) diagnose.TargetReport {
		return diagnose.TargetReport{Target: target, Address: addr, CulpritHop: hop}
	}
	finding := func(target, addr string, hop int, hopAddr string) diagnose.Finding {
		return diagnose.Finding{Finding: tcpcheck.Finding{Kind: "idle-reset", Target: target, Address: addr, Hop: hop, HopAddress: hopAddr}}
	}
	for _, tc := range []struct {
		name     string
		targets  []diagnose.TargetReport
		findings []diagnose.Finding
		want     string
	}{
		{"no culprit", []diagnose.TargetReport{target("https://s", "198.18.5.2", 0)}, nil, ""},
		{"one", []diagnose.TargetReport{target("https://s", "198.18.5.2", 3)},
			[]diagnose.Finding{finding("https://s", "198.18.5.2", 3, "198.18.2.2")},
			"; culprit: hop 3 (198.18.2.2) toward 198.18.5.2"},
		{"https and amqps on one address (the demo)", []diagnose.TargetReport{target("https://s", "198.18.5.2", 3), target("amqps://s:5671", "198.18.5.2", 3)},
			[]diagnose.Finding{finding("https://s", "198.18.5.2", 3, "198.18.2.2"), finding("amqps://s:5671", "198.18.5.2", 3, "198.18.2.2")},
			"; culprit: hop 3 (198.18.2.2) toward 198.18.5.2"},
		{"one box in front of two addresses", []diagnose.TargetReport{target("https://s", "198.18.5.2", 3), target("https://s", "198.18.5.3", 3)},
			[]diagnose.Finding{finding("https://s", "198.18.5.2", 3, "198.18.2.2"), finding("https://s", "198.18.5.3", 3, "198.18.2.2")},
			"; culprit: hop 3 (198.18.2.2) toward 198.18.5.2, 198.18.5.3"},
		{"two culprits", []diagnose.TargetReport{target("https://s", "198.18.5.2", 3), target("https://s", "2001:db8:0:5::2", 2)},
			[]diagnose.Finding{finding("https://s", "198.18.5.2", 3, "198.18.2.2"), finding("https://s", "2001:db8:0:5::2", 2, "2001:db8:0:1::2")},
			"; culprit: hop 3 (198.18.2.2) toward 198.18.5.2; hop 2 (2001:db8:0:1::2) toward 2001:db8:0:5::2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := culpritSummary(newReportView(diagnose.Report{Targets: tc.targets, Findings: tc.findings}))
			if got != tc.want {
				t.Fatalf("culpritSummary = %q\nwant             %q", got, tc.want)
			}
		})
	}
}
