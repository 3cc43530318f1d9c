package probe

import "net/netip"

// ReferenceQuote is the quote an untouched probe produces at the hop where
// it expires (TTL 1 as Linux quotes it), decoded as a real quote is: the
// localisation compares the two field by field through the same decoder,
// so equal fields compare equal. proto is the IP protocol number.
func ReferenceQuote(src, dst netip.Addr, proto int, ipid uint16, df bool, transport []byte) (*Quoted, error) {
	if dst.Is4() {
		pkt, err := BuildIPv4(src, dst, proto, 1, ipid, df, transport)
		if err != nil {
			return nil, err
		}
		return decodeQuotedIPv4(pkt)
	}
	h := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(transport))
	h[0] = 6 << 4
	h[4], h[5] = byte(len(transport)>>8), byte(len(transport))
	h[6], h[7] = byte(proto), 1
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return decodeQuotedIPv6(append(h, transport...))
}
