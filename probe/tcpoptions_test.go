package probe

import (
	"errors"
	"slices"
	"testing"
)

func TestDecodeTCPOptionKinds(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want []uint8
		err  error
	}{
		{"linux syn", "020405b40402080a0102030400000000 01030307", []uint8{2, 4, 8, 1, 3}, nil},
		{"sack replaced by nops", "020405b40101080a0102030400000000 01030307", []uint8{2, 1, 1, 8, 1, 3}, nil},
		{"empty", "", nil, nil},
		{"eol ends", "0101000204", []uint8{1, 1, 0}, nil},
		{"unknown kind", "fe0400000101", []uint8{254, 1, 1}, nil},
		{"no length byte", "0101 02", nil, ErrTruncated},
		{"length below 2", "0201", nil, ErrMalformed},
		{"length zero", "0800", nil, ErrMalformed},
		{"runs past the end", "080a01020304", nil, ErrTruncated},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeTCPOptionKinds(fx(c.in))
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("kinds %v, want %v", got, c.want)
			}
		})
	}
}

func FuzzDecodeTCPOptionKinds(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		kinds, err := DecodeTCPOptionKinds(in)
		if err != nil {
			if kinds != nil || !decodeErrorKnown(err) {
				t.Fatalf("error %v with %v", err, kinds)
			}
			return
		}
		if len(kinds) > len(in) {
			t.Fatalf("%d kinds from %d bytes", len(kinds), len(in))
		}
		for i, k := range kinds {
			if k != in[optionOffset(in, i)] {
				t.Fatalf("kind %d is %d, byte says %d", i, k, in[optionOffset(in, i)])
			}
			if k == tcpOptEOL && i != len(kinds)-1 {
				t.Fatalf("kinds after EOL: %v", kinds)
			}
		}
	})
}

// optionOffset is the offset of option i in a valid option list.
func optionOffset(b []byte, i int) int {
	off := 0
	for ; i > 0; i-- {
		if b[off] == tcpOptNOP {
			off++
		} else {
			off += int(b[off+1])
		}
	}
	return off
}
