package diagnose

import (
	"fmt"
	"sort"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// Diagnose derives every finding from the measurements of all targets. It
// is a pure function: the tests feed it synthetic measurements. It also
// sets each target's CulpritHop.
func Diagnose(targets []TargetReport) []Finding {
	var all []Finding
	for i := range targets {
		fs := diagnoseTarget(targets[i])
		targets[i].CulpritHop = culpritHop(fs)
		all = append(all, fs...)
	}
	// Most severe first; among equals, findings that name a box on the
	// path before those about the server or unplaced ones.
	sort.SliceStable(all, func(i, j int) bool {
		if ri, rj := severityRank(all[i].Severity), severityRank(all[j].Severity); ri != rj {
			return ri < rj
		}
		return placed(all[i]) && !placed(all[j])
	})
	if all == nil {
		all = []Finding{}
	}
	return all
}

func diagnoseTarget(t TargetReport) []Finding {
	var out []Finding
	base := func(kind string) tcpcheck.Finding {
		return tcpcheck.Finding{Kind: kind, Target: t.Target, Address: t.Address, Origin: probe.OriginUnknown,
			Evidence: []string{}}
	}
	// Connection-test findings, refined by localisation where it ran.
	for _, name := range tcpcheck.TestNames() {
		for _, f := range t.TestFindings[name] {
			out = append(out, refine(Finding{Finding: f}, t))
		}
	}
	out = foldStallsIntoBlackhole(out)
	out = append(out, pathFindings(t, base)...)
	out = append(out, localisationFindings(t, base)...)
	for i := range out {
		if out[i].Severity == "" {
			out[i].Severity = severityOf(out[i].Kind)
		}
		if out[i].Phase == "" {
			out[i].Phase = phaseOf(out[i].Kind)
		}
		if out[i].Evidence == nil {
			out[i].Evidence = []string{}
		}
	}
	return out
}

// refine fills hop and hop address of a connection finding from the
// localisation probes, and corrects the origin where in-flow probes saw
// the state loss at a hop.
func refine(f Finding, t TargetReport) Finding {
	loc := t.Localisation
	if loc == nil {
		return f
	}
	switch f.Kind {
	case tcpcheck.KindIdleReset, tcpcheck.KindIdleDrop:
		in := loc.InFlow
		if in == nil || in.Hop == 0 {
			break
		}
		if in.Behaviour == "reset" { // return-path fingerprints and the bracket: diagnose/attribute.go
			if g, ok := attributeInFlowReset(f, t); ok {
				f = g
				break
			}
		}
		switch in.Behaviour {
		case "reset", "reject", "drop":
			if f.Hop != in.Hop || f.Origin != probe.OriginMiddlebox {
				f.Evidence = append(f.Evidence, fmt.Sprintf("in-flow TTL-limited probes: hop %d (%s) lost the flow's state (%s); the TTL estimate said hop %d",
					in.Hop, orDash(in.HopAddress), in.Behaviour, f.Hop))
			} else {
				f.Evidence = append(f.Evidence, fmt.Sprintf("in-flow TTL-limited probes confirm hop %d (%s) lost the flow's state (%s)",
					in.Hop, orDash(in.HopAddress), in.Behaviour))
			}
			f.Hop, f.HopAddress, f.Origin = in.Hop, in.HopAddress, probe.OriginMiddlebox
			f.Advice = tcpcheck.WithoutProxyAdvice(f.Advice) // not the box that answered the SYN
			f.Confidence = "high"
			if f.Method != "" {
				// The test's RST no longer places the box: the in-flow
				// probes' forward bracket does.
				f.Method = string(attrib.MethodBracket)
			}
			if f.IdleVerdict != nil {
				f.Advice = f.IdleVerdict.WithOwnerAdvice(f.Advice, f.IdleTimeoutS)
			}
		case "server-reset":
			// Every router still forwarded the expired flow: the server reset
			// it, or a NAT remapped the port so that the server saw a stranger.
			f.Evidence = append(f.Evidence, "in-flow TTL-limited probes: every router forwarded the idle flow and the server answered it with a RST (the server dropped it, or a NAT on the path remapped the port)")
		}
	case tcpcheck.KindDataStall:
		if p := loc.PMTU; p != nil && p.BlackholeHop > 0 {
			f.Hop, f.HopAddress, f.MTU = p.BlackholeHop, p.BlackholeHopAddress, p.MTU
			f.Origin = probe.OriginMiddlebox
			f.Evidence = append(f.Evidence, fmt.Sprintf("DF probes above %d bytes vanish beyond hop %d without frag-needed: a PMTU black hole", p.MTU, p.BlackholeHop))
		}
	case tcpcheck.KindPMTUBlackhole:
		// The connect test's black hole toward the client: the forward DF
		// search says where the path MTU drops. Toward us the server's
		// packets enter that link at its far end, whose frag-needed to
		// the server is lost; the box reporting it toward us (or any
		// between) is where to clamp the MSS.
		p := loc.PMTU
		if f.Direction != "toward-client" || p == nil {
			break
		}
		switch {
		case p.FragNeededHop > 0:
			f.Hop, f.HopAddress, f.MTU, f.Origin = p.FragNeededHop, p.FragNeededHopAddress, p.MTU, probe.OriginMiddlebox
			f.Evidence = append(f.Evidence, fmt.Sprintf("the forward DF search: hop %d (%s) reports a link of MTU %d beyond it (frag-needed toward the client arrives); toward the client the server's packets enter that link at its far end, and that router's frag-needed toward the server is lost",
				p.FragNeededHop, orDash(p.FragNeededHopAddress), p.MTU))
		case p.BlackholeHop > 0:
			f.Hop, f.HopAddress, f.MTU, f.Origin = p.BlackholeHop, p.BlackholeHopAddress, p.MTU, probe.OriginMiddlebox
			f.Evidence = append(f.Evidence, fmt.Sprintf("the forward DF search: packets above %d bytes vanish beyond hop %d without frag-needed, in this direction too", p.MTU, p.BlackholeHop))
		}
	}
	return f
}

// pathFindings come from the traces: path loss, and TCP to the service
// port filtered while ICMP or UDP goes on.
func pathFindings(t TargetReport, base func(string) tcpcheck.Finding) []Finding {
	var out []Finding
	var tcpTr, otherReached *trace.Trace
	for i := range t.Traces {
		tr := &t.Traces[i]
		switch tr.Target.Protocol {
		case string(probe.TCP):
			tcpTr = tr
		default:
			if tr.Reached && otherReached == nil {
				otherReached = tr
			}
		}
		for _, h := range tr.Hops {
			if h.LossKind != trace.LossPath {
				continue
			}
			f := Finding{Finding: base(KindPathLoss)}
			f.Hop, f.HopAddress = h.TTL, firstResponder(h)
			f.Confidence = "medium"
			f.Evidence = append(f.Evidence, fmt.Sprintf("%s trace: %.0f%% loss from hop %d on, persisting to the destination (%d of %d probes answered at hop %d)",
				tr.Target.Protocol, h.LossPct, h.TTL, h.Received, h.Sent, h.TTL))
			f.Advice = fmt.Sprintf("Packets are lost from hop %d on. Ask the owner of %s for interface errors, drops and queue statistics; repeat with --rounds to confirm.", h.TTL, orDash(f.HopAddress))
			out = append(out, f)
		}
	}
	if tcpTr != nil && !tcpTr.Reached && otherReached != nil {
		last := lastAnswering(*tcpTr)
		f := Finding{Finding: base(KindTCPFiltered)}
		f.Origin = probe.OriginMiddlebox
		f.Confidence = "high"
		if last != nil {
			f.Hop, f.HopAddress = last.TTL, firstResponder(*last)
		}
		f.Evidence = append(f.Evidence,
			fmt.Sprintf("TCP SYNs to port %d get no answer beyond hop %d", t.Port, f.Hop),
			fmt.Sprintf("%s probes reach %s at hop %d", otherReached.Target.Protocol, t.Address, otherReached.ReachedTTL))
		f.Advice = fmt.Sprintf("A filter at or just after hop %d (%s) drops TCP to port %d. Check the firewall rules of that box for %s:%d.",
			f.Hop, orDash(f.HopAddress), t.Port, t.Address, t.Port)
		out = append(out, f)
	}
	return out
}

// localisationFindings come from the tracebox and PMTU probes.
func localisationFindings(t TargetReport, base func(string) tcpcheck.Finding) []Finding {
	loc := t.Localisation
	if loc == nil {
		return nil
	}
	var out []Finding
	for _, rw := range loc.Rewrites {
		if len(rw.Changes) == 0 {
			continue
		}
		kind := KindHeaderRewrite
		for _, c := range rw.Changes {
			if isNATChange(c) {
				kind = KindNAT
			}
		}
		f := Finding{Finding: base(kind)}
		f.Hop, f.HopAddress, f.Origin, f.Confidence = rw.Hop, rw.Address, probe.OriginMiddlebox, "high"
		for _, c := range rw.Changes {
			f.Evidence = append(f.Evidence, fmt.Sprintf("hop %d rewrites the TCP SYN: %s", rw.Hop, c))
		}
		if kind == KindNAT {
			f.Advice = fmt.Sprintf("Hop %d (%s) translates addresses: it keeps per-flow state, the usual place for idle expiry. Check its TCP established/idle timeout (it must exceed your pool's idle time, or enable keepalives below it).", rw.Hop, orDash(rw.Address))
		} else {
			f.Advice = fmt.Sprintf("Hop %d (%s) rewrites TCP headers (e.g. MSS clamping): it is a stateful middlebox, the usual suspect for idle expiry and resets. Include it when checking timeouts.", rw.Hop, orDash(rw.Address))
		}
		out = append(out, f)
	}
	if n := loc.NAT; n != nil && n.Translated == "yes" {
		f := Finding{Finding: base(KindNAT)}
		f.Hop, f.HopAddress, f.Origin, f.Confidence = n.Hop, n.HopAddress, probe.OriginMiddlebox, "high"
		if n.Hop == 0 {
			f.Confidence = "medium"
		}
		f.Evidence = append(f.Evidence, fmt.Sprintf("we sent from %s, the server saw %s", n.Sent, n.Seen))
		for _, c := range n.Changes {
			f.Evidence = append(f.Evidence, "translated: "+c)
		}
		if n.Evidence != "" {
			f.Evidence = append(f.Evidence, n.Evidence)
		}
		f.Advice = fmt.Sprintf("Hop %d (%s) translates addresses and keeps a mapping per flow: when the mapping of an idle flow expires, the next packet is dropped or reset. Make its TCP established timeout longer than your pools' idle time (RFC 5382: at least 2 h 4 min), or keep connections alive below it.", n.Hop, orDash(n.HopAddress))
		out = append(out, f)
	}
	if p := loc.PMTU; p != nil && p.BlackholeHop > 0 {
		f := Finding{Finding: base(KindPMTUBlackhole), MTU: p.MTU}
		f.Hop, f.HopAddress, f.Origin, f.Confidence = p.BlackholeHop, p.BlackholeHopAddress, probe.OriginMiddlebox, "high"
		f.Evidence = append(f.Evidence, fmt.Sprintf("packets up to %d bytes reach %s; larger DF packets vanish at hop %d and no frag-needed/packet-too-big comes back", p.MTU, t.Address, p.BlackholeHop))
		f.Advice = fmt.Sprintf("Path MTU is %d behind hop %d (%s), which filters ICMP frag-needed. Let ICMP type 3 code 4 (and ICMPv6 packet-too-big) through, or clamp the TCP MSS to %d on that box (iptables/nft: tcp option maxseg size set rt mtu).", p.MTU, p.BlackholeHop, orDash(p.BlackholeHopAddress), p.MTU-40)
		out = append(out, f)
	}
	return out
}

func isNATChange(c string) bool {
	for _, prefix := range []string{"src address", "src port", "dst address", "dst port", "nat"} {
		if len(c) >= len(prefix) && c[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

func lastAnswering(tr trace.Trace) *trace.Hop {
	for i := len(tr.Hops) - 1; i >= 0; i-- {
		if tr.Hops[i].Received > 0 {
			return &tr.Hops[i]
		}
	}
	return nil
}

func firstResponder(h trace.Hop) string {
	if len(h.Responders) == 0 {
		return ""
	}
	return h.Responders[0].Address
}

func orDash(s string) string {
	if s == "" {
		return "address unknown"
	}
	return s
}

func severityOf(kind string) string {
	switch kind {
	case tcpcheck.KindIdleReset, tcpcheck.KindIdleDrop, tcpcheck.KindConnectReset, tcpcheck.KindConnectTimeout,
		tcpcheck.KindConcurrencyLimit, tcpcheck.KindMidstreamReset, tcpcheck.KindMidstreamClose, tcpcheck.KindDataStall,
		KindPMTUBlackhole, KindTCPFiltered, KindNotReachable:
		return "critical"
	case tcpcheck.KindIdleClose, KindPathLoss, KindHeaderRewrite, KindNAT:
		return "warning"
	}
	return "info"
}

func severityRank(s string) int {
	switch s {
	case "critical":
		return 0
	case "warning":
		return 1
	}
	return 2
}

func phaseOf(kind string) string {
	switch kind {
	case tcpcheck.KindIdleReset, tcpcheck.KindIdleDrop, tcpcheck.KindIdleClose:
		return "idle"
	case tcpcheck.KindConnectReset, tcpcheck.KindConnectTimeout, tcpcheck.KindConcurrencyLimit, KindTCPFiltered:
		return "setup"
	case tcpcheck.KindMidstreamReset, tcpcheck.KindMidstreamClose, tcpcheck.KindDataStall, KindPMTUBlackhole:
		return "transfer"
	}
	return ""
}

// placed: the finding names a middlebox at a known hop.
func placed(f Finding) bool { return f.Hop > 0 && f.Origin == probe.OriginMiddlebox }

// culpritHop is the hop named by the most severe finding that has one.
func culpritHop(fs []Finding) int {
	best, rank := 0, 99
	for _, f := range fs {
		if f.Hop > 0 && f.Origin == probe.OriginMiddlebox && severityRank(f.Severity) < rank {
			best, rank = f.Hop, severityRank(f.Severity)
		}
	}
	return best
}

// foldStallsIntoBlackhole drops an unplaced data-stall (and a second
// black hole toward the client, the data test's) of a target whose
// connect test found a PMTU black hole toward the client: the stall is
// that black hole met again by the data test (the server's full-size
// segments vanish), and two findings for one fault, one of them "origin
// unknown", would send a reader looking for a second box. The black-hole
// finding keeps a line saying the data test stalled too.
func foldStallsIntoBlackhole(fs []Finding) []Finding {
	hole := false
	for _, f := range fs {
		hole = hole || (f.Kind == KindPMTUBlackhole && f.Direction == "toward-client")
	}
	if !hole {
		return fs
	}
	var out []Finding
	folded, holes := false, 0
	for _, f := range fs {
		if f.Kind == tcpcheck.KindDataStall && f.Hop == 0 {
			folded = true
			continue
		}
		if f.Kind == KindPMTUBlackhole && f.Direction == "toward-client" {
			// The data test's download cured by a clamped MSS beside the
			// connect test's handshakes cured likewise: one black hole.
			if holes++; holes > 1 {
				folded = true
				continue
			}
		}
		out = append(out, f)
	}
	if folded {
		for i := range out {
			if out[i].Kind == KindPMTUBlackhole && out[i].Direction == "toward-client" {
				out[i].Evidence = append(append([]string(nil), out[i].Evidence...),
					"the data test stalled too (the same black hole: the server's full-size segments do not arrive)")
				break
			}
		}
	}
	return out
}
