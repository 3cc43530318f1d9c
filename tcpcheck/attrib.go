package tcpcheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/attrib"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/trace"
)

// PathPrints are the return-path fingerprints of the hops toward one
// address: how each router's ICMP answers arrive, and where the
// destination answered (0 not reached).
type PathPrints struct {
	Hops      []attrib.HopPrint
	ServerHop int
}

// HopPrints traces toward dst with TCP SYNs to its port (two per TTL, up
// to maxHop) and returns the fingerprints of the answering routers: what
// a RST is matched against instead of a symmetric hop count.
func HopPrints(ctx context.Context, dst netip.AddrPort, maxHop int) PathPrints {
	if maxHop < 1 || maxHop > 255 {
		maxHop = 30
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pr, err := probe.NewProber(ctx, probe.Config{Protocol: probe.TCP, Dst: dst.Addr(), DstPort: dst.Port(), Privilege: "auto"})
	if err != nil {
		return PathPrints{}
	}
	defer pr.Close()
	cfg := trace.DefaultConfig()
	cfg.Port, cfg.MaxHops, cfg.Queries, cfg.Timeout = dst.Port(), maxHop, 2, 2*time.Second
	obs, _ := trace.Run(ctx, pr, cfg, trace.Destination{Addr: dst.Addr(), Protocol: probe.TCP, Port: dst.Port()})
	return pathPrintsOf(obs)
}

// pathPrintsOf extracts the fingerprints from trace observations.
func pathPrintsOf(obs []trace.Observation) PathPrints {
	var out PathPrints
	var answers []attrib.Answer
	for _, o := range obs {
		r := o.Response
		if r == nil {
			continue
		}
		if r.Reached() {
			if out.ServerHop == 0 || o.TTL < out.ServerHop {
				out.ServerHop = o.TTL
			}
			continue
		}
		answers = append(answers, attrib.Answer{Hop: o.TTL, From: r.From.Unmap().String(), Kind: string(r.Kind), TTL: r.ReplyTTL, IPID: r.ReplyIPID})
	}
	out.Hops = attrib.HopPrints(answers)
	return out
}

// reattribution is what the return-path fingerprints say of a captured
// RST or FIN, to fold into a finding.
type reattribution struct {
	result  attrib.Result
	address string // the chosen hop's address from its fingerprint ("" unknown)
}

// reattribute places the sender of the packet behind attr by the hops'
// return-path fingerprints (attrib.Attribute) instead of a symmetric
// count; nil when it cannot (no capture, no lookup, packet not found).
func (s *session) reattribute(ctx context.Context, attr *probe.Attribution) *reattribution {
	lookup := s.opt.HopPrints
	if lookup == nil && s.opt.HopAddress != nil {
		lookup = HopPrints
	}
	if attr == nil || !s.observing() || lookup == nil {
		return nil
	}
	pkt, capture, ok := s.packetOf(attr)
	if !ok || pkt.TTL <= 0 {
		return nil
	}
	s.mu.Lock()
	serverHop := s.res.ServerHop
	s.mu.Unlock()
	server := s.attr.Server()
	if !server.Known() {
		// Every connection failed, so none taught the session the server's
		// SYN-ACK: this flow's own answers it (as the soak does).
		server = flowServer(capture)
	}
	maxHop := 30
	if serverHop > 0 {
		maxHop = min(serverHop+1, 30) // beyond it only the server answers: few SYNs reach it
	}
	pp := lookup(ctx, s.dst, maxHop)
	in := attrib.Input{
		Packet:            attrib.Fingerprint{TTL: pkt.TTL, IPID: pkt.IPID, DF: pkt.DF},
		Kind:              kindOfFlags(pkt.Flags),
		Server:            attrib.Fingerprint{TTL: server.TTL, IPID: -1, DF: server.DF},
		ServerHop:         pp.ServerHop,
		Hops:              pp.Hops,
		ServerAnswerAfter: serverAnswerAfter(capture, pkt.TTL, server.TTL),
	}
	r := attrib.Attribute(in)
	ra := &reattribution{result: r}
	for _, h := range pp.Hops {
		if h.Hop == r.Hop && r.Origin == attrib.OriginMiddlebox {
			ra.address = h.Address
		}
	}
	return ra
}

// packetOf finds the captured packet behind an attribution, with its
// connection's packet history (nil when none was kept).
func (s *session) packetOf(attr *probe.Attribution) (PacketRec, *probe.FlowCapture, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.res.Connections {
		for _, p := range c.Packets {
			if p.Reason == attr.Reason && p.Hop == attr.Hop && p.Origin == attr.Origin {
				return p, c.Capture, true
			}
		}
	}
	return PacketRec{}, nil, false
}

// ServerAnswerAfter is serverAnswerAfter for the soak, which places the
// RSTs of its own flows the same way.
func ServerAnswerAfter(c *probe.FlowCapture, rstTTL, serverTTL int) tri.State {
	return serverAnswerAfter(c, rstTTL, serverTTL)
}

// serverAnswerAfter reads a connection's packet history: did the server
// (a segment with its SYN-ACK's TTL) still send after the RST that
// arrived with rstTTL? Yes: the RST was injected beside the flow
// (on-path); no: nothing of the server followed (in-path). serverTTL 0
// (unknown) takes the history's own SYN-ACK. Not tested without a
// history, without the RST in it, or when the RST carries the server's
// own TTL (the two cannot be told apart). Pure.
func serverAnswerAfter(c *probe.FlowCapture, rstTTL, serverTTL int) tri.State {
	if c != nil && serverTTL <= 0 {
		serverTTL = flowServer(c).TTL
	}
	if c == nil || rstTTL <= 0 || serverTTL <= 0 || rstTTL == serverTTL {
		return tri.NotTested
	}
	seenRST := false
	for _, p := range c.Packets {
		if p.Out {
			continue
		}
		info, err := probe.DecodeCaptured(p.Data)
		if err != nil || info.TCP == nil {
			continue
		}
		switch {
		case !seenRST:
			seenRST = info.TCP.Flags.Has(probe.FlagRST) && info.TTL == rstTTL
		case info.TTL == serverTTL:
			return tri.Yes
		}
	}
	if !seenRST {
		return tri.NotTested
	}
	return tri.No
}

// flowServer is the fingerprint of the first SYN-ACK the history received
// (unknown when none was kept). Pure.
func flowServer(c *probe.FlowCapture) probe.Fingerprint {
	if c == nil {
		return probe.Fingerprint{}
	}
	for _, p := range c.Packets {
		if p.Out {
			continue
		}
		info, err := probe.DecodeCaptured(p.Data)
		if err != nil || info.TCP == nil {
			continue
		}
		if info.TCP.Flags.Has(probe.FlagSYN) && info.TCP.Flags.Has(probe.FlagACK) {
			return probe.Fingerprint{TTL: info.TTL, DF: info.DF}
		}
	}
	return probe.Fingerprint{}
}

func kindOfFlags(flags string) string {
	if len(flags) >= 3 && flags[:3] == "FIN" {
		return "FIN"
	}
	return "RST"
}

// apply folds the reattribution into f: origin, hop, candidates,
// confidence (never above what the finding had), observations, evidence.
func (ra *reattribution) apply(f *Finding) {
	if ra == nil {
		return
	}
	r := ra.result
	f.Evidence = append(f.Evidence, r.Evidence...)
	if r.Origin == attrib.OriginUnknown {
		return
	}
	// A correction only when the count named another sender: the same hop
	// found by both (the count's origin merely unsure) corrects nothing.
	if r.Origin == attrib.OriginMiddlebox && (f.Origin == probe.OriginServer || f.Hop != r.Hop) {
		f.Evidence = append(f.Evidence, fmt.Sprintf("return-path fingerprints correct the TTL count: hop %d, not %s", r.Hop, hopText(f.Hop, f.Origin)))
	}
	f.Origin = probe.Origin(r.Origin)
	f.Method = string(r.Method)
	if r.Origin == attrib.OriginMiddlebox {
		f.Hop = r.Hop
		if ra.address != "" {
			f.HopAddress = ra.address
		}
	}
	if len(r.Candidates) > 1 {
		f.HopCandidates = r.Candidates
	}
	f.Confidence = attrib.LowerConfidence(f.Confidence, r.Confidence)
	for _, o := range r.Observations {
		f.Observations = append(f.Observations, string(o))
	}
}

// countMethod is the method behind a symmetric count's attribution
// (probe.Attribute), for a finding that takes its origin and hop from it
// before any reattribution: server when the packet carries the server's
// TTL, ttl-count when its TTL was counted, none when its TTL is unknown;
// "" without an attribution.
func countMethod(a *probe.Attribution) string {
	switch {
	case a == nil:
		return ""
	case a.Origin == probe.OriginServer:
		return string(attrib.MethodServer)
	case a.Hop == 0 && a.Origin == probe.OriginUnknown:
		return string(attrib.MethodNone)
	}
	return string(attrib.MethodTTLCount)
}

// MethodText is " (by fingerprint)" for a finding whose sender a method
// placed, else "": the text reports add it to a finding's confidence.
func (f Finding) MethodText() string {
	if f.Method == "" || f.Method == string(attrib.MethodNone) {
		return ""
	}
	return " (by " + f.Method + ")"
}

func hopText(hop int, origin probe.Origin) string {
	if origin == probe.OriginServer {
		return "the server"
	}
	if hop == 0 {
		return "unknown"
	}
	return fmt.Sprintf("hop %d", hop)
}

// attribText is what the text report adds to a finding's origin: the
// undecided hop candidates and the named observations.
func attribText(f Finding) string {
	s := f.UndecidedText()
	if len(f.Observations) > 0 {
		s += " [" + strings.Join(f.Observations, ", ") + "]"
	}
	return s
}

// UndecidedText is ", undecided between hops 3 and 4" when the evidence
// left more than one hop candidate, else "": the text reports of tcpcheck
// and diagnose both add it to a finding's origin.
func (f Finding) UndecidedText() string {
	if len(f.HopCandidates) <= 1 {
		return ""
	}
	hops := make([]string, len(f.HopCandidates))
	for i, h := range f.HopCandidates {
		hops[i] = fmt.Sprint(h)
	}
	return ", undecided between hops " + strings.Join(hops, " and ")
}
