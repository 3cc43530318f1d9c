package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// labPrefixes are the only destinations this package dials.
var labPrefixes = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// isLabAddr reports whether a is a lab address.
func isLabAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range labPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// InNamespace runs fn on an OS thread switched into the network namespace
// ns. Sockets created by fn stay in ns for their whole life; goroutines that
// fn starts do not run in ns. If the thread cannot be switched back it is
// discarded, never reused.
func InNamespace(ns string, fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer target.Close()
	var want unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &want); err != nil {
		return fmt.Errorf("stat namespace %s: %w", ns, err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening own namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		// Check before running fn: a lab address must never be dialled
		// from the root namespace.
		var got unix.Stat_t
		ferr := unix.Stat("/proc/thread-self/ns/net", &got)
		if ferr == nil && (got.Ino != want.Ino || got.Dev != want.Dev) {
			ferr = fmt.Errorf("thread is not in namespace %s after setns", ns)
		}
		if ferr == nil {
			ferr = fn()
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			errc <- fmt.Errorf("leaving namespace %s: %w (after: %v)", ns, err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dial connects from inside namespace ns (for example l.ClientNS) to a lab
// address. The connection lives in ns; it can be used from any goroutine.
func (l *Lab) Dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("lab dial %s: need a literal address:port: %w", address, err)
	}
	if !isLabAddr(ap.Addr()) {
		return nil, fmt.Errorf("lab dial %s: not a lab address (198.18.0.0/15, 2001:db8::/32)", address)
	}
	var conn net.Conn
	err = InNamespace(ns, func() error {
		// One literal address: the socket is created on this goroutine's
		// (locked) thread, not by a racing dialer goroutine.
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("lab dial %s from %s: %w", address, ns, err)
	}
	return conn, nil
}
