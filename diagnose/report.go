// Package diagnose is `hopcheck run`: it combines traces, connection
// tests and localisation toward each address of each target into one
// report whose findings name the hop (or the server) at fault.
package diagnose

import (
	"time"

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
	// loginRefused is the broker's refusal of this address's AMQP login
	// (its tests stop at the first); nil when none.
	loginRefused *tcpcheck.AMQPReply
}

// Localisation holds the probes that place a problem on a hop.
type Localisation struct {
	// InFlow: TTL-limited segments of an existing flow, while healthy and
	// after it lost its state (intrace/0trace technique).
	InFlow *InFlow `json:"in_flow,omitempty"`
	// Rewrites: per hop, how the quoted TCP SYN differed from what was sent
	// (tracebox's method).
	Rewrites []HopRewrite `json:"rewrites,omitempty"`
	// PMTU: where big packets die.
	PMTU *PMTU `json:"pmtu,omitempty"`
	// NAT: address translation seen by comparing our end of a connection
	// with the server's view of it, located by the hop that owns the
	// translated address (probe.ProbeNAT). Linux NAT translates the quotes
	// of ICMP errors back, so Rewrites alone miss it.
	NAT *NAT `json:"nat,omitempty"`
}

// NAT is the evidence of address translation on the path.
type NAT struct {
	Translated string `json:"translated"` // yes|no|not-tested
	Sent       string `json:"sent"`       // our end as we sent from it
	Seen       string `json:"seen"`       // our end as the server saw it ("" unknown)
	// Changes are "src address A→B" / "src port P→Q".
	Changes []string `json:"changes,omitempty"`
	// Hop owns the translated address (0: not located); HopAddress is the
	// address it answers time-exceeded from toward the target.
	Hop        int    `json:"hop"`
	HopAddress string `json:"hop_address"`
	Evidence   string `json:"evidence"`
}

// InFlow compares, per TTL, what answered a segment of the flow before
// and after the flow went idle past the timeout.
type InFlow struct {
	Flow    string         `json:"flow"` // "client:port > server:port"
	Healthy []InFlowAnswer `json:"healthy"`
	Expired []InFlowAnswer `json:"expired"`
	// Hop is where the state was lost (probe.ExplainStateLoss): the box
	// that resets (the RST's TTL places it; else the last hop answering
	// time-exceeded before the first RST), or the last hop that still
	// answered time-exceeded before the silence (drop).
	Hop        int    `json:"hop"`
	HopAddress string `json:"hop_address"`
	// HopUpTo: when the evidence allows several hops (silent routers, a RST
	// of unknown TTL), the box is one of Hop..HopUpTo; equal when exact.
	HopUpTo   int    `json:"hop_up_to,omitempty"`
	Behaviour string `json:"behaviour"` // reset|reject|drop|server-reset|undetermined|"" (not found)
	Reason    string `json:"reason,omitempty"`
}

// InFlowAnswer is what came back for the segment sent with one TTL.
type InFlowAnswer struct {
	TTL  int    `json:"ttl"`
	From string `json:"from"` // "" nothing
	Kind string `json:"kind"` // time-exceeded|rst|ack|unreachable|none
	// ReplyTTL is the IP TTL of the answer as received (0: none/unknown);
	// SenderHop the hop it implies for a RST or ACK (0 unknown).
	ReplyTTL  int `json:"reply_ttl,omitempty"`
	SenderHop int `json:"sender_hop,omitempty"`
}

// HopRewrite is what a hop's time-exceeded quote shows of the probe.
type HopRewrite struct {
	Hop     int    `json:"hop"`
	Address string `json:"address"`
	// Changes are the rewrites attributed to the box at this hop (e.g.
	// "mss 1460→1200", "src port 40000→1024"; probe.Rewrite): Linux
	// forwarders rewrite after their TTL check, so they show first in the
	// next hop's quote.
	Changes []string `json:"changes"`
	// HopUpTo: with silent hops after it, the rewriting box is one of
	// Hop..HopUpTo (0 or Hop: exact).
	HopUpTo int `json:"hop_up_to,omitempty"`
	// Answer is time-exceeded|unreachable|destination|none; Quote how much
	// of the probe it quoted: full|partial|none.
	Answer string `json:"answer,omitempty"`
	Quote  string `json:"quote,omitempty"`
	// Seen are the differences from the probe visible in this hop's quote:
	// everything rewritten before it.
	Seen []string `json:"seen,omitempty"`
}

// PMTU is the path MTU search.
type PMTU struct {
	MTU int `json:"mtu"` // largest size that reached the destination
	// BlackholeHop is the first hop beyond which packets above MTU vanish
	// without frag-needed/packet-too-big (0: none, ICMP was seen).
	BlackholeHop        int    `json:"blackhole_hop"`
	BlackholeHopAddress string `json:"blackhole_hop_address"`
	FragNeededSeen      bool   `json:"frag_needed_seen"`
	// Verdict: no-bottleneck|frag-needed|blackhole|undetermined
	// (probe.PMTUVerdict); Blackhole the tri-state behind BlackholeHop:
	// yes|no|not-tested.
	Verdict   string `json:"verdict,omitempty"`
	Blackhole string `json:"blackhole,omitempty"`
	// BlackholeHopUpTo: with silent routers after it, the small link is
	// behind one of BlackholeHop..BlackholeHopUpTo.
	BlackholeHopUpTo int `json:"blackhole_hop_up_to,omitempty"`
	// FragNeededHop is the router that reports the small link (healthy
	// PMTUD), FragNeededHopAddress its address.
	FragNeededHop        int    `json:"frag_needed_hop,omitempty"`
	FragNeededHopAddress string `json:"frag_needed_hop_address,omitempty"`
	LocalMTU             int    `json:"local_mtu,omitempty"` // the largest packet tried
	Protocol             string `json:"protocol,omitempty"`  // of the probes: icmp|udp|tcp
	Reason               string `json:"reason,omitempty"`
}

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
