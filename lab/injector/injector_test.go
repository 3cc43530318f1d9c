package injector

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/hopcheck/hopcheck/probe"
)

// seg is one TCP segment as the injector decodes it.
func seg(t *testing.T, src, dst netip.AddrPort, seq, ack uint32, flags probe.TCPFlags, payload int) probe.CapturedInfo {
	t.Helper()
	tcp, err := probe.BuildTCPSegment(src.Addr(), dst.Addr(), src.Port(), dst.Port(), seq, ack, flags, 1000, make([]byte, payload))
	if err != nil {
		t.Fatal(err)
	}
	ip, err := probe.BuildIPv4(src.Addr(), dst.Addr(), 6, 64, 0, true, tcp)
	if err != nil {
		t.Fatal(err)
	}
	info, err := probe.DecodeCaptured(ip)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestInjectStateObserve(t *testing.T) {
	client := netip.MustParseAddrPort("198.18.0.1:40000")
	server := netip.MustParseAddrPort("198.18.3.2:443")
	other := netip.MustParseAddrPort("198.18.3.2:7")
	const cISN uint32 = 1000
	var sISN uint32 = 0xfffffff0 // the server's numbers wrap
	type step struct {
		fromClient bool
		info       probe.CapturedInfo
	}
	c := func(seq, ack uint32, flags probe.TCPFlags, n int) step {
		return step{true, seg(t, client, server, seq, ack, flags, n)}
	}
	s := func(seq, ack uint32, flags probe.TCPFlags, n int) step {
		return step{false, seg(t, server, client, seq, ack, flags, n)}
	}
	const A, P = probe.FlagACK, probe.FlagACK | probe.FlagPSH
	handshake := []step{c(cISN, 0, probe.FlagSYN, 0), s(sISN, cISN+1, probe.FlagSYN|A, 0), c(cISN+1, sISN+1, A, 0)}
	for _, tc := range []struct {
		name       string
		afterBytes int
		port       uint16
		steps      []step
		want       []injection // in order, one per firing step
	}{
		{"the first request draws a reset at the server's next sequence number", 0, 0,
			append(slices.Clone(handshake), c(cISN+1, sISN+1, P, 100), s(sISN+1, cISN+101, P, 500)),
			[]injection{{Src: server, Dst: client, Seq: sISN + 1, Ack: cISN + 101}}},
		{"the server's data moves the sequence number on (across the wrap)", 0, 0,
			append(slices.Clone(handshake), s(sISN+1, cISN+1, P, 40), c(cISN+1, sISN+41, P, 10)),
			[]injection{{Src: server, Dst: client, Seq: sISN + 41, Ack: cISN + 11}}},
		{"data the client has not acknowledged yet counts too", 0, 0,
			append(slices.Clone(handshake), s(sISN+1, cISN+1, P, 40), c(cISN+1, sISN+1, P, 10)),
			[]injection{{Src: server, Dst: client, Seq: sISN + 41, Ack: cISN + 11}}},
		{"only past AfterClientBytes, once", 150, 0,
			append(slices.Clone(handshake), c(cISN+1, sISN+1, P, 100), c(cISN+101, sISN+1, P, 100), c(cISN+201, sISN+1, P, 100)),
			[]injection{{Src: server, Dst: client, Seq: sISN + 1, Ack: cISN + 201}}},
		{"exactly AfterClientBytes is not past it", 100, 0,
			append(slices.Clone(handshake), c(cISN+1, sISN+1, P, 100)), nil},
		{"another server port is left alone", 0, other.Port(),
			append(slices.Clone(handshake), c(cISN+1, sISN+1, P, 100)), nil},
		{"a flow picked up midway learns the sequence number from the client's ACK", 0, 0,
			[]step{c(cISN+1, sISN+1, P, 100)},
			[]injection{{Src: server, Dst: client, Seq: sISN + 1, Ack: cISN + 101}}},
		{"a new SYN on the same ports is a new connection", 0, 0,
			append(append(slices.Clone(handshake), c(cISN+1, sISN+1, P, 100)),
				c(5000, 0, probe.FlagSYN, 0), s(7000, 5001, probe.FlagSYN|A, 0), c(5001, 7001, P, 1)),
			[]injection{{Src: server, Dst: client, Seq: sISN + 1, Ack: cISN + 101}, {Src: server, Dst: client, Seq: 7001, Ack: 5002}}},
		{"no reset before anything of the server's numbers is known", 0, 0,
			[]step{c(cISN, 0, probe.FlagSYN, 0), c(cISN+1, 0, probe.FlagPSH, 100)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newInjectState(tc.afterBytes, tc.port)
			var got []injection
			for _, x := range tc.steps {
				if inj, ok := st.observe(x.info, x.fromClient); ok {
					got = append(got, inj)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("injections %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBuildInjection(t *testing.T) {
	for _, inj := range []injection{
		{Src: netip.MustParseAddrPort("198.18.3.2:443"), Dst: netip.MustParseAddrPort("198.18.0.1:40000"), Seq: 7, Ack: 9},
		{Src: netip.MustParseAddrPort("[2001:db8:0:3::2]:443"), Dst: netip.MustParseAddrPort("[2001:db8::1]:40000"), Seq: 7, Ack: 9},
	} {
		pkt, err := buildInjection(inj, 128)
		if err != nil {
			t.Fatal(err)
		}
		info, err := probe.DecodeCaptured(pkt)
		if err != nil {
			t.Fatalf("%s: %v", inj.Src, err)
		}
		tcp := info.TCP
		if info.TTL != 128 || info.Src != inj.Src.Addr() || info.Dst != inj.Dst.Addr() || tcp == nil ||
			tcp.SrcPort != inj.Src.Port() || tcp.DstPort != inj.Dst.Port() || tcp.Seq != 7 || tcp.Ack != 9 ||
			tcp.Flags != probe.FlagRST|probe.FlagACK || tcp.PayloadLen != 0 {
			t.Errorf("%s: decoded %+v, TCP %+v", inj.Src, info, tcp)
		}
		if info.Family == 4 && !info.DF {
			t.Errorf("IPv4 reset without DF")
		}
	}
}
