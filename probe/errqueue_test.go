package probe

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// cmsg builds one 64-bit Linux control message.
func cmsg(level, typ int32, data []byte) []byte {
	l := 16 + len(data)
	b := make([]byte, (l+7)&^7)
	binary.LittleEndian.PutUint64(b[0:8], uint64(l))
	binary.LittleEndian.PutUint32(b[8:12], uint32(level))
	binary.LittleEndian.PutUint32(b[12:16], uint32(typ))
	copy(b[16:], data)
	return b
}

// extErr4 is a sock_extended_err followed by a sockaddr_in offender.
func extErr4(errno uint32, origin, typ, code uint8, info uint32, from [4]byte) []byte {
	b := make([]byte, 16+16)
	binary.LittleEndian.PutUint32(b[0:4], errno)
	b[4], b[5], b[6] = origin, typ, code
	binary.LittleEndian.PutUint32(b[8:12], info)
	binary.LittleEndian.PutUint16(b[16:18], 2) // AF_INET
	copy(b[20:24], from[:])
	return b
}

func extErr6(origin, typ, code uint8, info uint32, from [16]byte) []byte {
	b := make([]byte, 16+28)
	b[4], b[5], b[6] = origin, typ, code
	binary.LittleEndian.PutUint32(b[8:12], info)
	binary.LittleEndian.PutUint16(b[16:18], 10) // AF_INET6
	copy(b[24:40], from[:])
	return b
}

func ttlData(v int32) []byte {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, uint32(v))
	return b
}

func TestDecodeErrQueue(t *testing.T) {
	r3 := netip.MustParseAddr("198.18.2.2")
	r6 := netip.MustParseAddr("2001:db8:0:2::2")
	cases := []struct {
		name     string
		oob      []byte
		wantErr  bool
		kind     ReplyKind
		from     netip.Addr
		replyTTL int
		mtu      int
	}{
		{
			name: "v4 time exceeded with TTL",
			oob: append(cmsg(solIP, ipTTL, ttlData(62)),
				cmsg(solIP, ipRecvErr, extErr4(113, soEEOriginICMP, 11, 0, 0, r3.As4()))...),
			kind: KindTimeExceeded, from: r3, replyTTL: 62,
		},
		{
			name: "v4 port unreachable, no TTL",
			oob:  cmsg(solIP, ipRecvErr, extErr4(111, soEEOriginICMP, 3, 3, 0, r3.As4())),
			kind: KindDestUnreachable, from: r3, replyTTL: -1,
		},
		{
			name: "v4 frag needed carries the MTU in ee_info",
			oob:  cmsg(solIP, ipRecvErr, extErr4(90, soEEOriginICMP, 3, 4, 1280, r3.As4())),
			kind: KindDestUnreachable, from: r3, replyTTL: -1, mtu: 1280,
		},
		{
			name: "v6 time exceeded with hop limit",
			oob: append(cmsg(solIPv6, ipv6RecvEr, extErr6(soEEOriginICMP6, 3, 0, 0, r6.As16())),
				cmsg(solIPv6, ipv6HopLim, ttlData(61))...),
			kind: KindTimeExceeded, from: r6, replyTTL: 61,
		},
		{
			name: "v6 packet too big",
			oob:  cmsg(solIPv6, ipv6RecvEr, extErr6(soEEOriginICMP6, 2, 0, 1280, r6.As16())),
			kind: KindPacketTooBig, from: r6, replyTTL: -1, mtu: 1280,
		},
		{name: "only a TTL message", oob: cmsg(solIP, ipTTL, ttlData(64)), wantErr: true},
		{name: "empty", oob: nil, wantErr: true},
		{name: "truncated extended error", oob: cmsg(solIP, ipRecvErr, []byte{1, 2, 3}), wantErr: true},
		{name: "length beyond buffer", oob: []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := DecodeErrQueue(c.oob)
			if c.wantErr {
				if err == nil {
					t.Fatalf("want error, got %+v", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := responseFromErrQueue(e)
			if r.Kind != c.kind || r.From != c.from || r.ReplyTTL != c.replyTTL || r.MTU != c.mtu {
				t.Fatalf("got kind %s from %s ttl %d mtu %d; want %s %s %d %d", r.Kind, r.From, r.ReplyTTL, r.MTU, c.kind, c.from, c.replyTTL, c.mtu)
			}
		})
	}
}

func FuzzDecodeErrQueue(f *testing.F) {
	f.Add(cmsg(solIP, ipRecvErr, extErr4(113, soEEOriginICMP, 11, 0, 0, [4]byte{198, 18, 0, 2})))
	f.Add(append(cmsg(solIPv6, ipv6RecvEr, extErr6(soEEOriginICMP6, 3, 0, 0, [16]byte{0x20, 1, 0xd, 0xb8})), cmsg(solIPv6, ipv6HopLim, ttlData(61))...))
	f.Fuzz(func(t *testing.T, oob []byte) {
		e, err := DecodeErrQueue(oob)
		if err != nil {
			return
		}
		r := responseFromErrQueue(e)
		if r.MTU < 0 {
			t.Fatalf("negative MTU %d", r.MTU)
		}
	})
}
