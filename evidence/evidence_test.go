package evidence

import (
	"bytes"
	"encoding/binary"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/hopcheck/hopcheck/probe"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	client = netip.MustParseAddr("198.18.0.1")
	server = netip.MustParseAddr("198.18.5.2")
	local  = netip.AddrPortFrom(client, 40001)
	remote = netip.AddrPortFrom(server, 443)
	t0     = time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
)

// flowBuilder appends packets of the flow local > remote.
type flowBuilder struct {
	t    testing.TB
	c    probe.FlowCapture
	ipid uint16
}

func newFlow(t testing.TB) *flowBuilder {
	return &flowBuilder{t: t, c: probe.FlowCapture{Local: local, Remote: remote}}
}

func (b *flowBuilder) seg(atMs int, out bool, ttl int, flags probe.TCPFlags, seq, ack uint32, payload int) *flowBuilder {
	b.t.Helper()
	src, dst, sp, dp := server, client, remote.Port(), local.Port()
	if out {
		src, dst, sp, dp = client, server, local.Port(), remote.Port()
	}
	tcp, err := probe.BuildTCPSegment(src, dst, sp, dp, seq, ack, flags, 502, make([]byte, payload))
	if err != nil {
		b.t.Fatal(err)
	}
	b.ipid++
	id := b.ipid
	if out && ttl < 64 {
		id = uint16(0x4800 + ttl) // in-flow probe: TTL in the IP ID
	}
	pkt, err := probe.BuildIPv4(src, dst, 6, ttl, id, true, tcp)
	if err != nil {
		b.t.Fatal(err)
	}
	b.add(atMs, out, pkt)
	return b
}

func (b *flowBuilder) add(atMs int, out bool, pkt []byte) {
	kept := pkt[:min(len(pkt), probe.HistorySnapLen)]
	b.c.Packets = append(b.c.Packets, probe.CapturedPacket{At: t0.Add(time.Duration(atMs) * time.Millisecond), Out: out, Data: kept, Length: len(pkt)})
}

