// Package diagnose is `hopcheck run`: it combines traces, connection
// tests and localisation toward each address of each target into one
// report whose findings name the hop (or the server) at fault.
package diagnose

import (
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/localise"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// SchemaVersion of the run report (docs/schema-run.md). Bump it on any
// incompatible change.
const SchemaVersion = 1

// Report is the JSON document of `hopcheck run` (and what the text,
// Markdown and HTML reports render).
type Report struct {
	SchemaVersion int       `json:"schema_version"`
	Tool          string    `json:"tool"`
	StartedAt     time.Time `json:"started_at"`
	DurationS     float64   `json:"duration_s"`
	Profile       string    `json:"profile"`
	// TLSProfile is the client whose TLS ClientHello the connections
	// imitated (java, dotnet, go).
	TLSProfile tcpcheck.TLSProfile `json:"tls_profile"`
	// Privilege is the probe tier ("raw" or "unprivileged").
	Privilege  string         `json:"privilege"`
	Targets    []TargetReport `json:"targets"`
	Findings   []Finding      `json:"findings"`
	Incomplete bool           `json:"incomplete"`
	Warnings   []string       `json:"warnings,omitempty"`
	// AMQP is how AMQP connections logged in; nil when no AMQP target was
	// tested with a token.
	AMQP *AMQPLogin `json:"amqp,omitempty"`
}

// Measured reports whether anything was measured: a hop answered on some
// trace or some connection test made a connection. A target whose AMQP
// login the broker refused counts for nothing: its feed connection, what
// it was tested for, could not be measured.
func (r Report) Measured() bool {
	for _, t := range r.Targets {
		if t.LoginRefused() != nil {
			continue // its feed connection, what it was there for, could not be tested
		}
		for _, tr := range t.Traces {
			if len(tr.Hops) > 0 {
				return true
			}
		}
		for _, res := range t.Tests {
			if len(res.Connections) > 0 {
				return true
			}
		}
	}
	return false
}

// AMQPLogin says with which virtual host AMQP connections logged in (the
// token is the user name and is never written).
type AMQPLogin struct {
	VHost string `json:"vhost,omitempty"` // "" none: header-only connections
	// Source: "flag" (--amqp-vhost), "whoami" (virtual_host of whoami.xml
	// from an https:// target of the run), or "none".
	Source string `json:"source"`
	From   string `json:"from,omitempty"`  // whoami: the address asked
	Error  string `json:"error,omitempty"` // whoami failed: why
	// Refused is the broker's Connection.Close when it refused the login
	// (403 wrong or expired token, 530 vhost not allowed); the run's
	// warnings and the target's error say it in words.
	Refused *tcpcheck.AMQPReply `json:"refused,omitempty"`
}

// TargetReport is everything measured toward one address of one target.
type TargetReport struct {
	Target  string `json:"target"`  // as given, credentials removed
	Host    string `json:"host"`    // name or literal
	Address string `json:"address"` // the address diagnosed
	Port    int    `json:"port"`
	App     string `json:"app"` // https|amqps|tcp
	// Traces toward the address: icmp, udp and tcp to the service port.
	Traces []trace.Trace `json:"traces"`
	// Tests are the connection tests that ran, by name (connect,
	// concurrency, data, idle); a test that did not run is absent.
	Tests map[string]tcpcheck.Result `json:"tests"`
	// TestFindings are the findings each connection test reported: input
	// to Diagnose, which refines them into Report.Findings.
	TestFindings map[string][]tcpcheck.Finding `json:"-"`
	Localisation *Localisation                 `json:"localisation,omitempty"`
	// CulpritHop is the hop the most severe finding names (0 none/server).
	CulpritHop int    `json:"culprit_hop"`
	Error      string `json:"error,omitempty"`
	// amqpVHost is the virtual host AMQP connections of this target log
	// in to (the localiser's connections too).
	amqpVHost string
	// inFlowCapture is the flow observer's packet history of the in-flow
	// confirmation's connection (its probes and their answers), for
	// --evidence.
	inFlowCapture *probe.FlowCapture
	// inFlowCaptureErr is why the in-flow confirmation's observer could
	// not capture its packets (nil: it could, or it did not run).
	inFlowCaptureErr error
	// loginRefused is the broker's refusal of this address's AMQP login
	// (its tests stop at the first); nil when none.
	loginRefused *tcpcheck.AMQPReply
}

// Localisation holds the probes that place a problem on a hop. Their
// results are the localise package's own types, as a trace is
// trace.Trace: each carries a tri-state status and the error of a probe
// that failed, so a report tells "failed" from "found nothing".
type Localisation struct {
	// InFlow: TTL-limited segments of an existing flow, while healthy and
	// after it lost its state (intrace/0trace technique).
	InFlow *localise.InFlow `json:"in_flow,omitempty"`
	// Rewrites: per hop, how the quoted TCP SYN differed from what was sent
	// (tracebox's method). RewritesStatus is yes when a box rewrote it, no
	// when none did, not-tested when the probe failed (RewritesError).
	Rewrites       []localise.HopRewrite `json:"rewrites,omitempty"`
	RewritesStatus tri.State             `json:"rewrites_status,omitempty"`
	RewritesError  string                `json:"rewrites_error,omitempty"`
	// PMTU: where big packets die.
	PMTU *localise.PMTU `json:"pmtu,omitempty"`
	// NAT: address translation seen by comparing our end of a connection
	// with the server's view of it, located by the hop that owns the
	// translated address (localise.ProbeNAT). Linux NAT translates the
	// quotes of ICMP errors back, so Rewrites alone miss it.
	NAT *localise.NAT `json:"nat,omitempty"`
}

// The localisation results under the names the report writers and their
// tests know them by: aliases of the localise types, not copies.
type (
	InFlow       = localise.InFlow
	InFlowAnswer = localise.InFlowAnswer
	HopRewrite   = localise.HopRewrite
	PMTU         = localise.PMTU
	NAT          = localise.NAT
)

// InFlowNotTested is the in-flow behaviour when the confirmation was not
// run although an idle reset or drop asked for it.
const InFlowNotTested = localise.InFlowNotTested

// Finding kinds added by the run diagnosis (tcpcheck's kinds apply too).
const (
	KindPathLoss       = "path-loss"
	KindTCPFiltered    = "tcp-filtered"
	KindHeaderRewrite  = "header-rewrite"
	KindNAT            = "nat"
	KindPMTUBlackhole  = "pmtu-blackhole"
	KindServerRestart  = "server-restart"
	KindNotReachable   = "not-reachable"
	KindNoRawEvidence  = "weak-evidence"
	KindIncompleteTest = "incomplete"
)

// Finding is tcpcheck's finding plus the fields of the path kinds.
type Finding struct {
	tcpcheck.Finding
	MTU      int    `json:"mtu,omitempty"`
	Phase    string `json:"phase,omitempty"` // setup|transfer|idle
	Severity string `json:"severity"`        // critical|warning|info
}

// LoginRefused is the broker's refusal when it refused the AMQP login of
// every connection test of t that ran, nil otherwise.
func (t TargetReport) LoginRefused() *tcpcheck.AMQPReply {
	var reply *tcpcheck.AMQPReply
	for _, res := range t.Tests {
		if res.LoginRefused == nil {
			return nil
		}
		reply = res.LoginRefused
	}
	return reply
}
