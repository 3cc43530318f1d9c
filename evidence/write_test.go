package evidence

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Writer: each capture a file with the line its finding names it with,
// a missing local address filled in, and the index written by Close.
func TestWriterWritesCapturesAndIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	w, err := NewWriter(dir, func(a netip.Addr) netip.Addr {
		if a != server {
			t.Errorf("local address asked toward %s, want %s", a, server)
		}
		return client
	})
	if err != nil {
		t.Fatal(err)
	}
	reset := idleReset(t)
	noLocal := reset
	noLocal.Local = netip.AddrPortFrom(netip.Addr{}, 40001)
	var lines []string
	for _, e := range []Entry{
		{Finding: 2, Kind: "idle-reset", Address: "198.18.5.2", Hop: 3, File: "b.pcapng", Role: RoleFailedConnection, Connection: 5, Capture: noLocal},
		{Finding: 1, Kind: "connect-reset", Address: "198.18.5.2", File: "a.pcapng", Role: RoleFailedConnection, Connection: 1, Capture: reset},
	} {
		line, err := w.Write(e, e.Kind+": a connection")
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	b := filepath.Join(dir, "b.pcapng")
	if want := "pcapng: " + b + " (idle-reset: a connection; frames: SYN-ACK 2 (TTL 61), trigger 7, RST 8; see index.txt)"; lines[0] != want {
		t.Errorf("line %q\nwant %q", lines[0], want)
	}
	if files := w.Files(); len(files) != 2 || files[0] != b || files[1] != filepath.Join(dir, "a.pcapng") {
		t.Errorf("files %v", files)
	}
	if _, err := os.Stat(filepath.Join(dir, IndexJSON)); err == nil {
		t.Errorf("index written before Close")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	idx, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Findings) != 2 || idx.Findings[0].Finding != 1 || idx.Findings[1].Kind != "idle-reset" ||
		idx.Findings[1].Captures[0].Flow != "198.18.0.1:40001 > 198.18.5.2:443" || idx.Findings[1].Captures[0].Frames.Resets[0] != 8 {
		t.Errorf("index %+v", idx.Findings)
	}
	if data, err := os.ReadFile(b); err != nil || len(data) == 0 {
		t.Errorf("%s: %d bytes, %v", b, len(data), err)
	}
}

// Nothing written: Close still writes an index that lists no finding.
func TestWriterEmptyIndex(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if idx, err := ReadIndex(dir); err != nil || idx.Findings == nil || len(idx.Findings) != 0 {
		t.Errorf("index %+v, %v", idx, err)
	}
}

func TestWriterRefusesAFileAsDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(f, nil); err == nil || !strings.Contains(err.Error(), "evidence dir") {
		t.Errorf("NewWriter over a file: %v", err)
	}
}

func TestFileName(t *testing.T) {
	for _, c := range []struct {
		addr, kind, suffix string
		port               int
		want               string
	}{
		{"198.18.5.2", "idle-reset", "conn5", 443, "198_18_5_2-443-idle-reset-conn5.pcapng"},
		{"2001:db8::2", "idle-drop", "inflow", 5671, "2001_db8__2-5671-idle-drop-inflow.pcapng"},
	} {
		if got := FileName(c.addr, c.port, c.kind, c.suffix); got != c.want {
			t.Errorf("FileName(%s, %d, %s, %s) = %s, want %s", c.addr, c.port, c.kind, c.suffix, got, c.want)
		}
	}
}

func TestFrameSummary(t *testing.T) {
	for _, c := range []struct {
		f    Frames
		want string
	}{
		{Frames{}, "none identified"},
		{Annotate(idleReset(t)).Frames, "SYN-ACK 2 (TTL 61), trigger 7, RST 8"},
		{Annotate(idleDrop(t)).Frames, "SYN-ACK 2 (TTL 61), unanswered 7, 3 retransmissions, 3 in-flow probes, 2 ICMP answers"},
		{Frames{Fins: []int{4}}, "FIN 4"},
	} {
		if got := FrameSummary(c.f); got != c.want {
			t.Errorf("FrameSummary(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
}

// The warning names what is missing, why, and what is lost, on one line.
func TestCaptureWarning(t *testing.T) {
	w := CaptureWarning("/tmp/ev", errors.New("flow capture: packet socket: address family not supported by protocol"))
	for _, want := range []string{"packet captures are unavailable", "address family not supported", "--evidence /tmp/ev", "no pcapng files", "resets and drops"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q lacks %q", w, want)
		}
	}
	if strings.Contains(w, "\n") {
		t.Errorf("warning %q is more than one line", w)
	}
}
