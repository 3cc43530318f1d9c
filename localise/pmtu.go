package localise

// Path MTU search and black-hole localisation: result types and the pure
// planning and analysis; pmtu_probe.go sends and receives.

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// PMTUVerdict sums up a path MTU search.
type PMTUVerdict string

// PMTU verdicts.
const (
	// PMTUNoBottleneck: the largest packet this host can send (its
	// interface MTU) reached the destination.
	PMTUNoBottleneck PMTUVerdict = "no-bottleneck"
	// PMTUAnnounced: a smaller link on the path, announced with
	// frag-needed / packet-too-big: path MTU discovery works.
	PMTUAnnounced PMTUVerdict = "frag-needed"
	// PMTUBlackhole: a smaller link whose frag-needed / packet-too-big
	// never arrives: packets above the path MTU vanish.
	PMTUBlackhole PMTUVerdict = "blackhole"
	// PMTUUndetermined: the destination did not answer, or the answers
	// contradict each other (Reason says which).
	PMTUUndetermined PMTUVerdict = "undetermined"
)

// PMTUAnswerKind is what answered one size-and-TTL probe.
type PMTUAnswerKind string

// PMTU probe answers.
const (
	PMTUReply         PMTUAnswerKind = "reply" // from the destination: echo reply, port unreachable, SYN-ACK or RST
	PMTUTimeExceeded  PMTUAnswerKind = "time-exceeded"
	PMTUTooBig        PMTUAnswerKind = "frag-needed" // IPv4 frag-needed or ICMPv6 packet-too-big
	PMTUUnreachable   PMTUAnswerKind = "unreachable" // another ICMP error
	PMTUNoAnswer      PMTUAnswerKind = "none"
	pmtuAnswerUnknown PMTUAnswerKind = ""
)

// rank orders answers of repeated probes: the most telling one is kept.
func (k PMTUAnswerKind) rank() int {
	switch k {
	case PMTUReply:
		return 5
	case PMTUTooBig:
		return 4
	case PMTUTimeExceeded:
		return 3
	case PMTUUnreachable:
		return 2
	case PMTUNoAnswer:
		return 1
	}
	return 0
}

// PMTUAnswer is the answer to a probe of one size with one TTL.
type PMTUAnswer struct {
	Kind PMTUAnswerKind `json:"kind"`
	From netip.Addr     `json:"from"` // zero: nothing
	MTU  int            `json:"mtu,omitempty"`
}

// PMTUHop is one TTL of the localisation: a probe of the path MTU
// (Control) and one just above it (Big).
type PMTUHop struct {
	TTL     int        `json:"ttl"`
	Control PMTUAnswer `json:"control"`
	Big     PMTUAnswer `json:"big"`
}

// PMTUSignal is a frag-needed / packet-too-big that arrived.
type PMTUSignal struct {
	From netip.Addr `json:"from"`
	MTU  int        `json:"mtu"`  // the next-hop MTU it reports
	Size int        `json:"size"` // the size of the probe it answered
	TTL  int        `json:"ttl"`  // the probe's TTL
}

