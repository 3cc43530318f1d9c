package metrics

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/soak"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestWriteSoakFileParses(t *testing.T) {
	r := soak.Report{StartedAt: time.Unix(1_800_000_000, 0), DurationS: 3600, Targets: []soak.TargetReport{{
		Target: "https://api.betradar.com", Address: "198.18.5.2", Requests: 7200,
		Failures: tcpcheck.NewRate(14, 7200), Resets: tcpcheck.NewRate(12, 7200),
		Bands:       []soak.BandReport{{Band: "<30s", Requests: 7000}, {Band: "5-15m", Requests: 200, Failures: tcpcheck.NewRate(12, 200)}},
		ResetsByHop: []soak.HopCount{{Origin: probe.OriginMiddlebox, Hop: 3, Count: 12}},
	}}, Findings: []tcpcheck.Finding{{Kind: "idle-reset"}}}
	path := filepath.Join(t.TempDir(), "soak.prom")
	if err := WriteSoakFile(path, r); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := parseText(t, data)
	if err != nil {
		t.Fatalf("client library parser: %v\n%s", err, data)
	}
	band := fams["hopcheck_soak_band_failure_ratio"]
	if band == nil || len(band.Metric) != 2 {
		t.Fatalf("band failure ratios: %v", band)
	}
	var got float64
	for _, m := range band.Metric {
		for _, l := range m.Label {
			if l.GetName() == "band" && l.GetValue() == "5-15m" {
				got = m.Gauge.GetValue()
			}
		}
	}
	if got != 0.06 {
		t.Errorf("5-15m failure ratio %v, want 0.06", got)
	}
	if f := fams["hopcheck_soak_resets"]; f == nil || f.Metric[0].Gauge.GetValue() != 12 {
		t.Errorf("resets by hop: %v", f)
	}
	if err := WriteSoakFile(filepath.Join(t.TempDir(), "soak.txt"), r); err == nil {
		t.Error("a file not ending in .prom must be refused")
	}
}
