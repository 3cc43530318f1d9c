package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// output is where a report goes: stdout, or a file written atomically
// (temporary file in the same directory, renamed on success, removed on
// failure) so that no half-written report is ever left behind.
type output struct {
	w   io.Writer
	tmp *os.File
	// special is a device or pipe written in place (no atomic rename).
	special *os.File
	path    string
	format  string // text|json
	tty     bool
}

// openOutput validates --format and -o before any work starts.
func openOutput(c *ucli.Context, formats ...string) (*output, error) {
	format := flagString(c, "format")
	if format == "auto" {
		format = "text"
	}
	ok := false
	for _, f := range formats {
		if f == format {
			ok = true
		}
	}
	if !ok {
		return nil, usageErr("unknown --format %q (want one of %v)", format, formats)
	}
	o := &output{w: c.App.Writer, format: format}
	path := flagString(c, "output")
	if path == "" || path == "-" {
		o.tty = isTerminal(c.App.Writer)
		return o, nil
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, usageErr("output %q is a directory", path)
	} else if err == nil && !st.Mode().IsRegular() {
		// A device or pipe (/dev/null, /dev/stdout, a FIFO) is written in
		// place: renaming a file over it would replace it.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, usageErr("cannot write output %q: %v", path, unwrapPathErr(err))
		}
		o.w, o.special, o.path = f, f, path
		return o, nil
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, usageErr("cannot write output file %q: %v", path, unwrapPathErr(err))
	}
	o.w, o.tmp, o.path = tmp, tmp, path
	return o, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// commit renames the temporary file into place.
func (o *output) commit() error {
	if o.special != nil {
		err := o.special.Close()
		o.special = nil
		if err != nil {
			return cantRunErr("write %s: %v", o.path, err)
		}
		return nil
	}
	if o.tmp == nil {
		return nil
	}
	name := o.tmp.Name()
	if err := o.tmp.Close(); err != nil {
		os.Remove(name)
		return cantRunErr("write %s: %v", o.path, err)
	}
	o.tmp = nil
	// CreateTemp makes the file 0600; a report is as readable as any file.
	if err := os.Chmod(name, 0o644); err != nil {
		os.Remove(name)
		return cantRunErr("write %s: %v", o.path, err)
	}
	if err := os.Rename(name, o.path); err != nil {
		os.Remove(name)
		return cantRunErr("write %s: %v", o.path, err)
	}
	return nil
}

// abort removes the temporary file; safe to call after commit.
func (o *output) abort() {
	if o == nil {
		return
	}
	if o.special != nil {
		o.special.Close()
		o.special = nil
	}
	if o.tmp == nil {
		return
	}
	name := o.tmp.Name()
	o.tmp.Close()
	os.Remove(name)
	o.tmp = nil
}

// isTerminal reports whether w is a terminal (for live progress and
// tables); pipes and cron get plain text.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// warnf prints a one-line warning to stderr.
func warnf(c *ucli.Context, format string, a ...any) {
	fmt.Fprintf(c.App.ErrWriter, "hopcheck: "+format+"\n", a...)
}
