// Package attrib places the sender of a RST or FIN on a hop of the path
// without assuming that the way back is as long as the way there.
//
// Counting "initial TTL − received TTL" gives the number of routers a
// packet crossed on its way BACK; on the internet the return path of a hop
// is often longer or shorter than its forward distance. A box's ICMP
// answers (time-exceeded from traces and in-flow probes) cross the same
// return path as its RSTs, so a RST is attributed to the hop whose ICMP
// answers arrive with the same TTL (its return-path fingerprint), and the
// forward bracket of the in-flow probes (time-exceeded up to TTL k, a RST
// from TTL k+1) bounds it independently of any TTL arithmetic.
//
// Everything here is pure: fingerprints in, attribution out. It sits in its
// own package so that both tcpcheck (`tcp idle`) and diagnose (`run`) can
// call it.
package attrib

import (
	"fmt"
	"slices"
	"sort"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// Origins, as probe.Origin spells them (kept as strings: this package
// imports nothing of the engine).
const (
	OriginServer    = "server"
	OriginMiddlebox = "middlebox"
	OriginUnknown   = "unknown"
)

// Confidences, as findings spell them.
const (
	ConfidenceHigh   = "high"
	ConfidenceMedium = "medium"
	ConfidenceLow    = "low"
)

// LowerConfidence returns the lower of two confidences; an unknown one
// ("" included) gives way to the other.
func LowerConfidence(a, b string) string {
	rank := map[string]int{ConfidenceLow: 0, ConfidenceMedium: 1, ConfidenceHigh: 2}
	ra, oka := rank[a]
	rb, okb := rank[b]
	switch {
	case !oka:
		return b
	case !okb:
		return a
	case rb < ra:
		return b
	}
	return a
}

// Observation names what the evidence shows about the sender.
type Observation string

// Observations.
const (
	// ObsForgedTTL: the packet carries the server's TTL but the in-flow
	// probes show it comes from a box before the server.
	ObsForgedTTL Observation = "forged-ttl"
	// ObsOnPathInjection: the server's own answer arrived after the
	// injected packet: the box watches the path and injects, it does not
	// block.
	ObsOnPathInjection Observation = "on-path-injection"
	// ObsInPathBlocking: nothing of the server arrived after the packet:
	// the box sits in the path and stopped the flow.
	ObsInPathBlocking Observation = "in-path-blocking"
	// ObsAsymmetricReturn: the sender's answers come back over more (or
	// fewer) routers than lie before it: a symmetric count is off.
	ObsAsymmetricReturn Observation = "asymmetric-return"
)

// Method says what decided the hop.
type Method string

// Methods.
const (
	MethodFingerprint Method = "fingerprint" // the packet's TTL matched the ICMP answers of a hop
	MethodBracket     Method = "bracket"     // the in-flow probes' forward bracket (no usable fingerprint)
	MethodTTLCount    Method = "ttl-count"   // initial TTL − received TTL, assuming a symmetric path
	MethodServer      Method = "server"      // the packet matches the server's SYN-ACK
	MethodNone        Method = "none"
)

// Fingerprint is what a packet shows of its sender as received.
type Fingerprint struct {
	TTL  int // IPv4 TTL / IPv6 hop limit as received; 0 or less: unknown
	IPID int // IPv4 ID; -1 unknown or IPv6
	DF   bool
}

// Known reports whether the fingerprint has a usable TTL.
func (f Fingerprint) Known() bool { return probe.InitialTTL(f.TTL) != 0 }

// Initial is the sender's initial TTL (0 unknown).
func (f Fingerprint) Initial() int { return probe.InitialTTL(f.TTL) }

// Return is how many routers the packet crossed on its way back (-1
// unknown).
func (f Fingerprint) Return() int {
	if !f.Known() {
		return -1
	}
	return f.Initial() - f.TTL
}

// HopPrint is the return-path fingerprint of the router at one forward hop:
// how its ICMP answers arrive.
type HopPrint struct {
	Hop     int    // forward hop (the probe TTL it answers)
	Address string // the address it answers from ("" unknown)
	TTL     int    // received TTL of its ICMP answers (the commonest)
	// IPIDZero: its answers carry IP ID 0 (Linux ICMP with DF does not;
	// some stacks always do); tri.NotTested when no IPv4 ID was seen.
	IPIDZero tri.State
	DF       bool
	Samples  int // answers seen
}

// Initial is the hop's initial TTL for ICMP.
func (h HopPrint) Initial() int { return probe.InitialTTL(h.TTL) }

// Return is how many routers its answers cross on the way back.
func (h HopPrint) Return() int { return h.Initial() - h.TTL }

// Asymmetry is the return distance minus the forward distance (hop − 1):
// 0 symmetric, +N a return path N routers longer.
func (h HopPrint) Asymmetry() int { return h.Return() - (h.Hop - 1) }

// Bracket is the forward evidence of in-flow probes: segments of the flow
// with TTL up to LastForwarded drew time-exceeded, from FirstBlocked on a
// RST (or unreachable). The box is hop FirstBlocked−1 when it checks the
// TTL before its filter (Linux), else hop FirstBlocked.
type Bracket struct {
	LastForwarded int // highest TTL answered with time-exceeded below FirstBlocked (0 none)
	FirstBlocked  int // lowest TTL answered by the box (RST/unreachable); 0: no bracket
}

// Candidates are the hops the bracket allows, nearest first.
func (b Bracket) Candidates() []int {
	if b.FirstBlocked <= 0 {
		return nil
	}
	if b.FirstBlocked == 1 {
		return []int{1}
	}
	return []int{b.FirstBlocked - 1, b.FirstBlocked}
}

// Input is everything known about one RST or FIN and the path.
type Input struct {
	// Packet is the RST or FIN as received.
	Packet Fingerprint
	// Kind names the packet in the evidence ("RST", "FIN"); "" = "RST".
	Kind string
	// Server is the server's SYN-ACK (or data) as received.
	Server Fingerprint
	// ServerHop is the server's forward hop (the TTL at which a trace or
	// the in-flow probes reached it); 0 unknown.
	ServerHop int
	// Hops are the return-path fingerprints of the routers.
	Hops []HopPrint
	// Bracket is the in-flow forward bracket; nil when not probed.
	Bracket *Bracket
	// ServerAnswerAfter: did a segment of the server arrive after the
	// packet (a capture shows the server still answering)?
	ServerAnswerAfter tri.State
}

// Result is who sent the packet, with the reasoning.
type Result struct {
	Origin string // OriginServer|OriginMiddlebox|OriginUnknown
	// Hop is the most likely sender (the server's hop for the server), 0
	// unknown; Candidates lists every hop the evidence allows, nearest
	// first (one entry when decided).
	Hop          int
	Candidates   []int
	Confidence   string
	Method       Method
	Observations []Observation
	Evidence     []string
}

// Decided reports whether one hop was named.
func (r Result) Decided() bool { return r.Hop > 0 && len(r.Candidates) <= 1 }

// Attribute places the sender of in.Packet. In order: a packet that looks
// like the server (same received TTL as its SYN-ACK) is the server unless
// the in-flow bracket shows a box before the server (a forged TTL); a
// packet whose TTL equals the ICMP answers of a hop is that hop, checked
// against the bracket; with no match, the bracket decides between its two
// candidates (lower confidence), and without a bracket the symmetric count
// is all there is (low confidence, said so).
func Attribute(in Input) Result {
	kind := in.Kind
	if kind == "" {
		kind = "RST"
	}
	var r Result
	switch {
	case !in.Packet.Known() && in.Bracket != nil && in.Bracket.FirstBlocked > 0:
		r = fromBracket(in, kind, fmt.Sprintf("the %s's TTL is unknown", kind))
	case !in.Packet.Known():
		r = Result{Origin: OriginUnknown, Confidence: ConfidenceLow, Method: MethodNone,
			Evidence: []string{fmt.Sprintf("the %s's TTL is unknown and no in-flow probes bracket the box", kind)}}
	case in.Server.Known() && in.Packet.TTL == in.Server.TTL:
		r = serverLike(in, kind)
	default:
		r = byFingerprint(in, kind)
	}
	if r.Origin == OriginMiddlebox {
		switch in.ServerAnswerAfter {
		case tri.Yes:
			r.Observations = append(r.Observations, ObsOnPathInjection)
			r.Evidence = append(r.Evidence, fmt.Sprintf("the server's own answer arrived after the %s: the box is on-path and injects the %s beside the flow, it does not block it (in-path)", kind, kind))
		case tri.No:
			r.Observations = append(r.Observations, ObsInPathBlocking)
			r.Evidence = append(r.Evidence, fmt.Sprintf("nothing of the server arrived after the %s: the box is in-path and stopped the flow", kind))
		}
	}
	if r.Candidates == nil && r.Hop > 0 {
		r.Candidates = []int{r.Hop}
	}
	return r
}

// serverLike: the packet arrives with the server's TTL.
func serverLike(in Input, kind string) Result {
	b := in.Bracket
	if b != nil && b.FirstBlocked > 0 && in.ServerHop > 0 && b.FirstBlocked < in.ServerHop {
		r := fromBracket(in, kind, fmt.Sprintf("the %s arrives with TTL %d like the server's SYN-ACK, but the in-flow probes are answered by it from TTL %d while the server is hop %d: the box forged the server's TTL",
			kind, in.Packet.TTL, b.FirstBlocked, in.ServerHop))
		r.Observations = append(r.Observations, ObsForgedTTL)
		return r
	}
	ev := fmt.Sprintf("the %s arrives with TTL %d, as the server's SYN-ACK does: the server sent it", kind, in.Packet.TTL)
	if b == nil {
		ev += " (a box forging the server's TTL would look the same; in-flow probes tell them apart)"
	} else if b.FirstBlocked > 0 {
		ev += fmt.Sprintf(" (the in-flow probes reach the server before anything answers: TTL %d)", b.FirstBlocked)
	}
	conf := ConfidenceHigh
	if b == nil {
		conf = ConfidenceMedium
	}
	return Result{Origin: OriginServer, Hop: in.ServerHop, Confidence: conf, Method: MethodServer, Evidence: []string{ev}}
}

// byFingerprint matches the packet against the hops' ICMP answers.
func byFingerprint(in Input, kind string) Result {
	p := in.Packet
	exact, dist := matches(in.Hops, p)
	matched, how := exact, "TTL"
	if len(exact) == 0 && len(dist) > 0 {
		// The box's TCP stack starts from another initial TTL than its
		// ICMP: only the return distance matches.
		matched, how = dist, "return distance"
	}
	b := in.Bracket
	hasBracket := b != nil && b.FirstBlocked > 0
	if len(matched) == 0 && atServerPosition(in) && (!hasBracket || slices.Contains(b.Candidates(), in.ServerHop)) {
		ev := fmt.Sprintf("the %s arrives with TTL %d: as many routers on the way back as the server's answers (TTL %d), but from initial TTL %d, the server's %d: a box at the server's position (its host firewall, or a box in front of it that does not count as a hop), not the server's TCP stack",
			kind, p.TTL, in.Server.TTL, p.Initial(), in.Server.Initial())
		if hasBracket {
			ev += "; " + bracketText(*b)
		}
		return Result{Origin: OriginMiddlebox, Hop: in.ServerHop, Confidence: ConfidenceMedium, Method: MethodFingerprint, Evidence: []string{ev}}
	}
	if len(matched) == 0 {
		if hasBracket {
			return fromBracket(in, kind, fmt.Sprintf("no hop's ICMP answers arrive with TTL %d (return distance %d) like the %s: the box sends no ICMP, or forges its TTL",
				p.TTL, p.Return(), kind))
		}
		return fromCount(in, kind)
	}
	hops := hopsOf(matched)
	ev := []string{fmt.Sprintf("the %s arrives with TTL %d (initial %d, %d routers on the way back); %s", kind, p.TTL, p.Initial(), p.Return(), describe(matched, how))}
	if hasBracket {
		inBracket := intersect(hops, b.Candidates())
		switch len(inBracket) {
		case 0:
			r := fromBracket(in, kind, fmt.Sprintf("%s, but the in-flow probes put the box at hop %s: the forward evidence wins", describe(matched, how), joinHops(b.Candidates())))
			return r
		case 1:
			h := inBracket[0]
			ev = append(ev, bracketText(*b)+fmt.Sprintf("; the fingerprint picks hop %d", h))
			r := Result{Origin: OriginMiddlebox, Hop: h, Confidence: ConfidenceHigh, Method: MethodFingerprint, Evidence: ev}
			if how != "TTL" {
				r.Confidence = ConfidenceMedium
			}
			return withAsymmetry(r, in, kind)
		default:
			ev = append(ev, bracketText(*b)+"; both candidates answer alike: undecided")
			return Result{Origin: OriginMiddlebox, Hop: closestToCount(inBracket, p), Candidates: inBracket,
				Confidence: ConfidenceMedium, Method: MethodFingerprint, Evidence: ev}
		}
	}
	if in.ServerHop > 0 {
		hops = slices.DeleteFunc(hops, func(h int) bool { return h >= in.ServerHop })
		if len(hops) == 0 {
			return fromCount(in, kind)
		}
	}
	if len(hops) == 1 {
		r := Result{Origin: OriginMiddlebox, Hop: hops[0], Confidence: ConfidenceHigh, Method: MethodFingerprint, Evidence: ev}
		if how != "TTL" {
			r.Confidence = ConfidenceMedium
		}
		return withAsymmetry(r, in, kind)
	}
	ev = append(ev, "several hops answer alike and no in-flow probes bracket the box: undecided")
	return Result{Origin: OriginMiddlebox, Hop: closestToCount(hops, p), Candidates: hops, Confidence: ConfidenceMedium,
		Method: MethodFingerprint, Evidence: ev}
}

// fromBracket decides by the in-flow bracket alone: both candidates, the
// TTL-first one (Linux) named first unless the symmetric count points at
// the other.
func fromBracket(in Input, kind, why string) Result {
	b := *in.Bracket
	cands := b.Candidates()
	hop := cands[0]
	hint := ""
	if in.Packet.Known() {
		if c := in.Packet.Return() + 1; slices.Contains(cands, c) && !isServerTTL(in) {
			hop = c
			hint = fmt.Sprintf("; a symmetric count of its TTL would say hop %d, unverified", c)
		}
	}
	ev := []string{why + "; falling back to the forward bracket of the in-flow probes: " + bracketText(b) + hint}
	conf := ConfidenceMedium
	if len(cands) == 1 {
		conf = ConfidenceHigh
	}
	return Result{Origin: OriginMiddlebox, Hop: hop, Candidates: cands, Confidence: conf, Method: MethodBracket, Evidence: ev}
}

// atServerPosition: the packet comes back over as many routers as the
// server's answers, from another initial TTL.
func atServerPosition(in Input) bool {
	return in.Server.Known() && in.ServerHop > 0 && in.Packet.Known() &&
		in.Packet.Return() == in.Server.Return() && in.Packet.Initial() != in.Server.Initial()
}

func isServerTTL(in Input) bool { return in.Server.Known() && in.Packet.TTL == in.Server.TTL }

// fromCount is the symmetric count, the last resort.
func fromCount(in Input, kind string) Result {
	p := in.Packet
	hop := p.Return() + 1
	ev := fmt.Sprintf("no hop's ICMP answers arrive with TTL %d like the %s and no in-flow probes bracket the box: counting %d−%d assumes a return path as long as the way there, hop %d",
		p.TTL, kind, p.Initial(), p.TTL, hop)
	if len(in.Hops) == 0 {
		ev = fmt.Sprintf("no hop fingerprints to compare with: counting %d−%d assumes a return path as long as the way there, hop %d", p.Initial(), p.TTL, hop)
	}
	serverHop := in.ServerHop
	if serverHop == 0 && in.Server.Known() {
		serverHop = in.Server.Return() + 1
	}
	switch {
	case serverHop > 0 && hop < serverHop:
		return Result{Origin: OriginMiddlebox, Hop: hop, Confidence: ConfidenceLow, Method: MethodTTLCount, Evidence: []string{ev}}
	case in.Server.Known() && p.Initial() != in.Server.Initial():
		return Result{Origin: OriginMiddlebox, Hop: hop, Confidence: ConfidenceLow, Method: MethodTTLCount,
			Evidence: []string{ev + fmt.Sprintf(" (it starts from initial TTL %d, the server from %d)", p.Initial(), in.Server.Initial())}}
	}
	return Result{Origin: OriginUnknown, Hop: 0, Confidence: ConfidenceLow, Method: MethodTTLCount,
		Evidence: []string{ev + "; not nearer than the server: sender unknown"}}
}

// withAsymmetry adds the asymmetric-return observation when the matched
// hop's answers do not come back over hop−1 routers.
func withAsymmetry(r Result, in Input, kind string) Result {
	for _, h := range in.Hops {
		if h.Hop != r.Hop {
			continue
		}
		if a := h.Asymmetry(); a != 0 {
			r.Observations = append(r.Observations, ObsAsymmetricReturn)
			r.Evidence = append(r.Evidence, fmt.Sprintf("hop %d's answers cross %d routers on the way back, %d on the way there (asymm %+d): counting the %s's TTL would have named hop %d",
				h.Hop, h.Return(), h.Hop-1, a, kind, in.Packet.Return()+1))
		}
		break
	}
	return r
}

// matches returns the hops whose ICMP answers arrive with the packet's TTL
// (exact) and those with only the same return distance (dist).
func matches(hops []HopPrint, p Fingerprint) (exact, dist []HopPrint) {
	for _, h := range hops {
		if h.Initial() == 0 || h.Hop <= 0 {
			continue
		}
		switch {
		case h.TTL == p.TTL:
			exact = append(exact, h)
		case h.Return() == p.Return():
			dist = append(dist, h)
		}
	}
	return exact, dist
}

func describe(hs []HopPrint, how string) string {
	if len(hs) == 1 {
		h := hs[0]
		return fmt.Sprintf("hop %d (%s)'s time-exceeded answers match its %s (TTL %d)", h.Hop, orUnknown(h.Address), how, h.TTL)
	}
	return fmt.Sprintf("hops %s answer time-exceeded with a matching %s", joinHops(hopsOf(hs)), how)
}

func bracketText(b Bracket) string {
	if b.LastForwarded == 0 {
		return fmt.Sprintf("no time-exceeded before TTL %d, then the box answers: hop %s", b.FirstBlocked, joinHops(b.Candidates()))
	}
	c := b.Candidates()
	if len(c) == 1 {
		return fmt.Sprintf("time-exceeded up to TTL %d, the box answers from TTL %d on: hop %d", b.LastForwarded, b.FirstBlocked, c[0])
	}
	return fmt.Sprintf("time-exceeded up to TTL %d, the box answers from TTL %d on: hop %d if it checks the TTL before its filter (as Linux does), else hop %d",
		b.LastForwarded, b.FirstBlocked, c[0], c[1])
}

func hopsOf(hs []HopPrint) []int {
	var out []int
	for _, h := range hs {
		if !slices.Contains(out, h.Hop) {
			out = append(out, h.Hop)
		}
	}
	sort.Ints(out)
	return out
}

func intersect(a, b []int) []int {
	var out []int
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// closestToCount picks among hops the one nearest the symmetric count.
func closestToCount(hops []int, p Fingerprint) int {
	want := p.Return() + 1
	best := hops[0]
	for _, h := range hops {
		if abs(h-want) < abs(best-want) {
			best = h
		}
	}
	return best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func joinHops(hs []int) string {
	switch len(hs) {
	case 0:
		return "?"
	case 1:
		return fmt.Sprint(hs[0])
	}
	s := ""
	for i, h := range hs {
		switch {
		case i == 0:
		case i == len(hs)-1:
			s += " or "
		default:
			s += ", "
		}
		s += fmt.Sprint(h)
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "address unknown"
	}
	return s
}
