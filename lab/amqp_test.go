package lab

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// minimalStart is a hand-assembled Connection.Start: version 0-9, empty
// server-properties, mechanisms "PLAIN", locales "en_US".
var minimalStart = []byte{
	1, 0, 0, 0, 0, 0, 28, // method frame, channel 0, payload 28
	0, 10, 0, 10, // connection.start
	0, 9, // version 0-9
	0, 0, 0, 0, // empty table
	0, 0, 0, 5, 'P', 'L', 'A', 'I', 'N',
	0, 0, 0, 5, 'e', 'n', '_', 'U', 'S',
	0xCE,
}

func TestEncodeConnectionStartMinimal(t *testing.T) {
	got, err := EncodeConnectionStart(ConnectionStart{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN", Locales: "en_US"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, minimalStart) {
		t.Fatalf("got  % x\nwant % x", got, minimalStart)
	}
}

func TestEncodeConnectionStartTable(t *testing.T) {
	got, err := EncodeConnectionStart(ConnectionStart{
		VersionMinor:     9,
		ServerProperties: []AMQPField{{"p", "x"}, {"c", []AMQPField{{"b", true}}}, {"n", int64(-2)}},
		Mechanisms:       "PLAIN", Locales: "en_US",
	})
	if err != nil {
		t.Fatal(err)
	}
	table := []byte{
		0, 0, 0, 30,
		1, 'p', 'S', 0, 0, 0, 1, 'x', // 8
		1, 'c', 'F', 0, 0, 0, 4, 1, 'b', 't', 1, // 11
		1, 'n', 'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, // 11
	}
	if !bytes.Contains(got, table) {
		t.Fatalf("table not found in % x", got)
	}
	if got[0] != 1 || got[len(got)-1] != 0xCE || int(got[6])+8 != len(got) {
		t.Fatalf("framing wrong: % x", got)
	}
}

func TestEncodeRejectsUnknownValue(t *testing.T) {
	_, err := EncodeConnectionStart(ConnectionStart{ServerProperties: []AMQPField{{"f", 1.5}}})
	if !errors.Is(err, errAMQPValueNotEncoded) {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeConnectionStart(t *testing.T) {
	lab, err := EncodeConnectionStart(LabConnectionStart())
	if err != nil {
		t.Fatal(err)
	}
	badEnd := bytes.Clone(minimalStart)
	badEnd[len(badEnd)-1] = 0
	notStart := bytes.Clone(minimalStart)
	notStart[10] = 11 // connection.start-ok
	heartbeat := []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}
	rabbitShort := []byte{
		1, 0, 0, 0, 0, 0, 38,
		0, 10, 0, 10, 0, 9,
		0, 0, 0, 10, 1, 'v', 's', 3, '3', '.', '9', 1, 'x', 'V', // 's' short string and 'V' void
		0, 0, 0, 5, 'P', 'L', 'A', 'I', 'N',
		0, 0, 0, 5, 'e', 'n', '_', 'U', 'S',
		0xCE,
	}
	deep := []byte{1, 0, 0, 0, 0, 0, 0}
	payload := []byte{0, 10, 0, 10, 0, 9}
	nested := []byte{}
	for range 12 {
		nested = append([]byte{0, 0, 0, byte(len(nested) + 3), 1, 'a', 'F'}, nested...)
	}
	nested = append(nested, 0, 0, 0, 0) // innermost empty table, lengths are wrong on purpose
	payload = append(payload, nested...)
	deep[6] = byte(len(payload))
	deep = append(append(deep, payload...), 0xCE)

	tests := []struct {
		name    string
		in      []byte
		want    *ConnectionStart
		n       int
		wantErr error
	}{
		{"minimal", minimalStart, &ConnectionStart{VersionMinor: 9, ServerProperties: []AMQPField{}, Mechanisms: "PLAIN", Locales: "en_US"}, len(minimalStart), nil},
		{"minimal with trailing frame", append(bytes.Clone(minimalStart), heartbeat...), &ConnectionStart{VersionMinor: 9, ServerProperties: []AMQPField{}, Mechanisms: "PLAIN", Locales: "en_US"}, len(minimalStart), nil},
		{"lab", lab, ptr(LabConnectionStart()), len(lab), nil},
		{"rabbit short string and void", rabbitShort, &ConnectionStart{VersionMinor: 9, ServerProperties: []AMQPField{{"v", "3.9"}, {"x", nil}}, Mechanisms: "PLAIN", Locales: "en_US"}, len(rabbitShort), nil},
		{"empty", nil, nil, 0, ErrAMQPShort},
		{"protocol header", AMQPHeader[:], nil, 0, ErrAMQPProtocolHeader},
		{"truncated", minimalStart[:20], nil, 0, ErrAMQPShort},
		{"bad frame end", badEnd, nil, 0, ErrAMQPFrameEnd},
		{"heartbeat", heartbeat, nil, 0, ErrAMQPNotMethod},
		{"start-ok", notStart, nil, 0, ErrAMQPNotStart},
		{"nesting bomb", deep, nil, 0, ErrAMQPTable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := DecodeConnectionStart(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.n || !reflect.DeepEqual(got, *tc.want) {
				t.Fatalf("got %+v (%d bytes), want %+v (%d bytes)", got, n, *tc.want, tc.n)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// FuzzDecodeConnectionStart: decoding never panics, and whatever decodes
// re-encodes to a frame that decodes to the same value.
func FuzzDecodeConnectionStart(f *testing.F) {
	f.Add(minimalStart)
	if lab, err := EncodeConnectionStart(LabConnectionStart()); err == nil {
		f.Add(lab)
	}
	f.Add(AMQPHeader[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, n, err := DecodeConnectionStart(b)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if hasVoid(cs.ServerProperties) {
			return // void values are decoded but never encoded
		}
		again, err := EncodeConnectionStart(cs)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", cs, err)
		}
		cs2, _, err := DecodeConnectionStart(again)
		if err != nil || !reflect.DeepEqual(cs, cs2) {
			t.Fatalf("round trip: %+v -> %+v (%v)", cs, cs2, err)
		}
	})
}

func hasVoid(fields []AMQPField) bool {
	for _, f := range fields {
		switch v := f.Value.(type) {
		case nil:
			return true
		case []AMQPField:
			if hasVoid(v) {
				return true
			}
		}
	}
	return false
}
