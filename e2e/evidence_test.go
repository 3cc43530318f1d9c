package e2e

import (
	"encoding/json"
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
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/probe"
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

// tsharkFrames is tshark's frame numbers of file that match filter, and
// field of each ("" for none).
func tsharkFrames(t *testing.T, bin, file, filter, field string) ([]int, []string) {
	t.Helper()
	args := []string{"-r", file, "-Y", filter, "-T", "fields", "-e", "frame.number"}
	if field != "" {
		args = append(args, "-e", field)
	}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("tshark %s: %v", strings.Join(args, " "), err)
	}
	var frames []int
	var values []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		cols := strings.SplitN(line, "\t", 2)
		n, err := strconv.Atoi(cols[0])
		if err != nil {
			t.Fatalf("tshark line %q", line)
		}
		frames = append(frames, n)
		if len(cols) == 2 {
			values = append(values, cols[1])
		}
	}
	return frames, values
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
	raw, err := os.ReadFile(filepath.Join(dir, evidence.IndexJSON))
	if err != nil {
		t.Fatalf("--evidence: %v", err)
	}
	var idx evidence.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
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
		t.Fatalf("index.json has no %s finding matching the report: %s", kind, raw)
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
		all, _ := tsharkFrames(t, bin, path, "frame", "")
		if len(all) != c.Packets {
			t.Errorf("%s: tshark reads %d frames, index says %d", c.File, len(all), c.Packets)
		}
		synAcks, ttls := tsharkFrames(t, bin, path, fmt.Sprintf("ip.src==%s && tcp.flags.syn==1 && tcp.flags.ack==1", server), "ip.ttl")
		if f.SynAck == 0 || len(synAcks) == 0 || synAcks[0] != f.SynAck || ttls[0] != strconv.Itoa(f.SynAckTTL) {
			t.Errorf("%s: SYN-ACK at frame %d TTL %d in the index; tshark: frames %v TTLs %v", c.File, f.SynAck, f.SynAckTTL, synAcks, ttls)
		}
		switch {
		case c.Role == evidence.RoleInFlowConfirmation:
			answers, _ := tsharkFrames(t, bin, path, "icmp.type==11", "")
			probes, _ := tsharkFrames(t, bin, path, fmt.Sprintf("ip.dst==%s && tcp && !icmp && ip.ttl < 32", server), "")
			if len(answers) == 0 || !slices.Equal(answers, f.InFlowAnswers) || len(probes) == 0 || !slices.Equal(probes, f.InFlowProbes) {
				t.Errorf("%s: in-flow probes %v answers %v in the index; tshark: probes %v, time-exceeded %v", c.File, f.InFlowProbes, f.InFlowAnswers, probes, answers)
			}
		case kind == "idle-reset" || kind == "midstream-reset":
			resets, ttls := tsharkFrames(t, bin, path, fmt.Sprintf("ip.src==%s && tcp.flags.reset==1", server), "ip.ttl")
			if len(f.Resets) == 0 || len(resets) == 0 || resets[0] != f.Resets[0] {
				t.Errorf("%s: RST frames %v in the index, tshark %v", c.File, f.Resets, resets)
			} else if ttl, _ := strconv.Atoi(ttls[0]); probe.SenderHop(ttl) != hop {
				t.Errorf("%s: RST TTL %d is hop %d, want hop %d", c.File, ttl, probe.SenderHop(ttl), hop)
			}
			if kind == "midstream-reset" {
				if f.Trigger != 0 || c.Omitted == 0 {
					t.Errorf("%s: trigger %d, %d packets omitted; want no trigger (the RST came amid the download) and the middle of the transfer not kept", c.File, f.Trigger, c.Omitted)
				}
				break
			}
			if len(f.Resets) == 0 || f.Trigger == 0 || f.Trigger >= f.Resets[0] || f.IdleGapS < 1 || len(f.BeforeIdleGap) == 0 {
				t.Errorf("%s: trigger %d, idle gap %.1fs before frames %v; want the request after the gap, before the RST", c.File, f.Trigger, f.IdleGapS, f.BeforeIdleGap)
			}
		case kind == "idle-drop":
			retrans, _ := tsharkFrames(t, bin, path, "tcp.analysis.retransmission", "")
			trigger, _ := tsharkFrames(t, bin, path, fmt.Sprintf("frame.number==%d && ip.dst==%s && tcp.len>0", f.Trigger, server), "")
			if !f.Unanswered || len(f.Retransmissions) == 0 || len(trigger) != 1 {
				t.Errorf("%s: trigger %d (tshark %v) unanswered=%v retransmissions %v; want an unanswered request with retransmissions", c.File, f.Trigger, trigger, f.Unanswered, f.Retransmissions)
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
	raw, err := os.ReadFile(filepath.Join(dir, evidence.IndexJSON))
	if err != nil {
		t.Fatalf("--evidence: %v", err)
	}
	var idx evidence.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
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
		synAcks, _ := tsharkFrames(t, bin, file, fmt.Sprintf("ip.src==%s && tcp.flags.syn==1 && tcp.flags.ack==1", server), "")
		resets, ttls := tsharkFrames(t, bin, file, fmt.Sprintf("ip.src==%s && tcp.flags.reset==1", server), "ip.ttl")
		if f.SynAck == 0 || len(synAcks) == 0 || synAcks[0] != f.SynAck || len(f.Resets) == 0 || len(resets) == 0 || resets[0] != f.Resets[0] {
			t.Errorf("%s: index SYN-ACK %d RSTs %v; tshark SYN-ACKs %v RSTs %v", file, f.SynAck, f.Resets, synAcks, resets)
			continue
		}
		if ttl, _ := strconv.Atoi(ttls[0]); probe.SenderHop(ttl) != hop {
			t.Errorf("%s: RST TTL %d is hop %d, want %d", file, ttl, probe.SenderHop(ttl), hop)
		}
	}
}
