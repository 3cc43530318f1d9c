package metrics

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/soak"
)

// SoakRegistry returns a registry holding the metrics of a soak report:
// requests and failure/reset ratios (with their 95 % Wilson bounds) per
// address and per idle-age band, resets by origin and hop, findings.
func SoakRegistry(r soak.Report) *Registry {
	reg := NewRegistry()
	v, g := reg.GaugeVec, reg.Gauge
	started := g("hopcheck_soak_timestamp_seconds", "When the soak started (Unix time).")
	duration := g("hopcheck_soak_duration_seconds", "How long the soak measured.")
	complete := g("hopcheck_soak_complete", "1 when the soak ran its whole duration, 0 when interrupted or a checkpoint.")
	requests := v("hopcheck_soak_requests", "Requests sent.", "target", "address")
	failure := v("hopcheck_soak_failure_ratio", "Share of requests that failed, with the 95 % Wilson interval bounds.", "target", "address", "bound")
	reset := v("hopcheck_soak_reset_ratio", "Share of requests that ended with a reset.", "target", "address", "bound")
	band := v("hopcheck_soak_band_failure_ratio", "Share of requests that failed, by how long the connection had been idle.", "target", "address", "band")
	bandReq := v("hopcheck_soak_band_requests", "Requests by how long the connection had been idle.", "target", "address", "band")
	resets := v("hopcheck_soak_resets", "Resets by origin and hop.", "target", "address", "origin", "hop")
	findings := v("hopcheck_soak_findings", "Findings of the soak by kind.", "kind")

	started.Set(float64(r.StartedAt.UnixNano()) / 1e9)
	duration.Set(r.DurationS)
	if !r.Incomplete {
		complete.Set(1)
	}
	for _, t := range r.Targets {
		requests.With(t.Target, t.Address).Set(float64(t.Requests))
		for _, x := range []struct {
			vec  *Family
			rate float64
			ci   [2]float64
		}{{failure, t.Failures.Rate, t.Failures.CI}, {reset, t.Resets.Rate, t.Resets.CI}} {
			x.vec.With(t.Target, t.Address, "point").Set(x.rate)
			x.vec.With(t.Target, t.Address, "lower").Set(x.ci[0])
			x.vec.With(t.Target, t.Address, "upper").Set(x.ci[1])
		}
		for _, b := range t.Bands {
			bandReq.With(t.Target, t.Address, b.Band).Set(float64(b.Requests))
			if b.Requests > 0 {
				band.With(t.Target, t.Address, b.Band).Set(b.Failures.Rate)
			}
		}
		for _, h := range t.ResetsByHop {
			resets.With(t.Target, t.Address, string(h.Origin), strconv.Itoa(h.Hop)).Set(float64(h.Count))
		}
	}
	for _, f := range r.Findings {
		findings.With(f.Kind).Inc()
	}
	return reg
}

// WriteSoakFile writes the metrics of a soak report to path (*.prom) for
// node_exporter's textfile collector, atomically.
func WriteSoakFile(path string, r soak.Report) error {
	if !strings.HasSuffix(path, ".prom") {
		return fmt.Errorf("metrics file %q: node_exporter's textfile collector reads only *.prom files", path)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, SoakRegistry(r)); err != nil {
		return err
	}
	if err := history.WriteAtomic(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	return nil
}
