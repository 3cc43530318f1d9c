package lab

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// parseLabName splits a name made by newID (optionally followed by "-...")
// into the creator pid. ok is false for names that are not lab names of
// this prefix, so that nothing else is ever touched.
func parseLabName(prefix, name string) (pid int, ok bool) {
	rest, found := strings.CutPrefix(name, prefix)
	if !found {
		return 0, false
	}
	digits, after, found := strings.Cut(rest, "x")
	if !found || digits == "" || len(digits) > 10 {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != digits {
		return 0, false
	}
	random, _, _ := strings.Cut(after, "-")
	if len(random) != 4 {
		return 0, false
	}
	for _, c := range random {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return 0, false
		}
	}
	return pid, true
}

// processAlive reports whether pid exists (EPERM means it does).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// CleanupStale deletes lab namespaces (and temp dirs) with this prefix whose
// creating process is dead, killing what still runs in them. Labs of live
// processes are left alone.
func CleanupStale(prefix string) error {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	var stale []string
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listing %s: %w", netnsDir, err)
	}
	for _, e := range entries {
		if pid, ok := parseLabName(prefix, e.Name()); ok && !processAlive(pid) {
			stale = append(stale, e.Name())
		}
	}
	var errs []error
	if err := deleteNamespaces(stale); err != nil {
		errs = append(errs, err)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range dirs {
		if pid, ok := parseLabName(prefix, filepath.Base(d)); ok && !processAlive(pid) {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, fmt.Errorf("removing stale %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CloseOnSignal closes the lab on SIGINT or SIGTERM, then re-raises the
// signal so that the process ends as it would have without the handler.
// Close stops the watch.
func (l *Lab) CloseOnSignal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.stopWatch != nil {
		return
	}
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	l.stopWatch = func() {
		signal.Stop(sigs)
		close(done)
	}
	go func() {
		select {
		case <-done:
		case sig := <-sigs:
			l.log("lab %s: %v: tearing down", l.ID, sig)
			_ = l.Close()
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), s)
			}
		}
	}()
}
