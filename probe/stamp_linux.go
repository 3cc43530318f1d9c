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

// txStampFlags ask the kernel for a software stamp of each packet sent, as
// it enters the device layer (SCHED) and as the driver takes it (SND),
// reported on the error queue without the packet, numbered per socket.
const txStampFlags = unix.SOF_TIMESTAMPING_TX_SCHED | unix.SOF_TIMESTAMPING_TX_SOFTWARE |
	unix.SOF_TIMESTAMPING_SOFTWARE | unix.SOF_TIMESTAMPING_OPT_ID | unix.SOF_TIMESTAMPING_OPT_TSONLY

// txStamp is one transmit stamp read from a socket's error queue.
type txStamp struct {
	at time.Time
	// id is the socket's send counter (SOF_TIMESTAMPING_OPT_ID), from 0.
	id uint32
	// sched: stamped entering the device layer; else by the driver.
	sched bool
}

// soEEOriginTimestamping is SO_EE_ORIGIN_TIMESTAMPING.
const soEEOriginTimestamping = 4

// decodeTxStamp reads a transmit stamp from the control messages of one
// MSG_ERRQUEUE read (pure): SCM_TIMESTAMPING's software time and the
// sock_extended_err of origin TIMESTAMPING that numbers it.
func decodeTxStamp(oob []byte) (txStamp, bool) {
	var st txStamp
	var haveTime, haveErr bool
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.SizeofCmsghdr:l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPING && len(data) >= 16:
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), data[:16])
			if ts.Sec > 0 && ts.Nsec >= 0 && ts.Nsec < 1e9 {
				st.at, haveTime = time.Unix(ts.Sec, ts.Nsec), true
			}
		case ((h.Level == unix.SOL_IP && h.Type == unix.IP_RECVERR) || (h.Level == unix.SOL_IPV6 && h.Type == unix.IPV6_RECVERR)) && len(data) >= 16:
			if data[4] != soEEOriginTimestamping {
				return txStamp{}, false
			}
			info := *(*uint32)(unsafe.Pointer(&data[8]))
			st.id = *(*uint32)(unsafe.Pointer(&data[12]))
			st.sched = info == unix.SCM_TSTAMP_SCHED
			haveErr = true
		}
		oob = oob[min(len(oob), unix.CmsgSpace(l-unix.SizeofCmsghdr)):]
	}
	return st, haveTime && haveErr
}
