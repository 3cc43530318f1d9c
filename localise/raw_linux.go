package localise

// The probes over raw sockets (probe.RawPath): each opens the path it
// needs, and the source port it probes from, and closes them. They need
// CAP_NET_RAW.

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// RawRewrites is ProbeRewrites from this host's source toward dst, from a
// TCP port held (bound, not listening) for the probes: the kernel answers
// the destination's SYN-ACKs to it with a RST.
func RawRewrites(ctx context.Context, dst netip.AddrPort, maxTTL int, opt Options) ([]HopRewrite, error) {
	daddr := dst.Addr().Unmap()
	src, err := probe.SourceFor(daddr)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	sport, holder, err := probe.ReservePort(probe.TCP, src)
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	defer holder.Close()
	path, err := probe.OpenRawPath(probe.RawPathConfig{Dst: daddr, Src: src, Protocol: probe.TCP, ReadTCP: true})
	if err != nil {
		return nil, fmt.Errorf("probe rewrites: %w", err)
	}
	defer path.Close()
	return ProbeRewrites(ctx, path, netip.AddrPortFrom(src, sport), dst, maxTTL, opt)
}

// RawPMTU is ProbePMTU from this host's source toward dst, up to the MTU
// of the interface that holds it. On failure the result says so (Status
// not-tested, Error).
func RawPMTU(ctx context.Context, dst netip.Addr, opt PMTUOptions) (PMTU, error) {
	opt = opt.withDefaults()
	dst = dst.Unmap()
	failed := func(err error) (PMTU, error) {
		err = fmt.Errorf("probe pmtu: %w", err)
		return PMTU{Protocol: opt.Protocol, Verdict: PMTUUndetermined, Blackhole: tri.NotTested, Outcome: Failed(err)}, err
	}
	src, err := probe.SourceFor(dst)
	if err != nil {
		return failed(err)
	}
	mtu, err := probe.InterfaceMTU(src)
	if err != nil {
		return failed(err)
	}
	from := netip.AddrPortFrom(src, 0)
	if opt.Protocol == probe.UDP || opt.Protocol == probe.TCP {
		port, holder, err := probe.ReservePort(opt.Protocol, src)
		if err != nil {
			return failed(err)
		}
		defer holder.Close()
		from = netip.AddrPortFrom(src, port)
	}
	path, err := probe.OpenRawPath(probe.RawPathConfig{Dst: dst, Src: src, Protocol: opt.Protocol, ReadTCP: opt.Protocol == probe.TCP, DontFrag: true})
	if err != nil {
		return failed(err)
	}
	defer path.Close()
	return ProbePMTU(ctx, path, from, mtu, dst, opt)
}

// RawNAT is ProbeNAT over an ICMP path toward dst, opened only when there
// is a translated address to locate.
func RawNAT(ctx context.Context, sent, seen netip.AddrPort, dst netip.Addr, maxTTL int, opt Options) (NAT, error) {
	r := NATVerdict(sent, seen, dst)
	public, ok := natTarget(&r, sent, seen, dst)
	if !ok {
		return r, nil
	}
	path, err := probe.OpenRawPath(probe.RawPathConfig{Dst: dst.Unmap(), Protocol: probe.ICMP})
	if err != nil {
		err = fmt.Errorf("probe nat: %w", err)
		r.Error = err.Error()
		return r, err
	}
	defer path.Close()
	return locateNAT(ctx, path, path.Src(), public, dst, maxTTL, opt, r)
}

// RawInFlow is ProbeInFlow over a TCP path from the flow's local address,
// which must be one of this host's: the probes are sent in the name of a
// connection of ours, never anyone else's.
func RawInFlow(ctx context.Context, flow FlowState, maxTTL int, opt Options) ([]InFlowAnswer, error) {
	local, remote, err := checkFlow(flow, maxTTL)
	if err != nil {
		return nil, err
	}
	if err := probe.CheckLocalAddr(local.Addr()); err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	path, err := probe.OpenRawPath(probe.RawPathConfig{Dst: remote.Addr(), Src: local.Addr(), Protocol: probe.TCP, ReadTCP: true})
	if err != nil {
		return nil, fmt.Errorf("probe in-flow: %w", err)
	}
	defer path.Close()
	return ProbeInFlow(ctx, path, flow, maxTTL, opt)
}
