package tcpcheck

import (
	"net"

	"golang.org/x/sys/unix"
)

// SegmentInfo is what the kernel's TCP_INFO says about a connection's
// segment sizes right after connect: the MSS this side advertised in its
// SYN (what the server may send), the MSS it sends with, and the path MTU
// the socket uses. A path MTU learned earlier (a frag-needed drawn by an
// earlier connection or probe) shows here as a lower pmtu / snd_mss than
// the link's, so that one connection's record says whether the kernel's
// PMTU cache, not the path, shaped it.
type SegmentInfo struct {
	AdvMSS  int `json:"adv_mss"`
	SendMSS int `json:"snd_mss"`
	PathMTU int `json:"pmtu"`
}

// segmentInfo reads c's TCP_INFO; nil when it cannot.
func segmentInfo(c *net.TCPConn) *SegmentInfo {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return nil
	}
	return &SegmentInfo{AdvMSS: int(info.Advmss), SendMSS: int(info.Snd_mss), PathMTU: int(info.Pmtu)}
}
