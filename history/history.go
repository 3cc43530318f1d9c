// Package history keeps reports of scheduled runs as timestamped JSON
// files in a directory, with retention, and compares two reports (Diff).
package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Retention says which saved reports of a kind to keep: the newest Keep
// (0: no count limit) and none older than MaxAge (0: no age limit).
type Retention struct {
	Keep   int
	MaxAge time.Duration
}

// stampLayout is the UTC timestamp in file names; names sort in time
// order.
const stampLayout = "20060102T150405.000Z"

// validKind reports whether kind is a lower-case ASCII letter followed by
// lower-case ASCII letters and digits (what `^[a-z][a-z0-9]*$` matches),
// checked by hand so that no regexp is compiled at process start.
func validKind(kind string) bool {
	if kind == "" || kind[0] < 'a' || kind[0] > 'z' {
		return false
	}
	for i := 1; i < len(kind); i++ {
		c := kind[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Entry is one saved report.
type Entry struct {
	Path string
	Kind string
	At   time.Time
}

// WriteAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place: readers see the old file or
// the new one, never a half-written one.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() && !st.IsDir() {
		// A device or pipe (/dev/null, a FIFO) is written in place:
		// renaming a file over it would replace it.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		_, werr := f.Write(data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("write %s: %w", path, werr)
		}
		return nil
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; not fatal where unsupported
		d.Close()
	}
	return nil
}

// Save writes v as indented JSON to dir/KIND-TIMESTAMP.json atomically
// (dir is created if needed), then applies keep to the reports of that
// kind. kind is lower-case letters and digits ("run", "soak").
func Save(dir string, kind string, v any, now time.Time, keep Retention) (string, error) {
	if !validKind(kind) {
		return "", fmt.Errorf("history: kind %q must be lower-case letters and digits", kind)
	}
	if keep.Keep < 0 || keep.MaxAge < 0 {
		return "", fmt.Errorf("history: negative retention %+v", keep)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", fmt.Errorf("history: encode %s report: %w", kind, err)
	}
	data = append(data, '\n')
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("history: %w", err)
	}
	at := now.UTC()
	path := filepath.Join(dir, kind+"-"+at.Format(stampLayout)+".json")
	for i := 0; ; i++ {
		// Two saves within a millisecond: the later one a millisecond on.
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
		at = at.Add(time.Millisecond)
		path = filepath.Join(dir, kind+"-"+at.Format(stampLayout)+".json")
		if i > 1000 {
			return "", fmt.Errorf("history: no free name in %s", dir)
		}
	}
	if err := WriteAtomic(path, data, 0o644); err != nil {
		return "", fmt.Errorf("history: %w", err)
	}
	if err := Prune(dir, kind, now, keep, path); err != nil {
		return path, err
	}
	return path, nil
}

// List returns the saved reports in dir, oldest first; kind "" lists
// every kind. Files that are not reports are ignored.
func List(dir, kind string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var out []Entry
	for _, de := range des {
		e, ok := parseName(de.Name())
		if !ok || de.IsDir() || (kind != "" && e.Kind != kind) {
			continue
		}
		e.Path = filepath.Join(dir, de.Name())
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

func parseName(name string) (Entry, bool) {
	base, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return Entry{}, false
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return Entry{}, false
	}
	kind, stamp := base[:i], base[i+1:]
	if !validKind(kind) {
		return Entry{}, false
	}
	at, err := time.Parse(stampLayout, stamp)
	if err != nil {
		return Entry{}, false
	}
	return Entry{Kind: kind, At: at}, true
}

// Last returns the paths of the newest n reports in dir (any kind),
// oldest first: Last(dir, 2) is what `hopcheck diff --last 2` compares.
func Last(dir string, n int) ([]string, error) {
	return LastOfKind(dir, "", n)
}

// LastOfKind is Last restricted to one kind ("" any).
func LastOfKind(dir, kind string, n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("history: n %d must be at least 1", n)
	}
	es, err := List(dir, kind)
	if err != nil {
		return nil, err
	}
	if len(es) < n {
		what := "reports"
		if kind != "" {
			what = kind + " reports"
		}
		return nil, fmt.Errorf("history: %s holds %d %s, %d needed", dir, len(es), what, n)
	}
	var out []string
	for _, e := range es[len(es)-n:] {
		out = append(out, e.Path)
	}
	return out, nil
}

// Prune removes reports of kind beyond keep (never the file named spare).
func Prune(dir, kind string, now time.Time, keep Retention, spare string) error {
	if keep.Keep == 0 && keep.MaxAge == 0 {
		return nil
	}
	es, err := List(dir, kind)
	if err != nil {
		return err
	}
	var errs []error
	for i, e := range es {
		tooMany := keep.Keep > 0 && i < len(es)-keep.Keep
		tooOld := keep.MaxAge > 0 && now.Sub(e.At) > keep.MaxAge
		if (tooMany || tooOld) && e.Path != spare {
			if err := os.Remove(e.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("history: retention: %w", errors.Join(errs...))
	}
	return nil
}