// timeExceeded: router at hop answers the last packet added.
func (b *flowBuilder) timeExceeded(atMs, hop int) *flowBuilder {
	b.t.Helper()
	quoted := b.c.Packets[len(b.c.Packets)-1].Data
	quoted = append([]byte(nil), quoted[:28]...)
	quoted[8] = 1 // the TTL as it expired
	msg := append([]byte{11, 0, 0, 0, 0, 0, 0, 0}, quoted...)
	router := netip.AddrFrom4([4]byte{198, 18, byte(hop), 1})
	pkt, err := probe.BuildIPv4(router, client, 1, 65-hop, 0, false, msg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.add(atMs, false, pkt)
	return b
}

const (
	syn    = probe.FlagSYN
	ack    = probe.FlagACK
	psh    = probe.FlagPSH | probe.FlagACK
	rst    = probe.FlagRST
	rstAck = probe.FlagRST | probe.FlagACK
	fin    = probe.FlagFIN | probe.FlagACK
)

// handshake: SYN, SYN-ACK from the server at hop 4 (TTL 61), ACK, a
// request and its answer.
func handshake(b *flowBuilder) *flowBuilder {
	return b.seg(0, true, 64, syn, 1000, 0, 0).
		seg(2, false, 61, syn|ack, 5000, 1001, 0).
		seg(3, true, 64, ack, 1001, 5001, 0).
		seg(4, true, 64, psh, 1001, 5001, 200).
		seg(8, false, 61, psh, 5001, 1201, 900).
		seg(9, true, 64, ack, 1201, 5901, 0)
}

// idleReset: 10 s idle, our request, a RST from hop 3 (TTL 62).
func idleReset(t testing.TB) probe.FlowCapture {
	return handshake(newFlow(t)).
		seg(10009, true, 64, psh, 1201, 5901, 150).
		seg(10010, false, 62, rst, 5901, 0, 0).c
}

// idleDrop: 8 s idle, our request retransmitted three times, then the
// in-flow trace: probes with TTL 1..3, hops 1 and 2 answer.
func idleDrop(t testing.TB) probe.FlowCapture {
	b := handshake(newFlow(t)).
		seg(8009, true, 64, psh, 1201, 5901, 150).
		seg(8220, true, 64, psh, 1201, 5901, 150).
		seg(8650, true, 64, psh, 1201, 5901, 150).
		seg(9500, true, 64, psh, 1201, 5901, 150)
	b.seg(9600, true, 1, ack, 1201, 5901, 0).timeExceeded(9601, 1)
	b.seg(9602, true, 2, ack, 1201, 5901, 0).timeExceeded(9604, 2)
	b.seg(9605, true, 3, ack, 1201, 5901, 0)
	return b.c
}

func TestAnnotate(t *testing.T) {
	for _, c := range []struct {
		name string
		c    probe.FlowCapture
		want Frames
	}{
		{"idle reset by hop 3", idleReset(t), Frames{SYN: 1, SynAck: 2, SynAckTTL: 61, BeforeIdleGap: []int{4, 5, 6}, IdleGapS: 10,
			Trigger: 7, Resets: []int{8}}},
		{"idle drop with in-flow trace", idleDrop(t), Frames{SYN: 1, SynAck: 2, SynAckTTL: 61, BeforeIdleGap: []int{4, 5, 6}, IdleGapS: 8,
			Trigger: 7, Retransmissions: []int{8, 9, 10}, Unanswered: true, InFlowProbes: []int{11, 13, 15}, InFlowAnswers: []int{12, 14}}},
		{"connect timeout: SYN retransmitted", newFlow(t).seg(0, true, 64, syn, 1000, 0, 0).seg(1000, true, 64, syn, 1000, 0, 0).
			seg(3000, true, 64, syn, 1000, 0, 0).c, Frames{SYN: 1, Trigger: 1, Retransmissions: []int{2, 3}, Unanswered: true}},
		{"reset in the handshake", newFlow(t).seg(0, true, 64, syn, 1000, 0, 0).seg(1, false, 63, rstAck, 0, 1001, 0).c,
			Frames{SYN: 1, Trigger: 1, Resets: []int{2}}},
		{"RST while idle answers nothing of ours", handshake(newFlow(t)).seg(12009, false, 62, rst, 5901, 0, 0).c,
			Frames{SYN: 1, SynAck: 2, SynAckTTL: 61, BeforeIdleGap: []int{4, 5, 6}, IdleGapS: 12, Resets: []int{7}}},
		{"RST in the middle of the server's data: nothing of ours drew it", handshake(newFlow(t)).seg(20, false, 61, psh, 5901, 1201, 1400).
			seg(21, true, 64, ack, 1201, 7301, 0).seg(22, false, 63, rstAck, 7301, 1201, 0).c,
			Frames{SYN: 1, SynAck: 2, SynAckTTL: 61, Resets: []int{9}}},
		{"midstream FIN from the server", handshake(newFlow(t)).seg(20, true, 64, psh, 1201, 5901, 100).seg(25, false, 61, fin, 5901, 1301, 0).c,
			Frames{SYN: 1, SynAck: 2, SynAckTTL: 61, Trigger: 7, Fins: []int{8}}},
		{"an answered request and no end: no failure to point at", handshake(newFlow(t)).c,
			Frames{SYN: 1, SynAck: 2, SynAckTTL: 61}},
		{"empty", probe.FlowCapture{}, Frames{}},
		{"garbage packets are skipped", probe.FlowCapture{Packets: []probe.CapturedPacket{{Data: []byte{0x45}}, {Data: nil}}}, Frames{}},
	} {
		st := Annotate(c.c)
		if !reflect.DeepEqual(st.Frames, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, st.Frames, c.want)
		}
		if len(st.Notes) != len(c.c.Packets) {
			t.Errorf("%s: %d notes for %d packets", c.name, len(st.Notes), len(c.c.Packets))
		}
	}
	st := Annotate(idleReset(t))
	for i, want := range map[int]string{1: "SYN-ACK: the server's TTL baseline, TTL 61 (sender at hop 4)", 6: "the segment that drew the RST (frame 8)",
		7: "RST: TTL 62 (sender at hop 3); SYN-ACK (frame 2) TTL 61 = hop 4"} {
		if st.Notes[i] != want {
			t.Errorf("note of frame %d: %q, want %q", i+1, st.Notes[i], want)
		}
	}
	st = Annotate(idleDrop(t))
	if want := "time-exceeded from 198.18.2.1 (hop 2 by its TTL 63) quoting frame 13 (TTL 2)"; st.Notes[13] != want {
		t.Errorf("note of frame 14: %q, want %q", st.Notes[13], want)
	}
	if want := "in-flow probe: our segment of the flow with TTL 2; answered by frame 14"; st.Notes[12] != want {
		t.Errorf("note of frame 13: %q, want %q", st.Notes[12], want)
	}
	if want := "in-flow probe: our segment of the flow with TTL 3; no ICMP answer"; st.Notes[14] != want {
		t.Errorf("note of frame 15: %q, want %q", st.Notes[14], want)
	}
	if want := "unanswered: never acknowledged, 3 retransmissions"; st.Notes[6] != want {
		t.Errorf("note of frame 7: %q, want %q", st.Notes[6], want)
	}
}

