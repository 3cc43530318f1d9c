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

// enableCmsgStamps asks the kernel to attach its receive time to every
// message read from fd, error-queue messages (ICMP errors) included.
func enableCmsgStamps(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}

// cmsgStamp returns the kernel receive time carried in the control
// messages of one recvmsg (SCM_TIMESTAMPNS), or fallback when there is
// none or it is not plausible (pure).
func cmsgStamp(oob []byte, fallback time.Time) time.Time {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.SizeofCmsghdr+16 {
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), oob[unix.SizeofCmsghdr:l])
			at := time.Unix(ts.Sec, ts.Nsec)
			if ts.Sec == 0 || at.After(fallback) || fallback.Sub(at) > time.Minute {
				return fallback
			}
			return at
		}
		oob = oob[min(len(oob), unix.CmsgSpace(l-unix.SizeofCmsghdr)):]
	}
	return fallback
}
