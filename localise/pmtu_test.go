package localise

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

func TestFirstSizes(t *testing.T) {
	for _, c := range []struct {
		largest, floor int
		want           []int
	}{
		{1500, 0, []int{128, 576, 1006, 1280, 1300, 1340, 1380, 1400, 1420, 1440, 1450, 1460, 1472, 1480, 1492, 1500}},
		{1500, 1280, []int{128, 1280, 1300, 1340, 1380, 1400, 1420, 1440, 1450, 1460, 1472, 1480, 1492, 1500}},
		{1400, 1280, []int{128, 1280, 1300, 1340, 1380, 1400}},
		{9000, 1280, []int{128, 1280, 1300, 1340, 1380, 1400, 1420, 1440, 1450, 1460, 1472, 1480, 1492, 1500, 4352, 8192, 9000}},
		{1350, 0, []int{128, 576, 1006, 1280, 1300, 1340, 1350}},
		{100, 0, []int{128}},
	} {
		if got := firstSizes(128, c.largest, c.floor); !slices.Equal(got, c.want) {
			t.Errorf("firstSizes(128, %d, %d) = %v, want %v", c.largest, c.floor, got, c.want)
		}
	}
}

func TestSearchBounds(t *testing.T) {
	reply, none := PMTUAnswer{Kind: PMTUReply}, PMTUAnswer{Kind: PMTUNoAnswer}
	tooBig := PMTUAnswer{Kind: PMTUTooBig, MTU: 1280}
	for _, c := range []struct {
		name   string
		best   map[int]PMTUAnswer
		lo, hi int
	}{
		{"all reach", map[int]PMTUAnswer{128: reply, 1280: reply, 1500: reply}, 1500, 0},
		{"black hole above 1280", map[int]PMTUAnswer{128: reply, 1280: reply, 1300: none, 1500: none}, 1280, 1300},
		{"frag-needed above 1280", map[int]PMTUAnswer{128: reply, 1280: reply, 1300: tooBig, 1500: tooBig}, 1280, 1300},
		{"a lost small probe among larger answered ones", map[int]PMTUAnswer{128: reply, 1280: none, 1400: reply, 1500: none}, 1400, 1500},
		{"nothing answers", map[int]PMTUAnswer{128: none, 1500: none}, 0, 128},
		{"empty", map[int]PMTUAnswer{}, 0, 0},
	} {
		if lo, hi := searchBounds(c.best); lo != c.lo || hi != c.hi {
			t.Errorf("%s: %d-%d, want %d-%d", c.name, lo, hi, c.lo, c.hi)
		}
	}
}

func TestNarrowAndNextSizes(t *testing.T) {
	sig := func(mtu, size int) PMTUSignal { return PMTUSignal{MTU: mtu, Size: size} }
	if hi := narrow(1280, 1300, []PMTUSignal{sig(1280, 1500)}); hi != 1281 {
		t.Errorf("frag-needed naming the MTU that passed: hi %d, want 1281", hi)
	}
	if hi := narrow(1280, 1300, []PMTUSignal{sig(1290, 1500)}); hi != 1300 {
		t.Errorf("frag-needed naming a size not yet tried: hi %d, want 1300", hi)
	}
	if hi := narrow(1280, 1281, []PMTUSignal{sig(1280, 1500)}); hi != 1281 {
		t.Errorf("already exact: hi %d", hi)
	}
	for _, c := range []struct {
		lo, hi  int
		signals []PMTUSignal
		want    []int
	}{
		{1280, 1300, nil, []int{1282, 1285, 1287, 1290, 1292, 1295, 1297}},
		{1280, 1300, []PMTUSignal{sig(1290, 1500)}, []int{1282, 1285, 1288, 1290, 1291, 1294, 1297}},
		{1280, 1300, []PMTUSignal{sig(1291, 1500)}, []int{1282, 1285, 1288, 1291, 1294, 1297}},
		{1280, 1282, nil, []int{1281}},
		{1280, 1281, nil, nil},
		{1400, 1500, []PMTUSignal{sig(1280, 1500)}, []int{1412, 1425, 1437, 1450, 1462, 1475, 1487}},
	} {
		if got := nextSizes(c.lo, c.hi, c.signals, 7); !slices.Equal(got, c.want) {
			t.Errorf("nextSizes(%d, %d, %v) = %v, want %v", c.lo, c.hi, c.signals, got, c.want)
		}
	}
}

