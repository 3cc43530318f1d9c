package tcpcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

// SchemaVersion of the JSON report (docs/schema-tcp.md).
const SchemaVersion = 1

// Report is the result of one `hopcheck tcp` run.
type Report struct {
	SchemaVersion int       `json:"schema_version"`
	Tool          string    `json:"tool"`
	Test          string    `json:"test"` // connect|concurrency|data|idle
	StartedAt     time.Time `json:"started_at"`
	DurationS     float64   `json:"duration_s"`
	// Evidence is "packets" when the flow observer captured every
	// connection's segments (raw socket), "socket" when only the kernel
	// socket's errors were seen (weaker: no TTLs, origin unknown).
	Evidence string `json:"evidence"`
	// TLSProfile is the client whose TLS ClientHello the connections
	// imitated (java, dotnet, go).
	TLSProfile TLSProfile `json:"tls_profile"`
	Results    []Result   `json:"results"`
	Findings   []Finding  `json:"findings"`
	Incomplete bool       `json:"incomplete"`
	// Warnings are run-wide caveats in words (e.g. --evidence without
	// packet captures); omitted when none.
	Warnings []string `json:"warnings,omitempty"`
}

// Result is the test of one address of one target.
type Result struct {
	Target  string `json:"target"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	App     App    `json:"app"`
	Error   string `json:"error,omitempty"`
	// ServerTTL is the TTL of the server's SYN-ACKs; ServerHop the hop
	// it means (0 unknown).
	ServerTTL   int             `json:"server_ttl"`
	ServerHop   int             `json:"server_hop"`
	Counts      map[Outcome]int `json:"counts"`
	Connections []ConnRecord    `json:"connections"`
	Idle        *IdleResult     `json:"idle,omitempty"`
	Concurrency *ConcResult     `json:"concurrency,omitempty"`
	// LoginRefused is the broker's reply when it refused the AMQP login
	// of every connection: nothing of the test could be measured (Error
	// says why in words).
	LoginRefused *AMQPReply `json:"login_refused,omitempty"`
	// DNSMs is how long resolving the target's name took (0 for a
	// literal address); the name is resolved once for all its addresses.
	DNSMs float64 `json:"dns_ms"`
	// Rates are the failure rates by outcome with 95 % Wilson intervals
	// (connect); ResetsByOrigin counts captured resets by origin.
	Rates          map[Outcome]Rate `json:"rates,omitempty"`
	ResetsByOrigin map[string]int   `json:"resets_by_origin,omitempty"`
	// Transfer is the data test's transfer.
	Transfer *Transfer `json:"transfer,omitempty"`
	// PhaseStats summarises the phase timings of the connections that
	// got through each phase.
	PhaseStats map[string]Stats `json:"phase_stats_ms,omitempty"`
	// CaptureErr says why the flow observer kept no packet histories of
	// the connections (no --evidence files) although it was asked to
	// (not in the JSON: the CLI turns it into a warning).
	CaptureErr error `json:"-"`
}

// Stats are order statistics of durations in milliseconds.
type Stats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

// NewStats summarises values (nil for none).
func NewStats(v []float64) *Stats {
	if len(v) == 0 {
		return nil
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(v)))) - 1
		return math.Round(v[max(0, i)]*1000) / 1000
	}
	return &Stats{N: len(v), P50: at(0.5), P95: at(0.95), Max: at(1)}
}

// phaseStats summarises the phases of recs: a phase counts for every
// connection that measured it.
func phaseStats(recs []ConnRecord) map[string]Stats {
	var tcp, tls, fb []float64
	for _, r := range recs {
		if r.Phases.TCP > 0 && !(r.Phase == PhaseTCP && r.Outcome != OutcomeOK) {
			tcp = append(tcp, r.Phases.TCP)
		}
		if r.Phases.TLS > 0 && r.Phase != PhaseTLS {
			tls = append(tls, r.Phases.TLS)
		}
		if r.Phases.FirstByte > 0 && r.Phase != PhaseApp {
			fb = append(fb, r.Phases.FirstByte)
		}
	}
	out := map[string]Stats{}
	for name, v := range map[string][]float64{"tcp": tcp, "tls": tls, "first_byte": fb} {
		if st := NewStats(v); st != nil {
			out[name] = *st
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Rate is k of n with its 95 % Wilson interval.
type Rate struct {
	Count int        `json:"count"`
	Of    int        `json:"of"`
	Rate  float64    `json:"rate"`
	CI    [2]float64 `json:"ci"`
}

// NewRate computes a Rate.
func NewRate(k, n int) Rate {
	lo, hi := Wilson(k, n)
	r := Rate{Count: k, Of: n, CI: [2]float64{round4(lo), round4(hi)}}
	if n > 0 {
		r.Rate = round4(float64(k) / float64(n))
	}
	return r
}

// Transfer is what the data test moved and what TCP_INFO said after it.
type Transfer struct {
	Path        string  `json:"path,omitempty"` // HTTPS: what was downloaded
	Bytes       int64   `json:"bytes"`
	DurationS   float64 `json:"duration_s"`
	Stalled     bool    `json:"stalled"`
	SendMSS     int     `json:"snd_mss"`
	RecvMSS     int     `json:"rcv_mss"`
	PathMTU     int     `json:"pmtu"`
	Retransmits int     `json:"total_retrans"`
	Lost        int     `json:"lost"`
	// Cure is the one retry of a stalled download with a clamped MSS
	// (nil: no stall, or a retry could tell nothing).
	Cure *TransferCure `json:"cure,omitempty"`
}

// ConnRecord is one connection (or one use of it) and how it ended.
type ConnRecord struct {
	ID        int      `json:"id"`
	LocalPort uint16   `json:"local_port"`
	StartS    float64  `json:"start_s"` // since the test started
	Phases    PhasesMs `json:"phases_ms"`
	Outcome   Outcome  `json:"outcome"`
	Phase     Phase    `json:"phase,omitempty"` // where it failed
	Error     string   `json:"error,omitempty"`
	Status    int      `json:"http_status,omitempty"`
	// IdleS is the idle time before the use that ended it (idle test).
	IdleS float64 `json:"idle_s,omitempty"`
	// Uses counts successful reuses after idling (idle test).
	Uses int `json:"uses,omitempty"`
	// EndS is when it ended, since the test started.
	EndS    float64     `json:"end_s,omitempty"`
	Packets []PacketRec `json:"packets,omitempty"` // FINs and RSTs the observer saw
	// Capture is the observer's bounded packet history of a failed
	// connection, for --evidence (not in the JSON; nil when not captured).
	Capture *probe.FlowCapture `json:"-"`
	// Segment is the MSS advertised and used and the path MTU, right
	// after connect.
	Segment *SegmentInfo `json:"segment,omitempty"`
	// AMQPReply is the broker's Connection.Close of a refused login
	// (outcome login-refused).
	AMQPReply *AMQPReply `json:"amqp_reply,omitempty"`
}

// PacketRec is one FIN or RST as the flow observer saw it.
type PacketRec struct {
	Flags  string       `json:"flags"` // RST, RST+ACK, FIN+ACK...
	AtS    float64      `json:"at_s"`  // since the test started
	TTL    int          `json:"ttl"`
	IPID   int          `json:"ip_id"`
	DF     bool         `json:"df"`
	Seq    uint32       `json:"seq"`
	Hop    int          `json:"hop"`
	Origin probe.Origin `json:"origin"`
	Reason string       `json:"reason"`
}

// IdleResult is the idle-timeout search of one address.
type IdleResult struct {
	TimeoutS  float64    `json:"timeout_s"` // 0: none found up to max_s
	BracketS  [2]float64 `json:"bracket_s"` // [longest survived, shortest failed]
	MaxS      float64    `json:"max_s"`
	Behaviour string     `json:"behaviour,omitempty"` // reset|drop|close
	Width     int        `json:"width"`               // simultaneous connections at most
	// Verified: "survived" (a connection with TCP keepalive at T/2 lived
	// past T), "failed", or "not-tested".
	Verified string `json:"verified"`
	// Cause, when set, says the failures were not an idle timeout of the
	// path or the server's idle policy: IdleCauseAMQPHandshake. Note says
	// what that means and what would test further. No finding is made.
	Cause string `json:"cause,omitempty"`
	Note  string `json:"note,omitempty"`
}

// IdleCauseAMQPHandshake: the broker closed AMQP connections that had not
// logged in, at its handshake timeout (RabbitMQ handshake_timeout, 10 s by
// default); an idle feed connection is logged in and not subject to it.
const IdleCauseAMQPHandshake = "amqp-handshake-timeout"

// ConcResult is the concurrency ramp of one address.
type ConcResult struct {
	Cap       int `json:"cap"`
	Reached   int `json:"reached"`    // connections open at once, at most
	FirstFail int `json:"first_fail"` // the ordinal of the first failing connection, 0 none
}

// Finding kinds.
const (
	KindIdleReset        = "idle-reset"
	KindIdleDrop         = "idle-drop"
	KindIdleClose        = "idle-close"
	KindConnectReset     = "connect-reset"
	KindConnectTimeout   = "connect-timeout"
	KindConcurrencyLimit = "concurrency-limit"
	KindMidstreamReset   = "midstream-reset"
	KindMidstreamClose   = "midstream-close"
	KindDataStall        = "data-stall"
)

// Finding is one problem found, with who caused it and what to do.
type Finding struct {
	Kind         string       `json:"kind"`
	Target       string       `json:"target"`
	Address      string       `json:"address"`
	Hop          int          `json:"hop"`
	HopAddress   string       `json:"hop_address"`
	Origin       probe.Origin `json:"origin"`
	Confidence   string       `json:"confidence"` // high|medium|low
	Evidence     []string     `json:"evidence"`
	Advice       string       `json:"advice"`
	IdleTimeoutS float64      `json:"idle_timeout_s,omitempty"`
	IdleBracketS []float64    `json:"idle_bracket_s,omitempty"`
	// IdleVerdict (idle kinds) judges the timeout against RFC 5382 and
	// the common vendor defaults.
	IdleVerdict *IdleVerdict `json:"idle_verdict,omitempty"`
	Limit       int          `json:"limit,omitempty"`
	Rate        float64      `json:"rate,omitempty"`
	RateCI      []float64    `json:"rate_ci,omitempty"`
	// HopCandidates lists, nearest first, every hop the evidence allows
	// when it cannot decide between them (Hop is the likelier); absent
	// when Hop is decided.
	HopCandidates []int `json:"hop_candidates,omitempty"`
	// Observations name what the evidence shows of the sender:
	// forged-ttl, on-path-injection, in-path-blocking, asymmetric-return.
	Observations []string `json:"observations,omitempty"`
	// Method says what placed the sender of the finding's RST or FIN
	// (attrib.Method): fingerprint, bracket, ttl-count, server or none;
	// "" when no packet was attributed (no capture, a drop, a finding
	// about something else).
	Method string `json:"method,omitempty"`
	// TransferBytes of ExpectedBytes arrived before a midstream-close
	// (HTTPS body bytes or echoed bytes; expected 0: unknown).
	TransferBytes int64 `json:"transfer_bytes,omitempty"`
	ExpectedBytes int64 `json:"expected_bytes,omitempty"`
	// MTUBracket is a pmtu-blackhole's path MTU: the largest packet that
	// passed and one less than the smallest that did not; Direction which
	// way ("toward-client": the server's segments die).
	MTUBracket []int  `json:"mtu_bracket,omitempty"`
	Direction  string `json:"direction,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r Report) error {
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes a short human summary.
func WriteText(w io.Writer, r Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "hopcheck tcp %s: %d address(es), %.1fs, evidence from %s\n", r.Test, len(r.Results), r.DurationS, r.Evidence)
	for _, res := range r.Results {
		fmt.Fprintf(&b, "\n%s  %s port %d (%s)\n", res.Target, res.Address, res.Port, res.App)
		if res.Error != "" {
			fmt.Fprintf(&b, "  error: %s\n", res.Error)
		}
		keys := make([]string, 0, len(res.Counts))
		for k := range res.Counts {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, res.Counts[Outcome(k)]))
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, "  connections: %s\n", strings.Join(parts, ", "))
		}
		var rates []string
		for _, k := range keys {
			if r, ok := res.Rates[Outcome(k)]; ok {
				rates = append(rates, fmt.Sprintf("%s %.2f%% [%.2f%%, %.2f%%]", k, 100*r.Rate, 100*r.CI[0], 100*r.CI[1]))
			}
		}
		if len(rates) > 0 {
			fmt.Fprintf(&b, "  failure rates (95%% interval): %s\n", strings.Join(rates, ", "))
		}
		if len(res.ResetsByOrigin) > 0 {
			fmt.Fprintf(&b, "  resets by origin: %v\n", res.ResetsByOrigin)
		}
		if t := res.Transfer; t != nil {
			fmt.Fprintf(&b, "  transfer: %d bytes in %.1fs%s; MSS %d/%d, path MTU %d, retransmissions %d\n", t.Bytes, t.DurationS,
				map[bool]string{true: " (stalled)", false: ""}[t.Stalled], t.SendMSS, t.RecvMSS, t.PathMTU, t.Retransmits)
			if c := t.Cure; c != nil {
				fmt.Fprintf(&b, "  retry with MSS clamped to %d: %s, %d bytes in %.1fs\n", c.ClampMSS, c.Outcome, c.Bytes, c.DurationS)
			}
		}
		var ph []string
		for _, name := range []string{"tcp", "tls", "first_byte"} {
			if st, ok := res.PhaseStats[name]; ok {
				ph = append(ph, fmt.Sprintf("%s %.1f/%.1f/%.1f", name, st.P50, st.P95, st.Max))
			}
		}
		if len(ph) > 0 {
			fmt.Fprintf(&b, "  phases ms (median/p95/max): %s\n", strings.Join(ph, ", "))
		}
		if res.ServerHop > 0 {
			fmt.Fprintf(&b, "  server at hop %d (SYN-ACK TTL %d)\n", res.ServerHop, res.ServerTTL)
		}
		if id := res.Idle; id != nil {
			if id.Cause != "" {
				fmt.Fprintf(&b, "  idle: closed by the server after %.1fs: %s\n", id.BracketS[1], id.Note)
			} else if id.TimeoutS > 0 {
				fmt.Fprintf(&b, "  idle timeout %.1fs (between %.1fs and %.1fs), %s; keepalive fix: %s\n",
					id.TimeoutS, id.BracketS[0], id.BracketS[1], id.Behaviour, id.Verified)
			} else {
				fmt.Fprintf(&b, "  no idle timeout up to %.0fs\n", id.MaxS)
			}
		}
		if c := res.Concurrency; c != nil {
			fmt.Fprintf(&b, "  concurrency: %d open at once (cap %d)\n", c.Reached, c.Cap)
		}
	}
	if len(r.Findings) == 0 {
		b.WriteString("\nno findings\n")
	}
	for _, f := range r.Findings {
		where := string(f.Origin)
		if f.Hop > 0 {
			where += fmt.Sprintf(" at hop %d", f.Hop)
			if f.HopAddress != "" {
				where += " (" + f.HopAddress + ")"
			}
		}
		where += attribText(f) // tcpcheck/attrib.go
		fmt.Fprintf(&b, "\nFINDING %s  %s %s  origin %s, confidence %s%s\n", f.Kind, f.Target, f.Address, where, f.Confidence, f.MethodText())
		for _, e := range f.Evidence {
			fmt.Fprintf(&b, "  - %s\n", e)
		}
		if f.Advice != "" {
			fmt.Fprintf(&b, "  advice: %s\n", f.Advice)
		}
	}
	// The run-wide caveats last, as run's text report gives them: the
	// report is where they are said (not stderr as well).
	if len(r.Warnings) > 0 {
		b.WriteString("\n")
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func flagString(f probe.TCPFlags) string {
	var parts []string
	for _, x := range []struct {
		f probe.TCPFlags
		n string
	}{{probe.FlagSYN, "SYN"}, {probe.FlagFIN, "FIN"}, {probe.FlagRST, "RST"}, {probe.FlagPSH, "PSH"}, {probe.FlagACK, "ACK"}} {
		if f.Has(x.f) {
			parts = append(parts, x.n)
		}
	}
	return strings.Join(parts, "+")
}

// IdleAdvice is the advice for an idle timeout T: client settings that
// keep connections from idling that long.
func IdleAdvice(t time.Duration, behaviour string) string {
	s := t.Seconds()
	evict := math.Max(1, math.Floor(s*0.5))
	ka := math.Max(1, math.Floor(s*0.5))
	hb := math.Max(1, math.Floor(s/2))
	var what string
	switch behaviour {
	case "drop":
		what = "Idle connections are dropped silently after about %.0fs: a pooled connection reused later hangs until a timeout."
	case "close":
		what = "Idle connections are closed after about %.0fs: reusing a pooled connection after that fails with EOF or reset."
	default:
		what = "Idle connections are reset after about %.0fs: reusing a pooled connection after that fails with a reset."
	}
	return fmt.Sprintf(what+" Keep idle time below it: Java HttpClient evictIdleConnections(%.0f s) (SDK: no eviction by default); "+
		".NET SocketsHttpHandler.PooledConnectionIdleTimeout = %.0f s; Go http.Transport.IdleConnTimeout = %.0f s; "+
		"TCP keepalive time %.0f s (net.ipv4.tcp_keepalive_time, or per socket TCP_KEEPIDLE); AMQP heartbeat %.0f s.",
		s, evict, evict, evict, ka, hb)
}
