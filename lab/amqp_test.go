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

// Client frames as a RabbitMQ client library sends them, assembled by hand.
var (
	// Start-Ok: empty client-properties, PLAIN, response "\0tok\0", en_US.
	fixtureStartOk = []byte{
		1, 0, 0, 0, 0, 0, 29,
		0, 10, 0, 11,
		0, 0, 0, 0,
		5, 'P', 'L', 'A', 'I', 'N',
		0, 0, 0, 5, 0, 't', 'o', 'k', 0,
		5, 'e', 'n', '_', 'U', 'S',
		0xCE,
	}
	// Tune-Ok: channel-max 2047, frame-max 131072, heartbeat 0.
	fixtureTuneOk = []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xff, 0, 2, 0, 0, 0, 0, 0xCE}
	// Open: vhost "/lab", empty reserved short string, reserved bit 0.
	fixtureOpen = []byte{1, 0, 0, 0, 0, 0, 11, 0, 10, 0, 40, 4, '/', 'l', 'a', 'b', 0, 0, 0xCE}
)

func TestDecodeAMQPFrame(t *testing.T) {
	heartbeat := []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		payload int
		n       int
		wantErr error
	}{
		{"heartbeat", heartbeat, 8, 0, 8, nil},
		{"tune-ok then more", append(bytes.Clone(fixtureTuneOk), heartbeat...), 1, 12, len(fixtureTuneOk), nil},
		{"header only", heartbeat[:7], 0, 0, 0, ErrAMQPShort},
		{"empty", nil, 0, 0, 0, ErrAMQPShort},
		{"protocol header", AMQPHeader[:], 0, 0, 0, ErrAMQPProtocolHeader},
		{"bad end", []byte{8, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, ErrAMQPFrameEnd},
		{"huge", []byte{3, 0, 1, 0x7f, 0xff, 0xff, 0xff}, 0, 0, 0, ErrAMQPFrameSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr, n, err := DecodeAMQPFrame(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || fr.Type != tc.typ || len(fr.Payload) != tc.payload || n != tc.n {
				t.Fatalf("got %+v, %d, %v", fr, n, err)
			}
		})
	}
}

func payloadOf(t *testing.T, frame []byte) []byte {
	t.Helper()
	fr, _, err := DecodeAMQPFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	return fr.Payload
}

func TestDecodeClientMethods(t *testing.T) {
	so, err := DecodeStartOk(payloadOf(t, fixtureStartOk))
	if err != nil || so.Mechanism != "PLAIN" || so.Response != "\x00tok\x00" || so.Locale != "en_US" || len(so.ClientProperties) != 0 {
		t.Fatalf("start-ok %+v %v", so, err)
	}
	tune, err := DecodeTuneOk(payloadOf(t, fixtureTuneOk))
	if err != nil || tune != (Tune{ChannelMax: 2047, FrameMax: 131072}) {
		t.Fatalf("tune-ok %+v %v", tune, err)
	}
	vhost, err := DecodeOpen(payloadOf(t, fixtureOpen))
	if err != nil || vhost != "/lab" {
		t.Fatalf("open %q %v", vhost, err)
	}
	// Each decoder refuses the others' frames and truncated arguments.
	if _, err := DecodeStartOk(payloadOf(t, fixtureTuneOk)); !errors.Is(err, ErrAMQPUnexpectedMethod) {
		t.Errorf("start-ok of a tune-ok: %v", err)
	}
	if _, err := DecodeTuneOk(payloadOf(t, fixtureOpen)); !errors.Is(err, ErrAMQPUnexpectedMethod) {
		t.Errorf("tune-ok of an open: %v", err)
	}
	if _, err := DecodeOpen(payloadOf(t, fixtureOpen)[:6]); !errors.Is(err, ErrAMQPShort) {
		t.Errorf("truncated open: %v", err)
	}
	if _, err := DecodeTuneOk(append(payloadOf(t, fixtureTuneOk), 9)); !errors.Is(err, ErrAMQPTrailing) {
		t.Errorf("tune-ok with a trailing byte: %v", err)
	}
	if _, err := DecodeOpen([]byte{0, 10}); !errors.Is(err, ErrAMQPShort) {
		t.Errorf("two-byte payload: %v", err)
	}
}

func TestEncodeBrokerMethods(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"tune", EncodeTune(Tune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}),
			[]byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60, 0xCE}},
		{"open-ok", EncodeOpenOk(), []byte{1, 0, 0, 0, 0, 0, 5, 0, 10, 0, 41, 0, 0xCE}},
		{"close", EncodeClose(403, "NO", 10, 11), []byte{1, 0, 0, 0, 0, 0, 13, 0, 10, 0, 50, 1, 0x93, 2, 'N', 'O', 0, 10, 0, 11, 0xCE}},
		{"close-ok", EncodeCloseOk(), []byte{1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE}},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s:\ngot  % x\nwant % x", tc.name, tc.got, tc.want)
		}
	}
}

// The fuzz targets: decoding never panics and never consumes more than it
// was given.
func FuzzDecodeAMQPFrame(f *testing.F) {
	for _, s := range [][]byte{fixtureStartOk, fixtureTuneOk, fixtureOpen, {8, 0, 0, 0, 0, 0, 0, 0xCE}, AMQPHeader[:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := DecodeAMQPFrame(b)
		if err == nil && (n > len(b) || n != len(fr.Payload)+8) {
			t.Fatalf("consumed %d of %d bytes, payload %d", n, len(b), len(fr.Payload))
		}
	})
}

func fuzzPayloads(f *testing.F) {
	for _, s := range [][]byte{fixtureStartOk, fixtureTuneOk, fixtureOpen} {
		f.Add(s[7 : len(s)-1])
	}
	f.Add([]byte{0, 10})
}

func FuzzDecodeStartOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = DecodeStartOk(b) })
}

func FuzzDecodeTuneOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		tune, err := DecodeTuneOk(b)
		if err == nil && len(b) != 12 {
			t.Fatalf("decoded %+v from %d bytes", tune, len(b))
		}
	})
}

func FuzzDecodeOpen(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		vhost, err := DecodeOpen(b)
		if err == nil && len(vhost) > len(b) {
			t.Fatalf("vhost %q longer than the payload", vhost)
		}
	})
}
