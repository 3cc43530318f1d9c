package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// tshark returns the path of tshark; without it the checks that need it
// are logged as not run, or fail with HOPCHECK_LAB=required (CI installs
// it with scripts/deps.sh).
func tshark(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tshark")
	if err == nil {
		return p
	}
	if os.Getenv(labtest.RequiredEnv) == "required" {
		t.Errorf("tshark not installed (scripts/deps.sh installs it): the evidence files cannot be checked")
	} else {
		t.Logf("tshark not installed: evidence files not opened")
	}
	return ""
}

// frameRow is one frame as tshark dissects it (the outer header of an
// ICMP error; its quote is not read).
type frameRow struct {
	num      int
	src, dst string
	ttl      int
	flags    int // TCP flags; -1 not TCP
	tcpLen   int
	icmpType int // -1 not ICMP
	retrans  bool
}

func (r frameRow) is(f probe.TCPFlags) bool { return r.flags >= 0 && probe.TCPFlags(r.flags).Has(f) }

// tsharkRows reads every frame of file with one tshark run.
func tsharkRows(t *testing.T, bin, file string) []frameRow {
	t.Helper()
	args := []string{"-r", file, "-T", "fields", "-E", "occurrence=f", "-e", "frame.number", "-e", "ip.src", "-e", "ip.dst",
		"-e", "ip.ttl", "-e", "tcp.flags", "-e", "tcp.len", "-e", "icmp.type", "-e", "tcp.analysis.retransmission"}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("tshark %s: %v", strings.Join(args, " "), err)
	}
	var rows []frameRow
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		cols := strings.Split(line, "\t")
		if len(cols) < 8 {
			t.Fatalf("tshark line %q", line)
		}
		r := frameRow{src: cols[1], dst: cols[2], flags: -1, icmpType: -1, retrans: cols[7] != ""}
		r.num, _ = strconv.Atoi(cols[0])
		r.ttl, _ = strconv.Atoi(cols[3])
		if cols[6] != "" {
			r.icmpType, _ = strconv.Atoi(cols[6])
		} else if cols[4] != "" {
			f, err := strconv.ParseInt(strings.TrimPrefix(cols[4], "0x"), 16, 32)
			if err != nil {
				t.Fatalf("tshark tcp.flags %q", cols[4])
			}
			r.flags = int(f)
			r.tcpLen, _ = strconv.Atoi(cols[5])
		}
		rows = append(rows, r)
	}
	return rows
}

// pick returns the frame numbers of the rows that match.
func pick(rows []frameRow, match func(frameRow) bool) []int {
	var out []int
	for _, r := range rows {
		if match(r) {
			out = append(out, r.num)
		}
	}
	return out
}

func rowAt(rows []frameRow, n int) frameRow {
	if n < 1 || n > len(rows) {
		return frameRow{flags: -1, icmpType: -1}
	}
	return rows[n-1]
}

