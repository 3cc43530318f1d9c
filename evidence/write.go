package evidence

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Index file names inside an evidence directory.
const (
	IndexJSON = "index.json"
	IndexText = "index.txt"
)

// WriteFile writes data to path atomically (a temporary file renamed over
// it): a reader never sees half a capture or index.
func WriteFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

// WriteIndex writes index.json and index.txt into dir.
func WriteIndex(dir string, idx Index) error {
	js, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("evidence index: %w", err)
	}
	if err := WriteFile(filepath.Join(dir, IndexJSON), append(js, '\n')); err != nil {
		return fmt.Errorf("evidence index: %w", err)
	}
	if err := WriteFile(filepath.Join(dir, IndexText), []byte(idx.Text())); err != nil {
		return fmt.Errorf("evidence index: %w", err)
	}
	return nil
}

// ReadIndex reads the index.json that WriteIndex wrote into dir.
func ReadIndex(dir string) (Index, error) {
	var idx Index
	raw, err := os.ReadFile(filepath.Join(dir, IndexJSON))
	if err != nil {
		return idx, fmt.Errorf("evidence index: %w", err)
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return idx, fmt.Errorf("evidence index %s: %w", filepath.Join(dir, IndexJSON), err)
	}
	return idx, nil
}

// Writer writes the captures behind a report's findings into Dir, one
// pcapng file each, and keeps the index of what it wrote (frame numbers,
// not packets) for Close. `run` and `tcp` share it.
type Writer struct {
	Dir string
	// Local gives this host's address toward remote, for a capture that
	// lacks it (nil: left as is).
	Local func(remote netip.Addr) netip.Addr

	files []string
	index Index
}

// NewWriter writes into dir, which it creates if needed.
func NewWriter(dir string, local func(netip.Addr) netip.Addr) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence dir: %w", err)
	}
	return &Writer{Dir: dir, Local: local, index: NewIndex()}, nil
}

// Write writes e.Capture into Dir as e.File, with a comment on each
// packet that matters (Annotate) and what as the section's title, indexes
// it, and returns the line the finding's evidence names it with:
// `pcapng: PATH (what; frames: ...; see index.txt)`.
func (w *Writer) Write(e Entry, what string) (string, error) {
	c := e.Capture
	if !c.Local.Addr().IsValid() && w.Local != nil {
		c.Local = netip.AddrPortFrom(w.Local(c.Remote.Addr()), c.Local.Port())
	}
	story := Annotate(c)
	data, err := Pcapng(c, story.Notes, Title(c, what))
	if err != nil {
		return "", fmt.Errorf("evidence %s: %w", e.File, err)
	}
	path := filepath.Join(w.Dir, e.File)
	if err := WriteFile(path, data); err != nil {
		return "", fmt.Errorf("evidence: %w", err)
	}
	w.files = append(w.files, path)
	e.Capture = c
	w.index.Add(e)
	return fmt.Sprintf("pcapng: %s (%s; frames: %s; see %s)", path, what, FrameSummary(story.Frames), IndexText), nil
}

// Files are the paths written so far.
func (w *Writer) Files() []string { return append([]string(nil), w.files...) }

// Close writes index.json and index.txt (an index without findings when
// nothing was written, which says so).
func (w *Writer) Close() error { return WriteIndex(w.Dir, w.index) }

// FileName is the name of a capture behind a finding of kind toward
// address:port: ADDR-PORT-KIND-SUFFIX.pcapng (the address's dots and colons
// made underscores).
func FileName(address string, port int, kind, suffix string) string {
	return fmt.Sprintf("%s-%d-%s-%s.pcapng", strings.NewReplacer(":", "_", ".", "_").Replace(address), port, kind, suffix)
}

// FrameSummary names the key frames in a few words.
func FrameSummary(f Frames) string {
	var parts []string
	if f.SynAck != 0 {
		parts = append(parts, fmt.Sprintf("SYN-ACK %d (TTL %d)", f.SynAck, f.SynAckTTL))
	}
	if f.Trigger != 0 {
		if f.Unanswered {
			parts = append(parts, fmt.Sprintf("unanswered %d, %d retransmissions", f.Trigger, len(f.Retransmissions)))
		} else {
			parts = append(parts, fmt.Sprintf("trigger %d", f.Trigger))
		}
	}
	if len(f.Resets) > 0 {
		parts = append(parts, fmt.Sprintf("RST %d", f.Resets[0]))
	}
	if len(f.Fins) > 0 {
		parts = append(parts, fmt.Sprintf("FIN %d", f.Fins[0]))
	}
	if len(f.InFlowProbes) > 0 {
		parts = append(parts, fmt.Sprintf("%d in-flow probes, %d ICMP answers", len(f.InFlowProbes), len(f.InFlowAnswers)))
	}
	if len(parts) == 0 {
		return "none identified"
	}
	return strings.Join(parts, ", ")
}

// CaptureWarning is the report's warning when --evidence DIR was asked
// for but the flow observer's packet capture could not be opened (err):
// what is missing, why, and what is lost.
func CaptureWarning(dir string, err error) string {
	return fmt.Sprintf("packet captures are unavailable (%v): --evidence %s gets no pcapng files of the resets and drops", err, dir)
}
