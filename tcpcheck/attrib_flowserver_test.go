package tcpcheck

import (
	"net/netip"
	"testing"

	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// When every connection of a test was reset, the session never learnt the
// server's SYN-ACK (connect, an on-path injector or an in-path box on the
// first request): the flow's own SYN-ACK in its history stands in for it.
func TestServerAnswerAfterWithoutSessionServer(t *testing.T) {
	server, client := netip.MustParseAddr("198.18.3.2"), netip.MustParseAddr("198.18.0.1")
	pkt := func(t *testing.T, ttl int, flags probe.TCPFlags, payload int, out bool) probe.CapturedPacket {
		return capturedTCP(t, server, client, ttl, flags, payload, out)
	}
	syn := pkt(t, 64, probe.FlagSYN, 0, true)
	synAck := pkt(t, 61, probe.FlagSYN|probe.FlagACK, 0, false) // the server, hop 4
	req := pkt(t, 64, probe.FlagACK|probe.FlagPSH, 257, true)
	rst := pkt(t, 63, probe.FlagRST|probe.FlagACK, 0, false) // the box at hop 2
	flight := pkt(t, 61, probe.FlagACK|probe.FlagPSH, 1715, false)
	ownRST := pkt(t, 64, probe.FlagRST, 0, true)
	for _, tc := range []struct {
		name    string
		packets []probe.CapturedPacket
		want    tri.State
		server  probe.Fingerprint
	}{
		{"the server's flight follows the injected RST: on-path", []probe.CapturedPacket{syn, synAck, req, rst, flight, ownRST}, tri.Yes, probe.Fingerprint{TTL: 61, DF: true}},
		{"nothing of the server after the RST: in-path", []probe.CapturedPacket{syn, synAck, req, rst}, tri.No, probe.Fingerprint{TTL: 61, DF: true}},
		{"no SYN-ACK kept: not tested", []probe.CapturedPacket{req, rst, flight}, tri.NotTested, probe.Fingerprint{}},
		{"our own SYN is not the server's", []probe.CapturedPacket{pkt(t, 64, probe.FlagSYN|probe.FlagACK, 0, true), req, rst, flight}, tri.NotTested, probe.Fingerprint{}},
	} {
		c := &probe.FlowCapture{Packets: tc.packets}
		if got := serverAnswerAfter(c, 63, 0); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if got := flowServer(c); got != tc.server {
			t.Errorf("%s: flow server %+v, want %+v", tc.name, got, tc.server)
		}
	}
	// A session that knows the server keeps its own fingerprint.
	c := &probe.FlowCapture{Packets: []probe.CapturedPacket{syn, synAck, req, rst, flight}}
	if got := serverAnswerAfter(c, 63, 62); got != tri.No {
		t.Errorf("known server TTL 62: %s, want no (nothing with TTL 62 followed)", got)
	}
	if got := flowServer(nil); got.Known() {
		t.Errorf("no history: %+v", got)
	}
}
