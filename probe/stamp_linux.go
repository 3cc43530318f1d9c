package probe

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelStamp returns the kernel's receive time of the last packet read
// from the socket (SIOCGSTAMPNS), so that an RTT does not include the time
// the reading goroutine waited to be scheduled. It falls back to fallback.
func kernelStamp(rc syscall.RawConn, fallback time.Time) time.Time {
	if rc == nil {
		return fallback
	}
	var ts unix.Timespec
	var errno syscall.Errno
	err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.SIOCGSTAMPNS, uintptr(unsafe.Pointer(&ts)))
	})
	if err != nil || errno != 0 || ts.Sec == 0 {
		return fallback
	}
	at := time.Unix(ts.Sec, ts.Nsec)
	// A stamp from the future or far past is not trustworthy.
	if at.After(fallback) || fallback.Sub(at) > time.Minute {
		return fallback
	}
	return at
}

// enableStamps turns on receive timestamps for a socket: the first
// SIOCGSTAMPNS enables them (and fails, as nothing was stamped yet).
func enableStamps(rc syscall.RawConn) {
	kernelStamp(rc, time.Now())
}

// syscallConn returns the raw connection of c, or nil.
func syscallConn(c any) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