// wantEvidence checks --evidence DIR of a run whose finding of kind
// (idle-reset, midstream-reset: a RST from hop; idle-drop: the request
// retransmitted, unanswered) has its captures: index.json names them, each opens in
// tshark, and the frames the index names are what tshark shows: the
// server's SYN-ACK with the baseline TTL, the RST from hop, the
// retransmissions of the unanswered segment, the in-flow probes and the
// time-exceeded answers.
func wantEvidence(t *testing.T, dir string, rep diagnose.Report, kind string, hop int) {
	t.Helper()
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatalf("--evidence: %v", err)
	}
	txt, err := os.ReadFile(filepath.Join(dir, evidence.IndexText))
	if err != nil || !strings.Contains(string(txt), kind) {
		t.Errorf("index.txt: %v\n%s", err, txt)
	}
	defer func() {
		if t.Failed() {
			t.Logf("index.txt:\n%s", txt)
		}
	}()
	var entry *evidence.IndexFinding
	for i := range idx.Findings {
		if idx.Findings[i].Kind == kind {
			entry = &idx.Findings[i]
		}
	}
	if entry == nil || entry.Finding < 1 || entry.Finding > len(rep.Findings) || rep.Findings[entry.Finding-1].Kind != kind {
		t.Fatalf("index.json has no %s finding matching the report: %+v", kind, idx)
	}
	finding := rep.Findings[entry.Finding-1]
	server := rep.Targets[0].Address
	bin := tshark(t)
	roles := map[string]int{}
	for _, c := range entry.Captures {
		roles[c.Role]++
		path := filepath.Join(dir, c.File)
		if !strings.Contains(strings.Join(finding.Evidence, "\n"), path) {
			t.Errorf("finding evidence %q does not name %s", finding.Evidence, path)
		}
		if c.Packets == 0 || c.Packets > probe.HistoryFirst+probe.HistoryLast {
			t.Errorf("%s: %d packets, bounds %d+%d", c.File, c.Packets, probe.HistoryFirst, probe.HistoryLast)
		}
		f := c.Frames
		t.Logf("%s (%s): %d packets, frames %+v", c.File, c.Role, c.Packets, f)
		if bin == "" {
			continue
		}
		rows := tsharkRows(t, bin, path)
		if len(rows) != c.Packets {
			t.Errorf("%s: tshark reads %d frames, index says %d", c.File, len(rows), c.Packets)
		}
		synAcks := pick(rows, func(r frameRow) bool { return r.src == server && r.is(probe.FlagSYN|probe.FlagACK) })
		if f.SynAck == 0 || len(synAcks) == 0 || synAcks[0] != f.SynAck || rowAt(rows, f.SynAck).ttl != f.SynAckTTL {
			t.Errorf("%s: SYN-ACK at frame %d TTL %d in the index; tshark: SYN-ACK frames %v, TTL %d", c.File, f.SynAck, f.SynAckTTL, synAcks, rowAt(rows, f.SynAck).ttl)
		}
		switch {
		case c.Role == evidence.RoleInFlowConfirmation:
			answers := pick(rows, func(r frameRow) bool { return r.icmpType == 11 })
			probes := pick(rows, func(r frameRow) bool { return r.dst == server && r.flags >= 0 && r.ttl < 32 })
			if len(answers) == 0 || !slices.Equal(answers, f.InFlowAnswers) || len(probes) == 0 || !slices.Equal(probes, f.InFlowProbes) {
				t.Errorf("%s: in-flow probes %v answers %v in the index; tshark: probes %v, time-exceeded %v", c.File, f.InFlowProbes, f.InFlowAnswers, probes, answers)
			}
		case kind == "idle-reset" || kind == "midstream-reset":
			resets := pick(rows, func(r frameRow) bool { return r.src == server && r.is(probe.FlagRST) })
			if len(f.Resets) == 0 || len(resets) == 0 || resets[0] != f.Resets[0] {
				t.Errorf("%s: RST frames %v in the index, tshark %v", c.File, f.Resets, resets)
				break
			}
			if ttl := rowAt(rows, resets[0]).ttl; probe.SenderHop(ttl) != hop || ttl != f.ResetTTL {
				t.Errorf("%s: RST TTL %d (index %d) is hop %d, want hop %d", c.File, ttl, f.ResetTTL, probe.SenderHop(ttl), hop)
			}
			if kind == "midstream-reset" {
				// The capture keeps at most the first and the last packets; how
				// many packets 1 MB makes depends on the veths' GRO (as few as
				// 75 seen), so the middle is left out only of a longer flow.
				bound := probe.HistoryFirst + probe.HistoryLast
				if f.Trigger != 0 || c.Packets > bound || (c.Omitted > 0 && c.Packets != bound) {
					t.Errorf("%s: trigger %d, %d packets kept, %d omitted; want no trigger (the RST came amid the download) and at most %d packets kept, the middle left out of a longer flow",
						c.File, f.Trigger, c.Packets, c.Omitted, bound)
				}
				break
			}
			if trig := rowAt(rows, f.Trigger); f.Trigger == 0 || f.Trigger >= f.Resets[0] || trig.dst != server || trig.tcpLen == 0 || f.IdleGapS < 1 || len(f.BeforeIdleGap) == 0 {
				t.Errorf("%s: trigger %d, idle gap %.1fs before frames %v; want our request after the gap, before the RST", c.File, f.Trigger, f.IdleGapS, f.BeforeIdleGap)
			}
		case kind == "idle-drop":
			retrans := pick(rows, func(r frameRow) bool { return r.retrans })
			if trig := rowAt(rows, f.Trigger); !f.Unanswered || len(f.Retransmissions) == 0 || trig.dst != server || trig.tcpLen == 0 {
				t.Errorf("%s: trigger %d (tshark %+v) unanswered=%v retransmissions %v; want an unanswered request with retransmissions", c.File, f.Trigger, trig, f.Unanswered, f.Retransmissions)
			}
			for _, n := range f.Retransmissions {
				if !slices.Contains(retrans, n) {
					t.Errorf("%s: index retransmission %d, tshark's retransmissions %v", c.File, n, retrans)
				}
			}
		}
	}
	wantInFlow := 0
	if kind == "idle-reset" || kind == "idle-drop" {
		wantInFlow = 1
	}
	if roles[evidence.RoleFailedConnection] == 0 || roles[evidence.RoleInFlowConfirmation] != wantInFlow {
		t.Errorf("captures by role %v; want failed connections and %d in-flow confirmation", roles, wantInFlow)
	}
}

