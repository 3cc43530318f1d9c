package diagnose

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// testFlow builds a capture of client:port > 198.18.5.2:443.
type testFlow struct {
	t *testing.T
	c probe.FlowCapture
}

func newTestFlow(t *testing.T, port uint16) *testFlow {
	return &testFlow{t: t, c: probe.FlowCapture{Local: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), port),
		Remote: netip.AddrPortFrom(netip.MustParseAddr("198.18.5.2"), 443)}}
}

func (f *testFlow) seg(at time.Duration, out bool, ttl int, flags probe.TCPFlags, seq uint32, payload int) *testFlow {
	f.t.Helper()
	src, dst := f.c.Remote, f.c.Local
	if out {
		src, dst = dst, src
	}
	tcp, err := probe.BuildTCPSegment(src.Addr(), dst.Addr(), src.Port(), dst.Port(), seq, 1, flags, 500, make([]byte, payload))
	if err != nil {
		f.t.Fatal(err)
	}
	pkt, err := probe.BuildIPv4(src.Addr(), dst.Addr(), 6, ttl, uint16(len(f.c.Packets)), true, tcp)
	if err != nil {
		f.t.Fatal(err)
	}
	start := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	f.c.Packets = append(f.c.Packets, probe.CapturedPacket{At: start.Add(at), Out: out, Data: pkt, Length: len(pkt)})
	return f
}

func TestWriteEvidenceWritesCapturesAndIndex(t *testing.T) {
	s := time.Second
	reset := newTestFlow(t, 40002).seg(0, true, 64, probe.FlagSYN, 10, 0).seg(2*time.Millisecond, false, 61, probe.FlagSYN|probe.FlagACK, 90, 0).
		seg(3*time.Millisecond, true, 64, probe.FlagACK|probe.FlagPSH, 11, 100).seg(12*s, true, 64, probe.FlagACK|probe.FlagPSH, 111, 100).
		seg(12*s+time.Millisecond, false, 62, probe.FlagRST, 91, 0).c
	inflow := newTestFlow(t, 40009).seg(0, true, 64, probe.FlagSYN, 10, 0).seg(2*time.Millisecond, false, 61, probe.FlagSYN|probe.FlagACK, 90, 0).
		seg(3*time.Millisecond, true, 1, probe.FlagACK, 11, 1).seg(13*s, true, 3, probe.FlagACK, 11, 1).c
	idle := tcpcheck.Result{Address: "198.18.5.2", Connections: []tcpcheck.ConnRecord{
		{ID: 1, LocalPort: 40001, Outcome: tcpcheck.OutcomeOK},
		{ID: 2, LocalPort: 40002, Outcome: "reset", IdleS: 12, Capture: &reset},
		{ID: 3, LocalPort: 40003, Outcome: "reset", IdleS: 12}, // nothing captured: no file
	}}
	rep := Report{Targets: []TargetReport{{Target: "https://lab", Address: "198.18.5.2", Port: 443,
		Tests:        map[string]tcpcheck.Result{"idle": idle},
		Localisation: &Localisation{InFlow: &InFlow{Flow: "198.18.0.1:40009 > 198.18.5.2:443"}}, inFlowCapture: &inflow}},
		Findings: []Finding{{Finding: tcpcheck.Finding{Kind: KindPathLoss, Target: "https://lab", Address: "198.18.5.2"}},
			{Finding: tcpcheck.Finding{Kind: tcpcheck.KindIdleReset, Target: "https://lab", Address: "198.18.5.2", Hop: 3}}}}
	dir := t.TempDir()
	files, err := WriteEvidence(dir, &rep, func(netip.Addr) netip.Addr { return netip.MustParseAddr("198.18.0.1") })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "198_18_5_2-443-idle-reset-conn2.pcapng"), filepath.Join(dir, "198_18_5_2-443-idle-reset-inflow.pcapng")}
	if strings.Join(files, ",") != strings.Join(want, ",") {
		t.Fatalf("files %v, want %v", files, want)
	}
	if ev := rep.Findings[1].Evidence; len(ev) != 2 || !strings.Contains(ev[0], want[0]) || !strings.Contains(ev[0], "SYN-ACK 2 (TTL 61), trigger 4, RST 5") {
		t.Errorf("finding evidence %q should name the files and key frames", ev)
	}
	if len(rep.Findings[0].Evidence) != 0 {
		t.Errorf("path finding got evidence %q", rep.Findings[0].Evidence)
	}
	for i, c := range []probe.FlowCapture{reset, inflow} {
		data, err := os.ReadFile(files[i])
		if err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatalf("%s: %v", files[i], err)
		}
		for k := range c.Packets {
			if got, _, err := r.ReadPacketData(); err != nil || !bytes.Equal(got, c.Packets[k].Data) {
				t.Errorf("%s packet %d: %v", files[i], k+1, err)
			}
		}
	}
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Findings) != 1 || idx.Findings[0].Finding != 2 || idx.Findings[0].Hop != 3 || len(idx.Findings[0].Captures) != 2 {
		t.Fatalf("index %+v", idx)
	}
	conn, in := idx.Findings[0].Captures[0], idx.Findings[0].Captures[1]
	if conn.File != filepath.Base(want[0]) || conn.Role != evidence.RoleFailedConnection || conn.Connection != 2 || conn.Frames.SynAck != 2 ||
		conn.Frames.Trigger != 4 || len(conn.Frames.Resets) != 1 || conn.Frames.Resets[0] != 5 || conn.Flow != "198.18.0.1:40002 > 198.18.5.2:443" {
		t.Errorf("connection capture %+v", conn)
	}
	if in.Role != evidence.RoleInFlowConfirmation || len(in.Frames.InFlowProbes) != 2 {
		t.Errorf("in-flow capture %+v", in)
	}
	if txt, err := os.ReadFile(filepath.Join(dir, evidence.IndexText)); err != nil || !strings.Contains(string(txt), "finding 2: idle-reset") {
		t.Errorf("index.txt %q %v", txt, err)
	}
}

