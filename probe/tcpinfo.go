package probe

import (
	"encoding/binary"
	"fmt"
)

// TCPInfo is the part of Linux's struct tcp_info that the in-flow probes
// need to know an idle flow's sequence numbers.
type TCPInfo struct {
	State                     uint8
	SndWScale, RcvWScale      uint8
	Unacked                   uint32
	BytesAcked, BytesReceived uint64
	BytesSent, BytesRetrans   uint64
	NotSent                   uint32
	RcvWnd                    uint32 // 0: the kernel does not report it (before 6.2)
}

// TCPStateEstablished is tcp_info's state of an established connection.
const TCPStateEstablished = 1

// tcp_info offsets (include/uapi/linux/tcp.h); bytes_sent and
// bytes_retrans arrived in Linux 4.19, rcv_wnd in 6.2.
const (
	tcpInfoMinLen        = 216
	tcpInfoRcvWndEnd     = 236
	offTCPInfoWScale     = 6
	offTCPInfoUnacked    = 24
	offTCPInfoBytesAcked = 120
	offTCPInfoBytesRecv  = 128
	offTCPInfoNotSent    = 144
	offTCPInfoBytesSent  = 200
	offTCPInfoBytesRetr  = 208
	offTCPInfoRcvWnd     = 232
)

// DecodeTCPInfo decodes a struct tcp_info as getsockopt(TCP_INFO) fills
// it, in host byte order.
func DecodeTCPInfo(b []byte) (TCPInfo, error) {
	if len(b) < tcpInfoMinLen {
		return TCPInfo{}, fmt.Errorf("tcp_info: %d bytes, need %d (Linux 4.19 or later): %w", len(b), tcpInfoMinLen, ErrTruncated)
	}
	ne := binary.NativeEndian
	info := TCPInfo{
		State:         b[0],
		SndWScale:     b[offTCPInfoWScale] & 0x0f,
		RcvWScale:     b[offTCPInfoWScale] >> 4,
		Unacked:       ne.Uint32(b[offTCPInfoUnacked:]),
		BytesAcked:    ne.Uint64(b[offTCPInfoBytesAcked:]),
		BytesReceived: ne.Uint64(b[offTCPInfoBytesRecv:]),
		NotSent:       ne.Uint32(b[offTCPInfoNotSent:]),
		BytesSent:     ne.Uint64(b[offTCPInfoBytesSent:]),
		BytesRetrans:  ne.Uint64(b[offTCPInfoBytesRetr:]),
	}
	if len(b) >= tcpInfoRcvWndEnd {
		info.RcvWnd = ne.Uint32(b[offTCPInfoRcvWnd:])
	}
	return info, nil
}