func TestBuildIndex(t *testing.T) {
	reset, drop := idleReset(t), idleDrop(t)
	for _, c := range []struct {
		name    string
		entries []Entry
		want    []IndexFinding
	}{
		{"none", nil, []IndexFinding{}},
		{"two findings, given out of order, captures kept in order", []Entry{
			{Finding: 2, Kind: "idle-drop", Address: "198.18.5.2", Hop: 2, File: "b.pcapng", Role: RoleFailedConnection, Connection: 4, Capture: drop},
			{Finding: 1, Kind: "idle-reset", Address: "198.18.5.2", Hop: 3, File: "a.pcapng", Role: RoleFailedConnection, Connection: 3, Capture: reset},
			{Finding: 2, Kind: "idle-drop", Address: "198.18.5.2", Hop: 2, File: "c.pcapng", Role: RoleInFlowConfirmation, Capture: drop},
		}, []IndexFinding{
			{Finding: 1, Kind: "idle-reset", Address: "198.18.5.2", Hop: 3, Captures: []IndexCapture{
				{File: "a.pcapng", Role: RoleFailedConnection, Connection: 3, Flow: "198.18.0.1:40001 > 198.18.5.2:443", Packets: 8, Frames: Annotate(reset).Frames}}},
			{Finding: 2, Kind: "idle-drop", Address: "198.18.5.2", Hop: 2, Captures: []IndexCapture{
				{File: "b.pcapng", Role: RoleFailedConnection, Connection: 4, Flow: "198.18.0.1:40001 > 198.18.5.2:443", Packets: 15, Frames: Annotate(drop).Frames},
				{File: "c.pcapng", Role: RoleInFlowConfirmation, Flow: "198.18.0.1:40001 > 198.18.5.2:443", Packets: 15, Frames: Annotate(drop).Frames}}},
		}},
	} {
		idx := BuildIndex(c.entries)
		if idx.SchemaVersion != IndexSchemaVersion || idx.Bounds.FirstPackets != probe.HistoryFirst || idx.Bounds.SnapLen != probe.HistorySnapLen {
			t.Errorf("%s: header %+v", c.name, idx)
		}
		if !reflect.DeepEqual(idx.Findings, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, idx.Findings, c.want)
		}
	}
	text := BuildIndex([]Entry{{Finding: 1, Kind: "idle-reset", Address: "198.18.5.2", Hop: 3, File: "a.pcapng", Role: RoleFailedConnection, Connection: 3, Capture: reset}}).Text()
	for _, want := range []string{"finding 1: idle-reset toward 198.18.5.2 at hop 3", "a.pcapng (failed-connection, connection 3;",
		"SYN-ACK:                     2 (TTL 61, hop 4: the baseline)", "RST:                         8", "4, 5, 6, then 10.0 s idle"} {
		if !strings.Contains(text, want) {
			t.Errorf("text index lacks %q:\n%s", want, text)
		}
	}
}

