package history

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestSaveLastAndRetention(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hist")
	var paths []string
	for i := 0; i < 5; i++ {
		p, err := Save(dir, "run", map[string]int{"i": i}, t0.Add(time.Duration(i)*time.Hour), Retention{Keep: 3})
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// Same instant: a distinct name a millisecond on.
	p2, err := Save(dir, "run", 5, t0.Add(4*time.Hour), Retention{Keep: 3})
	if err != nil || p2 == paths[4] {
		t.Fatalf("second save at the same instant: %s %v", p2, err)
	}
	if _, err := Save(dir, "soak", 1, t0.Add(30*time.Minute), Retention{}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	runs, err := List(dir, "run")
	if err != nil || len(runs) != 3 {
		t.Fatalf("runs kept %+v %v", runs, err)
	}
	if filepath.Base(runs[0].Path) != "run-20260301T150000.000Z.json" {
		t.Errorf("oldest kept %s", runs[0].Path)
	}
	last, err := Last(dir, 2)
	if err != nil || len(last) != 2 || last[1] != p2 || last[0] != paths[4] {
		t.Errorf("Last 2 = %v %v", last, err)
	}
	if l, err := LastOfKind(dir, "soak", 1); err != nil || !strings.Contains(l[0], "soak-") {
		t.Errorf("LastOfKind soak = %v %v", l, err)
	}
	if _, err := LastOfKind(dir, "soak", 2); err == nil || !strings.Contains(err.Error(), "1 soak reports, 2 needed") {
		t.Errorf("too few: %v", err)
	}
	// Age retention removes the old soak report, never the one just saved.
	if _, err := Save(dir, "soak", 2, t0.Add(48*time.Hour), Retention{MaxAge: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if s, _ := List(dir, "soak"); len(s) != 1 || !s[0].At.Equal(t0.Add(48*time.Hour)) {
		t.Errorf("soak after age retention %+v", s)
	}
	if _, err := Save(dir, "Bad Kind", 1, t0, Retention{}); err == nil {
		t.Errorf("bad kind accepted")
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*")); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestWriteAtomicReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.prom")
	for _, s := range []string{"one\n", "two\n"} {
		if err := WriteAtomic(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "two\n" {
		t.Errorf("content %q", b)
	}
	if err := WriteAtomic(filepath.Join(p, "x"), nil, 0o644); err == nil {
		t.Errorf("write below a file succeeded")
	}
}

func TestWriteAtomicWritesDevicesInPlace(t *testing.T) {
	// Renaming over /dev/null would replace the device: it must be
	// written in place, and nothing left beside it.
	if err := WriteAtomic(os.DevNull, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(os.DevNull)
	if err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Fatalf("%s is no longer a device: %v %v", os.DevNull, st.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(os.DevNull), ".null.tmp-*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