// No finding: an empty index says so.
func TestWriteEvidenceEmptyIndex(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteEvidence(dir, &Report{}, func(a netip.Addr) netip.Addr { return a })
	if err != nil || len(files) != 0 {
		t.Fatalf("files %v, %v", files, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, evidence.IndexJSON))
	if err != nil || !strings.Contains(string(raw), `"findings": []`) {
		t.Errorf("index %s %v", raw, err)
	}
}

func TestTestOfKind(t *testing.T) {
	for kind, want := range map[string]string{tcpcheck.KindMidstreamReset: "data", tcpcheck.KindMidstreamClose: "data",
		tcpcheck.KindDataStall: "data", tcpcheck.KindIdleClose: "idle", KindPathLoss: ""} {
		if got := testOfKind(kind); got != want {
			t.Errorf("testOfKind(%s) = %q, want %q", kind, got, want)
		}
	}
}

// The connection tests' capture error (the flow observer's packet socket
// could not be opened), the first with its address, for run's warning.
func TestCaptureErr(t *testing.T) {
	boom := errors.New("flow capture: packet socket: operation not permitted")
	rep := Report{Targets: []TargetReport{
		{Address: "198.18.5.2", Tests: map[string]tcpcheck.Result{"connect": {Address: "198.18.5.2"}}},
		{Address: "198.18.5.3", Tests: map[string]tcpcheck.Result{"connect": {Address: "198.18.5.3"}, "idle": {Address: "198.18.5.3", CaptureErr: boom}}},
	}}
	if err := CaptureErr(rep); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "198.18.5.3: ") {
		t.Errorf("CaptureErr = %v, want %v toward 198.18.5.3", err, boom)
	}
	rep.Targets = rep.Targets[:1]
	if err := CaptureErr(rep); err != nil {
		t.Errorf("CaptureErr = %v, want nil", err)
	}
}

// The in-flow confirmation's observer that could not open its capture
// (the error injected as inFlowConfirm hands it over) leaves no in-flow
// file, and the run says so in one warning however many targets it hit;
// the connection tests' capture error, when there is one, is the warning.
func TestCaptureWarningInFlow(t *testing.T) {
	boom := errors.New("flow capture: packet socket: operation not permitted")
	inflow := newTestFlow(t, 40009).seg(0, true, 64, probe.FlagSYN, 10, 0).seg(3*time.Millisecond, true, 1, probe.FlagACK, 11, 1).c
	target := func(addr string, testErr, inFlowErr error) TargetReport {
		tg := TargetReport{Target: "https://" + addr, Address: addr, Port: 443,
			Tests:        map[string]tcpcheck.Result{"idle": {Address: addr, CaptureErr: testErr}},
			Localisation: &Localisation{InFlow: &InFlow{Flow: "198.18.0.1:40009 > " + addr + ":443"}}}
		tg.keepInFlowCapture(inflow, inFlowErr)
		return tg
	}
	for _, tc := range []struct {
		name    string
		targets []TargetReport
		want    string // "" no warning
	}{
		{"captured", []TargetReport{target("198.18.5.2", nil, nil)}, ""},
		{"in-flow capture failed toward two targets: one warning",
			[]TargetReport{target("198.18.5.2", nil, nil), target("198.18.5.3", nil, boom), target("198.18.5.4", nil, boom)},
			"the packet capture of the in-flow confirmation toward 198.18.5.3 is unavailable (" + boom.Error() + "): --evidence /tmp/ev gets no pcapng file of its probes and their answers"},
		{"the tests' capture failed too: theirs", []TargetReport{target("198.18.5.2", boom, boom)},
			evidence.CaptureWarning("/tmp/ev", errors.New("198.18.5.2: "+boom.Error()))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Report{Targets: tc.targets}
			if got := CaptureWarning("/tmp/ev", rep); got != tc.want {
				t.Errorf("warning %q,\nwant %q", got, tc.want)
			}
			for _, tg := range tc.targets {
				if (tg.inFlowCapture != nil) != (tg.inFlowCaptureErr == nil) {
					t.Errorf("%s: in-flow capture kept %v with capture error %v", tg.Address, tg.inFlowCapture != nil, tg.inFlowCaptureErr)
				}
			}
		})
	}
	// An empty history (nothing captured) is no error and no file.
	var tg TargetReport
	tg.keepInFlowCapture(probe.FlowCapture{}, nil)
	if tg.inFlowCapture != nil || tg.inFlowCaptureErr != nil {
		t.Errorf("empty history: kept %+v, error %v", tg.inFlowCapture, tg.inFlowCaptureErr)
	}
}
