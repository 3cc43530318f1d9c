package soak

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
)

// Evidence writes, for the first PerKind failures of each kind and
// address, a pcapng file (Wireshark, tshark) of the failed flow as the
// flow observer's bounded history holds it: both directions from the SYN
// on, the ICMP errors quoting it, a comment on each packet that matters.
// index.json and index.txt in the directory, rewritten after each file,
// map each failure kind and address to its files and the frames to look
// at (docs/evidence.md). Memory stays flat: the index keeps frame numbers,
// not packets, and files are bounded per kind and address.
type Evidence struct {
	Dir     string
	PerKind int

	mu    sync.Mutex
	count map[string]int      // address/kind -> files written
	files map[string][]string // address -> files
	keys  map[string]int      // address/kind -> its number in the index
	index evidence.Index
	err   error
}

// NewEvidence writes into dir (created if needed), perKind files per
// failure kind and address at most.
func NewEvidence(dir string, perKind int) (*Evidence, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence dir: %w", err)
	}
	return &Evidence{Dir: dir, PerKind: max(1, perKind), count: map[string]int{}, files: map[string][]string{},
		keys: map[string]int{}, index: evidence.NewIndex()}, nil
}

// Files are the files written for an address so far.
func (e *Evidence) Files(addr string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.files[addr]...)
}

// Err is the first write error (writing evidence never fails a soak).
func (e *Evidence) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Write stores the capture of a failed flow of kind toward addr.
func (e *Evidence) Write(addr, kind string, c probe.FlowCapture) {
	if len(c.Packets) == 0 {
		return
	}
	e.mu.Lock()
	key := addr + "/" + kind
	n := e.count[key]
	if n >= e.PerKind {
		e.mu.Unlock()
		return
	}
	e.count[key] = n + 1
	e.mu.Unlock()
	what := fmt.Sprintf("soak failure %s toward %s, local port %d", kind, addr, c.Local.Port())
	st := evidence.Annotate(c)
	data, err := evidence.Pcapng(c, st.Notes, evidence.Title(c, what))
	name := fmt.Sprintf("%s-%s-%d.pcapng", strings.NewReplacer(":", "_", ".", "_").Replace(c.Remote.Addr().String()), kind, n+1)
	path := filepath.Join(e.Dir, name)
	if err == nil {
		err = evidence.WriteFile(path, data)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		num, ok := e.keys[key]
		if !ok {
			num = len(e.keys) + 1
			e.keys[key] = num
		}
		e.index.Add(evidence.Entry{Finding: num, Kind: kind, Address: addr, File: name, Role: evidence.RoleFailedConnection, Capture: c})
		e.files[addr] = append(e.files[addr], path)
		err = evidence.WriteIndex(e.Dir, e.index)
	}
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("evidence %s: %w", path, err)
	}
}
