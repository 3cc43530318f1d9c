package evidence

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