// hopsOf writes localisation rows compactly, one token per TTL from 1,
// control/big: "T" time-exceeded from r<ttl>, "R" reply from the server,
// "F<n>" frag-needed from router n, "U" unreachable, "-" nothing.
func hopsOf(s string) []PMTUHop {
	answer := func(tok string, ttl int) PMTUAnswer {
		switch tok[0] {
		case 'T':
			return PMTUAnswer{Kind: PMTUTimeExceeded, From: routerAddr(ttl)}
		case 'R':
			return PMTUAnswer{Kind: PMTUReply, From: server4}
		case 'F':
			var n int
			fmt.Sscanf(tok[1:], "%d", &n)
			return PMTUAnswer{Kind: PMTUTooBig, From: routerAddr(n), MTU: 1280}
		case 'U':
			return PMTUAnswer{Kind: PMTUUnreachable, From: routerAddr(ttl)}
		}
		return PMTUAnswer{Kind: PMTUNoAnswer}
	}
	var hops []PMTUHop
	for i, f := range strings.Fields(s) {
		c, b, _ := strings.Cut(f, "/")
		hops = append(hops, PMTUHop{TTL: i + 1, Control: answer(c, i+1), Big: answer(b, i+1)})
	}
	return hops
}

func TestLocateBottleneck(t *testing.T) {
	for _, c := range []struct {
		name          string
		hops          string
		fragHop       int
		blackhole     tri.State
		bhHop, bhUpTo int
		bhAddr        netip.Addr
	}{
		{"black hole behind router 3 of 4", "T/T T/T T/T T/- R/-", 0, tri.Yes, 3, 3, routerAddr(3)},
		{"frag-needed from router 3 of 4 (Linux: from TTL 4 on)", "T/T T/T T/T T/F3 R/F3", 3, tri.No, 0, 0, netip.Addr{}},
		{"frag-needed from a router that never answers time-exceeded", "T/T T/T -/- T/F3 R/F3", 3, tri.No, 0, 0, netip.Addr{}},
		{"frag-needed from a router before its TTL check", "T/T T/T T/F3 T/F3 R/F3", 3, tri.No, 0, 0, netip.Addr{}},
		{"black hole, silent router 4 widens the range", "T/T T/T T/T -/- T/- R/-", 0, tri.Yes, 3, 4, routerAddr(3)},
		{"black hole at the last link: the server's own link may be it", "T/T T/T T/T R/-", 0, tri.Yes, 3, 4, routerAddr(3)},
		{"big probes die at once", "T/- T/- R/-", 0, tri.Yes, 1, 1, netip.Addr{}},
		{"control dies too", "T/T T/T -/- -/-", 0, tri.NotTested, 0, 0, netip.Addr{}},
		{"big reached the server after all", "T/T T/T R/R", 0, tri.No, 0, 0, netip.Addr{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := locateBottleneck(hopsOf(c.hops))
			if b.fragHop != c.fragHop || b.blackhole != c.blackhole || b.blackholeHop != c.bhHop || b.blackholeUpTo != c.bhUpTo || b.blackholeAddr != c.bhAddr {
				t.Errorf("%+v, want frag-needed hop %d, black hole %s %d-%d %s", b, c.fragHop, c.blackhole, c.bhHop, c.bhUpTo, c.bhAddr)
			}
			if c.fragHop > 0 && (b.fragAddr != routerAddr(c.fragHop) || b.fragMTU != 1280) {
				t.Errorf("frag-needed from %s mtu %d", b.fragAddr, b.fragMTU)
			}
			if b.reason == "" {
				t.Error("no reason")
			}
		})
	}
}