// PMTU is a path MTU search toward one destination and, when the path MTU
// is below this host's, where packets above it die, as the run report
// holds it (docs/schema-run.md, PMTU).
type PMTU struct {
	// MTU is the largest packet (IP total length) that reached the
	// destination with DF set; 0 when it answered nothing.
	MTU int `json:"mtu"`
	// BlackholeHop is the router at the black hole: the last hop that
	// still answered a packet above the MTU (time-exceeded), beyond which
	// such packets vanish although packets of the MTU pass. It is the
	// router whose next link is the small one and whose frag-needed never
	// reaches us (it hides it, or a filter on the way back drops it). With
	// silent routers after it, the small link is behind one of
	// BlackholeHop..BlackholeHopUpTo. 0: no black hole.
	BlackholeHop        int    `json:"blackhole_hop"`
	BlackholeHopAddress string `json:"blackhole_hop_address"`
	// FragNeededSeen: did any router report a smaller link (frag-needed /
	// packet-too-big)? Meaningful when Status is not not-tested.
	FragNeededSeen bool        `json:"frag_needed_seen"`
	Verdict        PMTUVerdict `json:"verdict,omitempty"`
	// Blackhole: do packets above MTU vanish silently? Not tested when
	// there is no bottleneck or the destination did not answer.
	Blackhole        tri.State `json:"blackhole,omitempty"`
	BlackholeHopUpTo int       `json:"blackhole_hop_up_to,omitempty"`
	// FragNeededHop is the router that reports the bottleneck (0: none,
	// or not located), FragNeededHopAddress the address it sends from.
	FragNeededHop        int    `json:"frag_needed_hop,omitempty"`
	FragNeededHopAddress string `json:"frag_needed_hop_address,omitempty"`
	// LocalMTU is the outgoing interface's MTU (or the size cap given):
	// the largest packet tried.
	LocalMTU int            `json:"local_mtu,omitempty"`
	Protocol probe.Protocol `json:"protocol,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	// Outcome: yes when the path MTU is below this host's (frag-needed or
	// black hole), no when it is not, not-tested when undetermined or
	// failed (Error).
	Outcome
	// FragNeeded are the frag-needed reports that arrived and Hops the
	// TTL-limited probes of the localisation (empty when there is no
	// bottleneck): the evidence behind the verdict, for logs and tests.
	FragNeeded []PMTUSignal `json:"-"`
	Hops       []PMTUHop    `json:"-"`
}

// pmtuLadder are the sizes tried first: the MTUs of common links and
// tunnels (PPPoE 1492, IPsec/GRE/VXLAN/WireGuard overheads, IPv6 minimum
// 1280, jumbo frames).
var pmtuLadder = []int{576, 1006, 1280, 1300, 1340, 1380, 1400, 1420, 1440, 1450, 1460, 1472, 1480, 1492, 1500,
	4352, 8192, 9000}

// firstSizes are the sizes of the first round: a small probe (is the
// destination answering at all?), the ladder between, and the largest.
func firstSizes(small, largest, floor int) []int {
	sizes := []int{small}
	for _, s := range pmtuLadder {
		if s > small && s >= floor && s < largest {
			sizes = append(sizes, s)
		}
	}
	if largest > small {
		sizes = append(sizes, largest)
	}
	return sizes
}

// searchBounds returns the largest size that reached the destination (0
// if none) and the smallest larger size that did not (0 if none).
func searchBounds(best map[int]PMTUAnswer) (lo, hi int) {
	for size, a := range best {
		if a.Kind == PMTUReply && size > lo {
			lo = size
		}
	}
	for size, a := range best {
		if a.Kind != PMTUReply && a.Kind != pmtuAnswerUnknown && size > lo && (hi == 0 || size < hi) {
			hi = size
		}
	}
	return lo, hi
}

// narrow applies frag-needed reports to the bounds: a router reporting
// next-hop MTU m for a probe above m says packets of m pass it; if m
// itself reached the destination, the path MTU is m.
func narrow(lo, hi int, signals []PMTUSignal) int {
	for _, s := range signals {
		if s.MTU == lo && s.Size > s.MTU && (hi == 0 || lo+1 < hi) {
			hi = lo + 1
		}
	}
	return hi
}

// nextSizes picks up to n sizes strictly between lo and hi: the MTUs that
// frag-needed reports name first, then evenly spread ones.
func nextSizes(lo, hi int, signals []PMTUSignal, n int) []int {
	var sizes []int
	add := func(s int) {
		if s > lo && s < hi && !slices.Contains(sizes, s) && len(sizes) < n {
			sizes = append(sizes, s)
		}
	}
	for _, s := range signals {
		add(s.MTU)
	}
	gap := hi - lo
	k := n - len(sizes)
	for i := 1; i <= k; i++ {
		add(lo + gap*i/(k+1))
	}
	slices.Sort(sizes)
	return sizes
}

// bottleneck is where the localisation places the small link.
type bottleneck struct {
	fragHop                     int
	fragAddr                    netip.Addr
	fragMTU                     int
	blackhole                   tri.State
	blackholeHop, blackholeUpTo int
	blackholeAddr               netip.Addr
	reason                      string
}

// locateBottleneck reads the TTL-limited probes of the path MTU (Control)
// and of one size above it (Big), in TTL order.
//
// A frag-needed for Big places the small link behind the router that sent
// it: the hop at which that router answered time-exceeded, or — Linux
// checks the TTL before the MTU, so a router's frag-needed first answers
// TTL k+1 — the frag-needed's first TTL minus one.
//
// Without one, the black hole is after the last TTL at which Big still got
// time-exceeded, provided Control got answers beyond it: Big dies on the
// next link and nobody says so.
func locateBottleneck(hops []PMTUHop) bottleneck {
	var b bottleneck
	for _, h := range hops {
		if h.Big.Kind != PMTUTooBig {
			continue
		}
		b.fragAddr, b.fragMTU = h.Big.From, h.Big.MTU
		b.fragHop = max(h.TTL-1, 1)
		for _, g := range hops {
			if g.TTL <= h.TTL && (g.Control.Kind == PMTUTimeExceeded && g.Control.From == h.Big.From ||
				g.Big.Kind == PMTUTimeExceeded && g.Big.From == h.Big.From) {
				b.fragHop = g.TTL
				break
			}
		}
		b.blackhole = tri.No
		b.reason = fmt.Sprintf("%s (hop %d) answers packets above the path MTU with frag-needed, next-hop MTU %d", b.fragAddr, b.fragHop, b.fragMTU)
		return b
	}
	last, next := 0, 0
	for _, h := range hops {
		if h.Big.Kind == PMTUReply {
			b.blackhole = tri.No
			b.reason = fmt.Sprintf("a packet above the path MTU reached the destination at TTL %d: the bottleneck did not show again", h.TTL)
			return b
		}
		if h.Big.Kind != PMTUNoAnswer && h.Big.Kind != pmtuAnswerUnknown {
			last = h.TTL
		}
	}
	var nextKind PMTUAnswerKind
	for _, h := range hops {
		if h.TTL > last && h.Control.Kind != PMTUNoAnswer && h.Control.Kind != pmtuAnswerUnknown {
			next, nextKind = h.TTL, h.Control.Kind
			break
		}
	}
	if next == 0 {
		b.blackhole = tri.NotTested
		b.reason = fmt.Sprintf("packets of the path MTU got no answer beyond TTL %d either: the black hole cannot be placed", last)
		return b
	}
	b.blackhole = tri.Yes
	b.blackholeHop, b.blackholeUpTo = max(last, 1), next-1
	if nextKind == PMTUReply {
		b.blackholeUpTo = next // the destination's own link may be the small one
	}
	b.blackholeUpTo = max(b.blackholeUpTo, b.blackholeHop)
	for _, h := range hops {
		if h.TTL == last {
			b.blackholeAddr = h.Big.From
		}
	}
	where := fmt.Sprintf("hop %d", b.blackholeHop)
	if b.blackholeUpTo > b.blackholeHop {
		where = fmt.Sprintf("one of hops %d-%d", b.blackholeHop, b.blackholeUpTo)
	}
	b.reason = fmt.Sprintf("packets above the path MTU got time-exceeded up to TTL %d and nothing beyond, while packets of the path MTU were answered at TTL %d (%s): the black hole is behind %s, and no frag-needed arrived", last, next, nextKind, where)
	return b
}

// uniqueSignals keeps the first report of each router and MTU.
func uniqueSignals(sigs []PMTUSignal) []PMTUSignal {
	var out []PMTUSignal
	for _, s := range sigs {
		if !slices.ContainsFunc(out, func(o PMTUSignal) bool { return o.From == s.From && o.MTU == s.MTU }) {
			out = append(out, s)
		}
	}
	return out
}
