package trace

import (
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// SchemaVersion is the version of the JSON trace report (docs/schema-trace.md).
// Bump it on any incompatible change.
const SchemaVersion = 1

// Report is the top-level JSON document of `hopcheck trace`.
type Report struct {
	SchemaVersion int       `json:"schema_version"`
	Tool          string    `json:"tool"`
	StartedAt     time.Time `json:"started_at"`
	DurationS     float64   `json:"duration_s"`
	Traces        []Trace   `json:"traces"`
	Warnings      []string  `json:"warnings,omitempty"`
	Incomplete    bool      `json:"incomplete,omitempty"`
}

// Target is what one trace went to. Port is 0 for ICMP.
type Target struct {
	Host     string `json:"host"`
	Address  string `json:"address"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// Trace is the path toward one address with one protocol.
type Trace struct {
	Target     Target `json:"target"`
	Privilege  string `json:"privilege"`
	Reached    bool   `json:"reached"`
	ReachedTTL int    `json:"reached_ttl,omitempty"`
	Flows      int    `json:"flows"`
	Rounds     int    `json:"rounds"`
	Queries    int    `json:"queries"`
	Hops       []Hop  `json:"hops"`
	// SharedWith is the address whose trace probed this one's first
	// SharedHops hops for the group (Doubletree); "" when traced alone.
	SharedWith string `json:"shared_with,omitempty"`
	SharedHops int    `json:"shared_hops,omitempty"`
	// DurationS is the wall time of this trace.
	DurationS float64 `json:"duration_s"`
	Error     string  `json:"error,omitempty"`
}

// Hop aggregates every probe sent with one TTL.
type Hop struct {
	TTL        int         `json:"ttl"`
	Responders []Responder `json:"responders"`
	Sent       int         `json:"sent"`
	Received   int         `json:"received"`
	LossPct    float64     `json:"loss_pct"`
	RTTms      RTTStats    `json:"rtt_ms"`
	JitterMs   float64     `json:"jitter_ms"`
	// ReplyTTL is the TTL of the last reply as received (-1 unknown).
	ReplyTTL int `json:"reply_ttl"`
	// ReturnHops is how far back the reply came, counted like TTL (its
	// initial TTL 64/128/255 − ReplyTTL + 1; 0 unknown), and Asymm is
	// ReturnHops − TTL when they differ (tracepath's "asymm"): the return
	// path is that many routers longer (negative: shorter). See
	// trace/asymm.go.
	ReturnHops int `json:"return_hops,omitempty"`
	Asymm      int `json:"asymm,omitempty"`
	// LossKind is "", "rate-limit" (loss here that does not persist to
	// later hops) or "path-loss" (loss that starts here and persists).
	// "" also means "not classified" (no loss, too few probes to tell, or
	// nothing answered after this hop).
	LossKind string `json:"loss_kind,omitempty"`
	// Note explains the hop in words, several notes joined by "; " (see
	// docs/schema-trace.md).
	Note string `json:"note"`
}

// Responder is one address that answered at a hop (several under ECMP).
type Responder struct {
	Address string `json:"address"`
	// Hostname (reverse DNS) and ASN ("AS13335") are filled by Enricher;
	// "" when not looked up or not found.
	Hostname string `json:"hostname"`
	ASN      string `json:"asn"`
	// MPLS is the label stack of the latest reply, outermost first.
	MPLS     []probe.MPLSLabel `json:"mpls"`
	Received int               `json:"received"`
	// Flows lists, ascending, the Paris flows whose probes it answered.
	Flows []int `json:"flows,omitempty"`
	// Kinds lists what the responder sent (time-exceeded, syn-ack, ...).
	Kinds []string `json:"kinds,omitempty"`
}

// RTTStats are round-trip statistics in milliseconds.
type RTTStats struct {
	Last  float64 `json:"last"`
	Min   float64 `json:"min"`
	Avg   float64 `json:"avg"`
	Max   float64 `json:"max"`
	Stdev float64 `json:"stdev"`
}

// Observation is one probe and what (if anything) answered it. The engine
// produces them; Aggregate turns them into hops.
type Observation struct {
	TTL   int
	Flow  int
	Round int
	// Pass is 0 for the first pass of a round, then 1, 2... for retries.
	Pass     int
	ProbeID  uint16
	SentAt   time.Time
	Response *probe.Response // nil: no answer within the wait
}

// Responded is a helper for renderers: the address of a response.
func (o Observation) Responded() (netip.Addr, bool) {
	if o.Response == nil {
		return netip.Addr{}, false
	}
	return o.Response.From, true
}
