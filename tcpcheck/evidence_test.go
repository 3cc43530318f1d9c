package tcpcheck

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
)

// refusedFlow is a capture of our SYN from port and a RST from hop 2
// (TTL 63) toward 198.18.5.2:7.
func refusedFlow(t *testing.T, port uint16) *probe.FlowCapture {
	t.Helper()
	c := probe.FlowCapture{Local: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), port),
		Remote: netip.AddrPortFrom(netip.MustParseAddr("198.18.5.2"), 7)}
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for i, p := range []struct {
		out   bool
		ttl   int
		flags probe.TCPFlags
	}{{true, 64, probe.FlagSYN}, {false, 63, probe.FlagRST | probe.FlagACK}} {
		src, dst := c.Remote, c.Local
		if p.out {
			src, dst = dst, src
		}
		seg, err := probe.BuildTCPSegment(src.Addr(), dst.Addr(), src.Port(), dst.Port(), 100, 1, p.flags, 500, nil)
		if err != nil {
			t.Fatal(err)
		}
		pkt, err := probe.BuildIPv4(src.Addr(), dst.Addr(), 6, p.ttl, uint16(i), true, seg)
		if err != nil {
			t.Fatal(err)
		}
		c.Packets = append(c.Packets, probe.CapturedPacket{At: at.Add(time.Duration(i) * time.Millisecond), Out: p.out, Data: pkt, Length: len(pkt)})
	}
	return &c
}

func TestConnectionsBehind(t *testing.T) {
	fc := &probe.FlowCapture{}
	conns := []ConnRecord{
		{ID: 1, Outcome: OutcomeOK, Capture: fc},
		{ID: 2, Outcome: OutcomeTimeout, Capture: fc},
		{ID: 3, Outcome: OutcomeRefused}, // nothing captured
		{ID: 4, Outcome: OutcomeReset, Capture: fc},
		{ID: 5, Outcome: OutcomeReset, IdleS: 12, Capture: fc},
		{ID: 6, Outcome: OutcomeClosed, IdleS: 12, Capture: fc},
		{ID: 7, Outcome: OutcomeRefused, Capture: fc},
		{ID: 8, Outcome: OutcomeTimeout, IdleS: 12, Capture: fc},
	}
	for _, c := range []struct {
		kind string
		want []int
	}{
		{KindConnectReset, []int{4, 5, 7}},   // resets first, in order
		{KindConnectTimeout, []int{2, 8, 4}}, // timeouts, then the other failures
		{KindIdleReset, []int{5, 4, 7}},      // the reset after idling first
		{KindIdleDrop, []int{8, 2, 5}},       // the unanswered use after idling, then other timeouts, then idled failures
		{KindIdleClose, []int{6, 5, 8}},
		{KindMidstreamClose, []int{6, 2, 4}},
		{"unknown", []int{2, 4, 5}},
	} {
		var got []int
		for _, r := range ConnectionsBehind(c.kind, conns) {
			got = append(got, r.ID)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ConnectionsBehind(%s) = %v, want %v", c.kind, got, c.want)
		}
	}
	if got := ConnectionsBehind(KindConnectReset, nil); len(got) != 0 {
		t.Errorf("no connections: %v", got)
	}
}

// tcp --evidence: the files of the connections behind each finding, named
// in its evidence, and the index, as run writes them.
func TestWriteEvidence(t *testing.T) {
	rep := Report{Test: "connect", Results: []Result{{Target: "tcp://198.18.5.2:7", Address: "198.18.5.2", Port: 7, Connections: []ConnRecord{
		{ID: 1, LocalPort: 40001, Outcome: OutcomeOK},
		{ID: 2, LocalPort: 40002, Outcome: OutcomeRefused, Capture: refusedFlow(t, 40002)},
		{ID: 3, LocalPort: 40003, Outcome: OutcomeRefused}, // not captured: no file
	}}}, Findings: []Finding{
		{Kind: KindConnectReset, Target: "tcp://198.18.5.2:7", Address: "198.18.5.2", Hop: 2, Evidence: []string{"1 of 3 connections reset"}},
		{Kind: KindConnectReset, Target: "tcp://198.18.5.2:7", Address: "198.18.5.9"}, // another address: nothing behind it
	}}
	dir := t.TempDir()
	files, err := WriteEvidence(dir, &rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "198_18_5_2-7-connect-reset-conn2.pcapng")
	if len(files) != 1 || files[0] != want {
		t.Fatalf("files %v, want [%s]", files, want)
	}
	if ev := rep.Findings[0].Evidence; len(ev) != 2 || !strings.HasPrefix(ev[1], "pcapng: "+want+" (connect-reset: connection 2, local port 40002; frames: trigger 1, RST 2;") {
		t.Errorf("finding evidence %q", ev)
	}
	if len(rep.Findings[1].Evidence) != 0 {
		t.Errorf("second finding evidence %q", rep.Findings[1].Evidence)
	}
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Findings) != 1 || idx.Findings[0].Finding != 1 || idx.Findings[0].Hop != 2 || len(idx.Findings[0].Captures) != 1 ||
		idx.Findings[0].Captures[0].Connection != 2 || idx.Findings[0].Captures[0].Frames.ResetTTL != 63 {
		t.Errorf("index %+v", idx)
	}
	if _, err := os.Stat(filepath.Join(dir, evidence.IndexText)); err != nil {
		t.Error(err)
	}
}

func TestCaptureErr(t *testing.T) {
	boom := errors.New("flow capture: packet socket: operation not permitted")
	if err := CaptureErr([]Result{{Address: "198.18.5.2"}}); err != nil {
		t.Errorf("no capture error: %v", err)
	}
	err := CaptureErr([]Result{{Address: "198.18.5.2"}, {Address: "198.18.5.3", CaptureErr: boom}, {Address: "198.18.5.4", CaptureErr: errors.New("other")}})
	if !errors.Is(err, boom) || err.Error() != "198.18.5.3: "+boom.Error() {
		t.Errorf("CaptureErr = %v, want the first, with its address", err)
	}
	// Without capture asked for there is no capture error.
	a, err := NewAttributor(netip.MustParseAddrPort("127.0.0.1:9"), false)
	if err != nil || a.CaptureErr() != nil {
		t.Errorf("NewAttributor(observe=false): %v, capture error %v", err, a.CaptureErr())
	}
}
