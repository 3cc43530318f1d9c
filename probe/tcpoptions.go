package probe

import "fmt"

// DecodeTCPOptionKinds lists the kinds of the TCP options in b (the bytes
// between the fixed header and the data offset), in order, NOPs included;
// an EOL is listed and ends the list. Unlike the lenient parse of
// DecodeTCPSegment it fails on an option whose length is impossible
// (ErrMalformed) or runs past b (ErrTruncated): the layout is evidence, so
// a broken one must not look like a shorter valid one.
func DecodeTCPOptionKinds(b []byte) ([]uint8, error) {
	var kinds []uint8
	for i := 0; i < len(b); {
		kind := b[i]
		kinds = append(kinds, kind)
		switch kind {
		case tcpOptEOL:
			return kinds, nil
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(b) {
			return nil, fmt.Errorf("tcp option %d at %d: no length byte: %w", kind, i, ErrTruncated)
		}
		n := int(b[i+1])
		if n < 2 {
			return nil, fmt.Errorf("tcp option %d at %d: length %d below 2: %w", kind, i, n, ErrMalformed)
		}
		if i+n > len(b) {
			return nil, fmt.Errorf("tcp option %d at %d: length %d, %d bytes left: %w", kind, i, n, len(b)-i, ErrTruncated)
		}
		i += n
	}
	return kinds, nil
}