// wantSoakEvidence checks a soak's --evidence DIR: index.json names every
// file of files, each opens in tshark and holds the connection's SYN-ACK
// and the RST from hop where the index says.
func wantSoakEvidence(t *testing.T, dir string, files []string, server string, hop int) {
	t.Helper()
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatalf("--evidence: %v", err)
	}
	indexed := map[string]evidence.IndexCapture{}
	for _, f := range idx.Findings {
		for _, c := range f.Captures {
			indexed[c.File] = c
		}
	}
	bin := tshark(t)
	for _, file := range files {
		c, ok := indexed[filepath.Base(file)]
		if !ok {
			t.Errorf("%s not in index.json", file)
			continue
		}
		if bin == "" {
			continue
		}
		f := c.Frames
		rows := tsharkRows(t, bin, file)
		synAcks := pick(rows, func(r frameRow) bool { return r.src == server && r.is(probe.FlagSYN|probe.FlagACK) })
		resets := pick(rows, func(r frameRow) bool { return r.src == server && r.is(probe.FlagRST) })
		if f.SynAck == 0 || len(synAcks) == 0 || synAcks[0] != f.SynAck || len(f.Resets) == 0 || len(resets) == 0 || resets[0] != f.Resets[0] {
			t.Errorf("%s: index SYN-ACK %d RSTs %v; tshark SYN-ACKs %v RSTs %v", file, f.SynAck, f.Resets, synAcks, resets)
			continue
		}
		if ttl := rowAt(rows, resets[0]).ttl; probe.SenderHop(ttl) != hop || ttl != f.ResetTTL {
			t.Errorf("%s: RST TTL %d (index %d) is hop %d, want %d", file, ttl, f.ResetTTL, probe.SenderHop(ttl), hop)
		}
	}
}

// `tcp connect --evidence DIR` toward a router that resets every SYN: the
// connect-reset finding names its captures (at most
// tcpcheck.EvidencePerFinding), index.json lists them under the finding,
// and each opens in tshark with the RST from hop 2 where the index says.
func TestTCPConnectEvidence(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[1].SYNResetPercent = 100
	l := buildLab(t, lab.Scenario{Name: "tcp-evidence", Routers: rs})
	dir := t.TempDir()
	server := l.Server4.String()
	rep, _ := tcpJSON(t, l, "connect", "--count", "5", "--rate", "50", "--evidence", dir, fmt.Sprintf("tcp://%s:%d", server, l.Server.EchoPort))
	f := oneFinding(t, rep, tcpcheck.KindConnectReset)
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatalf("--evidence: %v", err)
	}
	if len(idx.Findings) != 1 || idx.Findings[0].Kind != tcpcheck.KindConnectReset || rep.Findings[idx.Findings[0].Finding-1].Kind != tcpcheck.KindConnectReset {
		t.Fatalf("index.json findings %+v; want the connect-reset finding of %+v", idx.Findings, rep.Findings)
	}
	caps := idx.Findings[0].Captures
	if len(caps) == 0 || len(caps) > tcpcheck.EvidencePerFinding {
		t.Fatalf("%d captures, want 1..%d; finding evidence %q", len(caps), tcpcheck.EvidencePerFinding, f.Evidence)
	}
	t.Logf("finding evidence:\n  %s", strings.Join(f.Evidence, "\n  "))
	bin := tshark(t)
	for _, c := range caps {
		path := filepath.Join(dir, c.File)
		if !strings.Contains(strings.Join(f.Evidence, "\n"), "pcapng: "+path) {
			t.Errorf("finding evidence %q does not name %s", f.Evidence, path)
		}
		if c.Role != evidence.RoleFailedConnection || c.Connection == 0 || len(c.Frames.Resets) == 0 {
			t.Errorf("%s: role %s connection %d resets %v; want a failed connection with its RST", c.File, c.Role, c.Connection, c.Frames.Resets)
		}
		if bin == "" {
			continue
		}
		rows := tsharkRows(t, bin, path)
		resets := pick(rows, func(r frameRow) bool { return r.src == server && r.is(probe.FlagRST) })
		if len(rows) != c.Packets || len(resets) == 0 || len(c.Frames.Resets) == 0 || resets[0] != c.Frames.Resets[0] {
			t.Errorf("%s: tshark reads %d frames (index %d), RSTs %v (index %v)", c.File, len(rows), c.Packets, resets, c.Frames.Resets)
			continue
		}
		if ttl := rowAt(rows, resets[0]).ttl; probe.SenderHop(ttl) != 2 || ttl != c.Frames.ResetTTL {
			t.Errorf("%s: RST TTL %d (index %d) is hop %d, want hop 2", c.File, ttl, c.Frames.ResetTTL, probe.SenderHop(ttl))
		}
	}
}
