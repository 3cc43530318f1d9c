// Package metrics turns hopcheck reports into Prometheus metrics in the
// text exposition format (expo.go): a node_exporter textfile
// (WriteRunFile) for scheduled runs, and the exporter behind
// `hopcheck serve`.
package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Metric names of a run.
const (
	LastSuccessName = "hopcheck_last_success_timestamp_seconds"
)

var (
	addrLabels = []string{"target", "address"}
	pathLabels = []string{"target", "address", "protocol"}
	hopLabels  = []string{"target", "address", "protocol", "hop", "responder"}
)

// runCollectors are the gauges of one run report.
type runCollectors struct {
	reg                           *Registry
	started, duration, complete   *Series
	lastSuccess                   *Series
	findingsByKind                *Family
	reached, hops, hopLoss        *Family
	hopRTT, serverHop             *Family
	idleTimeout, failure, culprit *Family
	targetFindings                *Family
}

func newRunCollectors() *runCollectors {
	r := NewRegistry()
	return &runCollectors{
		reg:            r,
		started:        r.Gauge("hopcheck_run_timestamp_seconds", "When the run started (Unix time)."),
		duration:       r.Gauge("hopcheck_run_duration_seconds", "Wall time of the run."),
		complete:       r.Gauge("hopcheck_run_complete", "1 when the run finished, 0 when it was interrupted or timed out."),
		lastSuccess:    r.Gauge(LastSuccessName, "When the last complete run that measured something ended (Unix time)."),
		findingsByKind: r.GaugeVec("hopcheck_findings", "Findings of the run by kind.", "kind"),
		targetFindings: r.GaugeVec("hopcheck_target_findings", "Findings per address and kind.", "target", "address", "kind", "hop"),
		reached:        r.GaugeVec("hopcheck_path_reached", "1 when the trace reached the address.", pathLabels...),
		hops:           r.GaugeVec("hopcheck_path_hops", "Hops to the address (the TTL that reached it; 0 not reached).", pathLabels...),
		hopLoss:        r.GaugeVec("hopcheck_hop_loss_ratio", "Share of probes unanswered at a hop.", hopLabels...),
		hopRTT:         r.GaugeVec("hopcheck_hop_rtt_seconds", "Average round-trip time to a hop.", hopLabels...),
		serverHop:      r.GaugeVec("hopcheck_server_hop", "Hop of the server from the TTL of its SYN-ACK (0 unknown).", addrLabels...),
		idleTimeout:    r.GaugeVec("hopcheck_idle_timeout_seconds", "Idle timeout of the path or server (0: none found up to the profile's idle maximum).", addrLabels...),
		failure:        r.GaugeVec("hopcheck_connection_failure_ratio", "Share of connections of a test that ended with an outcome.", "target", "address", "test", "outcome"),
		culprit:        r.GaugeVec("hopcheck_culprit_hop", "Hop the most severe finding names (0: none or the server).", addrLabels...),
	}
}

// Succeeded reports whether a run counts as a success for the last
// success timestamp: finished, and something was measured.
func Succeeded(r diagnose.Report) bool {
	return !r.Incomplete && r.Measured()
}

// RunRegistry returns a registry holding the metrics of r. lastSuccess is
// the Unix time of the last successful run before this one (0 none): it
// is kept when r did not succeed.
func RunRegistry(r diagnose.Report, lastSuccess float64) *Registry {
	c := newRunCollectors()
	c.started.Set(float64(r.StartedAt.UnixNano()) / 1e9)
	c.duration.Set(r.DurationS)
	if !r.Incomplete {
		c.complete.Set(1)
	}
	if Succeeded(r) {
		lastSuccess = float64(r.StartedAt.UnixNano())/1e9 + r.DurationS
	}
	c.lastSuccess.Set(lastSuccess)
	for _, k := range []string{tcpcheck.KindIdleReset, tcpcheck.KindIdleDrop, tcpcheck.KindIdleClose, tcpcheck.KindConnectReset,
		tcpcheck.KindConnectTimeout, tcpcheck.KindConcurrencyLimit, tcpcheck.KindMidstreamReset, tcpcheck.KindMidstreamClose,
		tcpcheck.KindDataStall, diagnose.KindPathLoss, diagnose.KindTCPFiltered, diagnose.KindHeaderRewrite, diagnose.KindNAT,
		diagnose.KindPMTUBlackhole, diagnose.KindServerRestart, diagnose.KindNotReachable} {
		c.findingsByKind.With(k) // present at 0, so alerts can use rate/changes
	}
	for _, f := range r.Findings {
		c.findingsByKind.With(f.Kind).Inc()
		c.targetFindings.With(f.Target, f.Address, f.Kind, strconv.Itoa(f.Hop)).Inc()
	}
	for _, t := range r.Targets {
		for _, tr := range t.Traces {
			p := tr.Target.Protocol
			reached := 0.0
			if tr.Reached {
				reached = 1
			}
			c.reached.With(t.Target, t.Address, p).Set(reached)
			c.hops.With(t.Target, t.Address, p).Set(float64(tr.ReachedTTL))
			for _, h := range tr.Hops {
				responder := "*"
				if len(h.Responders) > 0 {
					responder = h.Responders[0].Address
				}
				hop := strconv.Itoa(h.TTL)
				c.hopLoss.With(t.Target, t.Address, p, hop, responder).Set(h.LossPct / 100)
				if h.Received > 0 {
					c.hopRTT.With(t.Target, t.Address, p, hop, responder).Set(h.RTTms.Avg / 1000)
				}
			}
		}
		server := 0
		for name, res := range t.Tests {
			if res.ServerHop > 0 {
				server = res.ServerHop
			}
			n := len(res.Connections)
			for o, k := range res.Counts {
				if o != "ok" && n > 0 {
					c.failure.With(t.Target, t.Address, name, string(o)).Set(float64(k) / float64(n))
				}
			}
			if name == "idle" && res.Idle != nil && res.Idle.Cause == "" {
				// A cause (e.g. the AMQP handshake timeout) means the closes
				// were no idle timeout: export none rather than a false one.
				c.idleTimeout.With(t.Target, t.Address).Set(res.Idle.TimeoutS)
			}
		}
		c.serverHop.With(t.Target, t.Address).Set(float64(server))
		c.culprit.With(t.Target, t.Address).Set(float64(t.CulpritHop))
	}
	return c.reg
}

// WriteRun writes the metrics of r in the text format.
func WriteRun(w io.Writer, r diagnose.Report, lastSuccess float64) error {
	return WriteText(w, RunRegistry(r, lastSuccess))
}

// WriteRunFile writes the metrics of r to path for node_exporter's
// textfile collector, atomically (a scrape never sees half a file). The
// last success timestamp of an earlier file at path is kept when r did
// not succeed.
func WriteRunFile(path string, r diagnose.Report) error {
	if !strings.HasSuffix(path, ".prom") {
		return fmt.Errorf("metrics file %q: node_exporter's textfile collector reads only *.prom files", path)
	}
	last := 0.0
	if old, err := os.ReadFile(path); err == nil {
		last = LastSuccess(old)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("metrics file: %w", err)
	}
	var buf bytes.Buffer
	if err := WriteRun(&buf, r, last); err != nil {
		return err
	}
	if err := history.WriteAtomic(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	return nil
}

// LastSuccess reads the last success timestamp from an earlier metrics
// file (0 when absent or unreadable).
func LastSuccess(data []byte) float64 {
	v, ok := SampleValue(data, LastSuccessName)
	if !ok {
		return 0
	}
	return v
}
