package tcpcheck

import (
	"fmt"
	"math"
	"strings"

	"github.com/hopcheck/hopcheck/probe"
)

// RFC5382EstablishedIdleS is RFC 5382 §5 REQ-5's least established-
// connection idle timeout of a NAT (2 h 4 min), which RFC 7857 (BCP 127,
// updating RFC 5382) keeps.
const RFC5382EstablishedIdleS = 7440

// VendorIdleDefault is a common default idle timeout and the box classes
// that use it (docs/reference: field facts, from vendors' documentation).
type VendorIdleDefault struct {
	S     float64
	Boxes string
}

// VendorIdleDefaults are the common defaults, ascending.
var VendorIdleDefaults = []VendorIdleDefault{
	{240, "Azure Load Balancer and NAT Gateway (4 min)"},
	{270, "Cloudflare Gateway"},
	{300, "F5 BIG-IP FastL4; home routers (5-10 min typical)"},
	{350, "AWS NAT Gateway, NLB, GWLB; AWS Network Firewall (default)"},
	{600, "home routers (5-10 min typical)"},
	{900, "no box class on hopcheck's list"},
	{1800, "Cisco ASA, Palo Alto, FortiGate, Check Point (30-60 min)"},
	{3600, "Cisco ASA, Palo Alto, FortiGate, Check Point (30-60 min); Kaspersky NGFW"},
	{7440, "TNSR; the RFC 5382 minimum"},
}

// IdleVerdict is what a firewall owner needs to know about a measured
// idle timeout: whether it meets RFC 5382 §5 REQ-5 and which common
// default it is nearest to.
type IdleVerdict struct {
	// RFC5382 is "meets" when the timeout is at least 7440 s, "below"
	// otherwise.
	RFC5382          string  `json:"rfc5382"`
	RFC5382MinimumS  float64 `json:"rfc5382_minimum_s"`
	NearestDefaultS  float64 `json:"nearest_default_s"`
	NearestDefaultOf string  `json:"nearest_default_of"`
	// MatchesDefault: the default lies within the measured bracket
	// widened by 5 % (the timeout is probably that default, unchanged).
	MatchesDefault bool `json:"matches_default"`
}

// RFC 5382 verdicts.
const (
	RFC5382Meets = "meets"
	RFC5382Below = "below"
)

// NewIdleVerdict judges a timeout of timeoutS measured within (lo, hi].
func NewIdleVerdict(timeoutS, lo, hi float64) IdleVerdict {
	v := IdleVerdict{RFC5382: RFC5382Below, RFC5382MinimumS: RFC5382EstablishedIdleS}
	if timeoutS >= RFC5382EstablishedIdleS {
		v.RFC5382 = RFC5382Meets
	}
	best := math.Inf(1)
	for _, d := range VendorIdleDefaults {
		if dist := math.Abs(math.Log(timeoutS / d.S)); dist < best {
			best, v.NearestDefaultS, v.NearestDefaultOf = dist, d.S, d.Boxes
		}
	}
	v.MatchesDefault = v.NearestDefaultS >= lo*0.95 && v.NearestDefaultS <= hi*1.05
	return v
}

// Evidence says the verdict in one line.
func (v IdleVerdict) Evidence(timeoutS float64) string {
	var b strings.Builder
	if v.RFC5382 == RFC5382Meets {
		fmt.Fprintf(&b, "%.0fs meets RFC 5382 §5 REQ-5 (established idle timeout at least 2 h 4 min = %.0fs, kept by RFC 7857)", timeoutS, v.RFC5382MinimumS)
	} else {
		fmt.Fprintf(&b, "%.0fs is below RFC 5382 §5 REQ-5 (a NAT's established idle timeout must be at least 2 h 4 min = %.0fs, kept by RFC 7857)", timeoutS, v.RFC5382MinimumS)
	}
	if v.MatchesDefault {
		fmt.Fprintf(&b, "; it matches the common default of %.0fs: %s", v.NearestDefaultS, v.NearestDefaultOf)
	} else {
		fmt.Fprintf(&b, "; no common default matches (nearest: %.0fs, %s)", v.NearestDefaultS, v.NearestDefaultOf)
	}
	return b.String()
}

// ownerAdvicePrefix starts the advice for the owner of the box.
const ownerAdvicePrefix = "For the owner of the box:"

// OwnerAdvice is what the owner of a box with this idle timeout should
// do.
func (v IdleVerdict) OwnerAdvice(timeoutS float64) string {
	s := fmt.Sprintf("%s its TCP established idle timeout is about %.0fs", ownerAdvicePrefix, timeoutS)
	if v.MatchesDefault {
		s += fmt.Sprintf(", the default of %s", v.NearestDefaultOf)
	}
	if v.RFC5382 == RFC5382Below {
		return s + fmt.Sprintf("; RFC 5382 §5 REQ-5 (kept by RFC 7857) asks a NAT for at least %.0fs (2 h 4 min): raise it to that, or at least above the clients' longest pooled idle time.", v.RFC5382MinimumS)
	}
	return s + "; it meets RFC 5382 §5 REQ-5, so clients must keep idle connections below it (keepalive or eviction)."
}

// WithOwnerAdvice appends the owner's advice to advice, once.
func (v IdleVerdict) WithOwnerAdvice(advice string, timeoutS float64) string {
	if strings.Contains(advice, ownerAdvicePrefix) {
		return advice
	}
	return strings.TrimSpace(advice + " " + v.OwnerAdvice(timeoutS))
}

// proxyAdvicePrefix starts the advice about a TCP-terminating load
// balancer or proxy in front of the server.
const proxyAdvicePrefix = "The box that answered the SYN ended the connection"

// ProxyIdleAdvice is the advice for an idle timeout enforced by the box
// that answered the SYN. hopcheck cannot tell the server from a load
// balancer or proxy that terminates TCP in front of it (an L4 load
// balancer's SYN-ACK, FIN and RST all come from the load balancer), so it
// names both and the settings of the common ones.
func ProxyIdleAdvice(timeoutS float64) string {
	return fmt.Sprintf("%s: the server, or a load balancer or proxy in front of it that terminates TCP (yours on the way out, or the service's virtual address). "+
		"If it is a load balancer or proxy, its idle timeout of about %.0fs is the setting: HAProxy timeout client / timeout server, "+
		"nginx stream proxy_timeout, AWS ALB idle_timeout (60 s default) or NLB TCP idle timeout (350 s), Azure Load Balancer idle timeout (4 min default); "+
		"its owner can raise it above the clients' longest pooled idle time, else keep idle time below it.", proxyAdvicePrefix, timeoutS)
}

// WithProxyAdvice appends ProxyIdleAdvice, once, to the advice of an idle
// finding whose FIN/RST came from the box that answered the SYN (tcp,
// run and soak).
func WithProxyAdvice(advice string, origin probe.Origin, timeoutS float64) string {
	if origin != probe.OriginServer || strings.Contains(advice, proxyAdvicePrefix) {
		return advice
	}
	return strings.TrimSpace(advice + " " + ProxyIdleAdvice(timeoutS))
}

// WithoutProxyAdvice removes what WithProxyAdvice appended: for a finding
// that later evidence (in-flow probes) moves from the server to a middlebox.
func WithoutProxyAdvice(advice string) string {
	if i := strings.Index(advice, proxyAdvicePrefix); i >= 0 {
		return strings.TrimSpace(advice[:i])
	}
	return advice
}