// The pcapng bytes: a golden file (go test -update rewrites it), read
// back with gopacket's reader, and checked field by field where a reader
// could hide a mistake.
func TestPcapngBytes(t *testing.T) {
	c := idleReset(t)
	c.Omitted, c.OmittedAfter = 5, 3
	st := Annotate(c)
	data, err := Pcapng(c, st.Notes, Title(c, "idle-reset finding, connection 3"))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "idle-reset.pcapng")
	if *update {
		if err := os.WriteFile(golden, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Errorf("pcapng bytes differ from %s (go test -update rewrites it after a deliberate change)", golden)
	}
	// Section header block: type, byte-order magic; the first interface
	// block after it declares LINKTYPE_RAW (101).
	if binary.LittleEndian.Uint32(data[0:4]) != 0x0A0D0D0A || binary.LittleEndian.Uint32(data[8:12]) != 0x1A2B3C4D {
		t.Fatalf("no pcapng section header: % x", data[:12])
	}
	shbLen := int(binary.LittleEndian.Uint32(data[4:8]))
	idb := data[shbLen:]
	if binary.LittleEndian.Uint32(idb[0:4]) != 1 || binary.LittleEndian.Uint16(idb[8:10]) != 101 || binary.LittleEndian.Uint32(idb[12:16]) != probe.HistorySnapLen {
		t.Fatalf("interface block % x: want type 1, link type 101, snaplen %d", idb[:16], probe.HistorySnapLen)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeRaw || !strings.Contains(r.SectionInfo().Comment, "198.18.0.1:40001 > 198.18.5.2:443; 8 packets (5 between frames 3 and 4 not kept") {
		t.Errorf("link type %v, section comment %q", r.LinkType(), r.SectionInfo().Comment)
	}
	for i, p := range c.Packets {
		got, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("packet %d: %v", i+1, err)
		}
		if !bytes.Equal(got, p.Data) || !ci.Timestamp.Equal(p.At) || ci.Length != p.Length {
			t.Errorf("packet %d: %d bytes at %v length %d; want %d at %v length %d", i+1, len(got), ci.Timestamp, ci.Length, len(p.Data), p.At, p.Length)
		}
		wantDir := pcapgo.NgEpbFlagDirectionInbound
		if p.Out {
			wantDir = pcapgo.NgEpbFlagDirectionOutbound
		}
		if opts.Flags == nil || opts.Flags.Direction != wantDir {
			t.Errorf("packet %d: flags %+v, want direction %v", i+1, opts.Flags, wantDir)
		}
		var wantComments []string
		if st.Notes[i] != "" {
			wantComments = append(wantComments, st.Notes[i])
		}
		if i == 3 {
			wantComments = append(wantComments, "5 packets of this flow before this one are not kept (bounded capture: first 16 and last 64)")
		}
		if !reflect.DeepEqual(opts.Comments, wantComments) {
			t.Errorf("packet %d: comments %q, want %q", i+1, opts.Comments, wantComments)
		}
	}
	if _, _, err := r.ReadPacketData(); err == nil {
		t.Errorf("more packets than written")
	}
}

// With tshark installed (scripts/deps.sh), the file opens in it and its
// frame numbers are those of the index.
func TestPcapngOpensInTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	c := idleDrop(t)
	st := Annotate(c)
	data, err := Pcapng(c, st.Notes, Title(c, "idle-drop"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "drop.pcapng")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tshark, "-r", path, "-Y", "tcp.analysis.retransmission", "-T", "fields", "-e", "frame.number").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	if got := strings.Fields(string(out)); !reflect.DeepEqual(got, []string{"8", "9", "10"}) {
		t.Errorf("tshark's retransmissions %q, index says %v", got, st.Frames.Retransmissions)
	}
	out, err = exec.Command(tshark, "-r", path, "-Y", "icmp.type == 11", "-T", "fields", "-e", "frame.number").Output()
	if err != nil || strings.Join(strings.Fields(string(out)), ",") != "12,14" {
		t.Errorf("tshark's time-exceeded frames %q (%v), index says %v", out, err, st.Frames.InFlowAnswers)
	}
}
