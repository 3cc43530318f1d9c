// Package localise places a problem on a hop of a path: which box rewrites
// headers (ProbeRewrites, tracebox's method), translates addresses
// (ProbeNAT), drops packets above the path MTU (ProbePMTU), or lost the
// state of a flow (ProbeInFlow, intrace/0trace). The probes send through
// one small interface, Path, so that a scripted path table-tests them
// without root; probe.RawPath is the socket implementation (OpenRaw*).
//
// Where Linux forwarders act, relative to the TTL check, decides how a
// symptom maps to a hop: ip_forward answers an expiring packet with
// time-exceeded before the packet reaches the netfilter forward and
// postrouting hooks, where MSS clamping, NAT, "ct state invalid" resets and
// drops, and the MTU check happen. So the box at hop k still answers TTL k
// itself with an untouched quote, and its action shows first on probes with
// TTL k+1: the box is the last hop whose answer was still normal. Boxes that
// act before their TTL check (or do not decrement TTL at all) shift that by
// one hop; results say so with a range (Hop..UpTo) where it matters.
//
// Routers limit the ICMP errors they send to each destination (Linux: a
// burst of about 6, then 1 per second; IPv6 faster for short prefixes),
// and a trace run just before may have spent that burst. Every probe that
// relies on time-exceeded therefore resends a TTL left unanswered, no
// sooner than Options.Backoff after the previous probe toward the same
// router, before it calls that router silent. Echo replies, SYN-ACKs,
// RSTs and frag-needed / packet-too-big are not limited that way.
package localise

import (
	"context"
	"net/netip"
	"time"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// Path is the one seam between the localisation probes and the network:
// raw sockets toward one destination (probe.RawPath), or a scripted path
// in tests.
type Path interface {
	// Send transmits one probe toward to with ttl: transport is the
	// transport header and payload, checksummed for the path's source and
	// to; ipid and df apply to IPv4.
	Send(to netip.Addr, transport []byte, ttl int, ipid uint16, df bool) error
	// Next returns the next ICMP message or TCP segment read, or false at
	// the deadline or when ctx ends.
	Next(ctx context.Context, deadline time.Time) (probe.PathEvent, bool)
}

// Options tune the localisation probes. Zero values mean the defaults.
type Options struct {
	// Timeout is how long to wait for an answer that may not come
	// (default 2 s). ProbeInFlow waits less once it knows the path's RTT
	// (5 RTTs, at least 500 ms).
	Timeout time.Duration
	// Attempts is how often a probe left unanswered is sent in all
	// (default 2), so that one lost or rate-limited ICMP message does not
	// look like a silent or dropping box.
	Attempts int
	// Backoff is the least time between two probes that expire at the
	// same router (default 1 s: Linux's per-destination ICMP rate limit
	// grants one more answer per second once its burst is spent).
	Backoff time.Duration
	// MaxSilentTTLs stops ProbeInFlow after this many TTLs in a row
	// that nothing answered (0: probe up to the max TTL). Every silent
	// TTL costs Attempts waits, and past a box that drops the flow every
	// TTL is silent.
	MaxSilentTTLs int
	// Log receives progress lines; nil: silent.
	Log func(format string, args ...any)
	// Sleep waits d unless ctx ends first (then false); nil: real time.
	// Tests over a scripted path make it instant.
	Sleep func(ctx context.Context, d time.Duration) bool
}

func (o Options) withDefaults() Options {
	defaultWaits(&o.Timeout, &o.Attempts, &o.Backoff, &o.Log, &o.Sleep)
	return o
}

// defaultWaits fills the waiting knobs Options and PMTUOptions share
// (Timeout, Attempts, Backoff, Log, Sleep) where they are zero.
func defaultWaits(timeout *time.Duration, attempts *int, backoff *time.Duration,
	log *func(format string, args ...any), sleep *func(ctx context.Context, d time.Duration) bool) {
	if *timeout <= 0 {
		*timeout = 2 * time.Second
	}
	if *attempts <= 0 {
		*attempts = 2
	}
	if *backoff <= 0 {
		*backoff = time.Second
	}
	if *log == nil {
		*log = func(string, ...any) {}
	}
	if *sleep == nil {
		*sleep = SleepCtx
	}
}

// SleepCtx sleeps d unless ctx ends first (then it returns false).
func SleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// Outcome is how a localisation probe ended, as every result carries it:
// Status yes (it found something), no (it ran and found nothing) or
// not-tested (it did not run, or failed: Error says why). Error is also
// set when the probe found something and a later step failed.
type Outcome struct {
	Status tri.State `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// Failed is the outcome of a probe that could not run.
func Failed(err error) Outcome {
	return Outcome{Status: tri.NotTested, Error: err.Error()}
}

// IP protocol numbers and header sizes the probes build and match.
const (
	ipProtoICMP      = 1
	ipProtoTCP       = 6
	ipv4MinHeaderLen = 20
	ipv6HeaderLen    = 40
	tcpMinHeaderLen  = 20
	icmpHeaderLen    = 8
)

// retryRounds decides whether a probe that sends many TTLs at once asks
// the unanswered ones again. A rate-limited router answers one more probe
// per backoff, so a round that still brought answers does not count
// against Attempts; at most Attempts+2 rounds run in all.
type retryRounds struct {
	attempts, rounds, fruitless int
}

// again records how the round just waited for went (did it bring any
// answer?) and tells whether to run another.
func (r *retryRounds) again(progress bool) bool {
	r.rounds++
	if !progress {
		r.fruitless++
	}
	return r.attempts > 1 && r.fruitless < r.attempts && r.rounds < r.attempts+2
}