// TestPMTUProbeBuildAndMatch: probes come out at the size asked for, and
// the routers' and the server's answers (fixtures captured from Linux)
// are matched to them.
func TestPMTUProbeBuildAndMatch(t *testing.T) {
	newProber := func(proto probe.Protocol, dst netip.Addr) *pmtuProber {
		src := client4
		if dst.Is6() {
			src = client6
		}
		p := &pmtuProber{opt: PMTUOptions{Protocol: proto}.withDefaults(), ident: fixtureIdent, sport: 40000, src: src, dst: dst}
		if proto == probe.TCP {
			p.sport = 40018
			p.opt.Port = 81
		}
		return p
	}
	for _, proto := range []probe.Protocol{probe.ICMP, probe.UDP, probe.TCP} {
		for _, dst := range []netip.Addr{server4, server6} {
			p := newProber(proto, dst)
			hdr := 20
			if dst.Is6() {
				hdr = 40
			}
			for _, size := range []int{128, 1280, 1500} {
				b, err := p.build(7, size)
				if err != nil || len(b)+hdr != size {
					t.Errorf("%s %s size %d: %d transport bytes, %v", proto, dst, size, len(b), err)
				}
			}
		}
	}
	// icmpEvent4 is the path event of a captured IPv4 ICMP packet.
	icmpEvent4 := func(pkt []byte) func() probe.PathEvent {
		return func() probe.PathEvent {
			h, payload, err := probe.DecodeIPv4Packet(pkt)
			if err != nil {
				t.Fatal(err)
			}
			m, err := probe.DecodeICMPv4(payload)
			if err != nil {
				t.Fatal(err)
			}
			return probe.PathEvent{From: h.Src, ICMP: &m}
		}
	}
	for _, c := range []struct {
		name  string
		proto probe.Protocol
		ev    func() probe.PathEvent
		index uint16
		kind  PMTUAnswerKind
		mtu   int
	}{
		{"frag-needed quoting a probe.UDP probe", probe.UDP, icmpEvent4(packetfx.FragNeeded4), 16, PMTUTooBig, 1280},
		{"port unreachable from the server", probe.UDP, icmpEvent4(packetfx.PortUnreach4), 12, PMTUReply, 0},
		{"time-exceeded quoting a probe.UDP probe", probe.UDP, icmpEvent4(packetfx.TE4UDPProbe), 8, PMTUTimeExceeded, 0},
		{"echo reply", probe.ICMP, icmpEvent4(packetfx.EchoReply4), 14, PMTUReply, 0},
		{"RST answering a SYN", probe.TCP, func() probe.PathEvent {
			h, payload, _ := probe.DecodeIPv4Packet(packetfx.RST4)
			s, err := probe.DecodeTCPSegment(payload)
			if err != nil {
				t.Fatal(err)
			}
			return probe.PathEvent{From: h.Src, TCP: &s}
		}, 18, PMTUReply, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			index, a, ok := newProber(c.proto, server4).match(c.ev())
			if !ok || index != c.index || a.Kind != c.kind || a.MTU != c.mtu {
				t.Errorf("index %d %+v %v, want %d %s mtu %d", index, a, ok, c.index, c.kind, c.mtu)
			}
			// Another protocol's prober, or one toward another address,
			// must not take the answer.
			other := probe.UDP
			if c.proto == probe.UDP {
				other = probe.ICMP
			}
			if _, _, ok := newProber(other, server4).match(c.ev()); ok {
				t.Errorf("matched by a %s prober", other)
			}
			if _, _, ok := newProber(c.proto, netip.MustParseAddr("198.18.9.9")).match(c.ev()); ok {
				t.Error("matched by a prober toward another address")
			}
		})
	}
}

func TestUniqueSignals(t *testing.T) {
	a, b := routerAddr(3), routerAddr(2)
	got := uniqueSignals([]PMTUSignal{{a, 1280, 1500, 64}, {a, 1280, 1400, 64}, {b, 1400, 1500, 64}, {a, 1280, 1281, 4}, {a, 1300, 1500, 64}})
	want := []PMTUSignal{{a, 1280, 1500, 64}, {b, 1400, 1500, 64}, {a, 1300, 1500, 64}}
	if !slices.Equal(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}
