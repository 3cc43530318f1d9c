package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// attributeInFlowReset places the box that reset an expired flow from the
// in-flow probes' forward bracket and every hop's return-path fingerprint
// (the traces' and the in-flow probes' time-exceeded answers), instead of
// the RST's TTL count. ok is false when the in-flow probes show no reset
// to work from; f is then unchanged.
func attributeInFlowReset(f Finding, t TargetReport) (Finding, bool) {
	if t.Localisation == nil || t.Localisation.InFlow == nil {
		return f, false
	}
	in := t.Localisation.InFlow
	healthy, expired := inFlowAttribAnswers(in.Healthy), inFlowAttribAnswers(in.Expired)
	b := attrib.BracketOf(healthy, expired)
	if b == nil {
		return f, false
	}
	input := attrib.Input{Packet: attrib.Fingerprint{IPID: -1}, Server: attrib.Fingerprint{IPID: -1},
		Bracket: b, ServerAnswerAfter: tri.NotTested}
	for _, a := range expired {
		if a.Hop == b.FirstBlocked && a.Kind == attrib.KindRST {
			input.Packet.TTL = a.TTL
		}
	}
	if b.FirstBlocked > 0 && input.Packet.TTL == 0 {
		input.Kind = "unreachable"
	}
	input.ServerHop = attrib.ServerHopOf(healthy)
	for _, a := range healthy {
		if a.Kind == attrib.KindACK && a.Hop == input.ServerHop {
			input.Server.TTL = a.TTL
		}
	}
	if !input.Server.Known() {
		if res, ok := t.Tests["idle"]; ok {
			input.Server.TTL = res.ServerTTL
		}
	}
	if input.ServerHop == 0 {
		for _, tr := range t.Traces {
			if tr.Reached && (input.ServerHop == 0 || tr.ReachedTTL < input.ServerHop) {
				input.ServerHop = tr.ReachedTTL
			}
		}
	}
	answers := attrib.TraceAnswers(t.Traces)
	answers = append(answers, healthy...)
	answers = append(answers, expired...)
	input.Hops = attrib.HopPrints(answers)
	r := attrib.Attribute(input)

	before := hopText(f.Hop, f.Origin)
	f.Evidence = append(f.Evidence, "in-flow TTL-limited probes and return-path fingerprints: "+joinEvidence(r.Evidence))
	f.Origin, f.Confidence, f.Method = probe.Origin(r.Origin), r.Confidence, string(r.Method)
	// What the test's capture showed of the server after the RST stays;
	// the rest is decided again here.
	captured := slices.DeleteFunc(f.Observations, func(o string) bool {
		return o != string(attrib.ObsOnPathInjection) && o != string(attrib.ObsInPathBlocking)
	})
	f.HopCandidates, f.Observations = nil, nil
	switch r.Origin {
	case attrib.OriginMiddlebox:
		if f.Hop != r.Hop || before == "the server" {
			f.Evidence = append(f.Evidence, fmt.Sprintf("this places the box at hop %d; the test's TTL count said %s", r.Hop, before))
		}
		f.Hop, f.HopAddress = r.Hop, hopAddressOf(r.Hop, input.Hops, healthy)
	case attrib.OriginServer:
		f.Hop, f.HopAddress = r.Hop, ""
		f.Evidence = append(f.Evidence, "every router forwarded the expired flow and the server answered it with a RST (the server dropped it, or a NAT on the path remapped the port)")
	}
	if len(r.Candidates) > 1 {
		f.HopCandidates = r.Candidates
	}
	for _, o := range r.Observations {
		f.Observations = append(f.Observations, string(o))
	}
	if r.Origin == attrib.OriginMiddlebox {
		f.Observations = append(f.Observations, captured...)
	}
	return f, true
}

// inFlowAttribAnswers converts the report's in-flow answers.
func inFlowAttribAnswers(as []InFlowAnswer) []attrib.Answer {
	out := make([]attrib.Answer, 0, len(as))
	for _, a := range as {
		out = append(out, attrib.Answer{Hop: a.TTL, From: a.From, Kind: string(a.Kind), TTL: a.ReplyTTL, IPID: -1})
	}
	return out
}

// hopAddressOf is the address hop answers from: its fingerprint's, else
// its time-exceeded answer in the healthy in-flow run.
func hopAddressOf(hop int, prints []attrib.HopPrint, healthy []attrib.Answer) string {
	for _, h := range prints {
		if h.Hop == hop && h.Address != "" {
			return h.Address
		}
	}
	for _, a := range healthy {
		if a.Hop == hop && a.Kind == attrib.KindTimeExceeded {
			return a.From
		}
	}
	return ""
}

func hopText(hop int, origin probe.Origin) string {
	switch {
	case origin == probe.OriginServer:
		return "the server"
	case hop == 0:
		return "no hop"
	}
	return fmt.Sprintf("hop %d", hop)
}

func joinEvidence(ev []string) string { return strings.Join(ev, "; ") }
