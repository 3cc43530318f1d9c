package amqp

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Frames assembled by hand, as RabbitMQ and its client libraries send them.
var (
	// Connection.Start: version 0-9, empty server-properties, mechanisms
	// "PLAIN", locales "en_US".
	fixtureStart = []byte{
		1, 0, 0, 0, 0, 0, 28, // method frame, channel 0, payload 28
		0, 10, 0, 10, // connection.start
		0, 9, // version 0-9
		0, 0, 0, 0, // empty table
		0, 0, 0, 5, 'P', 'L', 'A', 'I', 'N',
		0, 0, 0, 5, 'e', 'n', '_', 'U', 'S',
		0xCE,
	}
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
	// Tune: channel-max 2047, frame-max 131072, heartbeat 60.
	fixtureTune = []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60, 0xCE}
	// Tune-Ok: channel-max 2047, frame-max 131072, heartbeat 0.
	fixtureTuneOk = []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xff, 0, 2, 0, 0, 0, 0, 0xCE}
	// Open: vhost "/lab", empty reserved short string, reserved bit 0.
	fixtureOpen = []byte{1, 0, 0, 0, 0, 0, 11, 0, 10, 0, 40, 4, '/', 'l', 'a', 'b', 0, 0, 0xCE}
	// Open-Ok: one empty reserved short string.
	fixtureOpenOk = []byte{1, 0, 0, 0, 0, 0, 5, 0, 10, 0, 41, 0, 0xCE}
	// Close: 403 ACCESS_REFUSED caused by Start-Ok (10 11).
	fixtureClose403  = []byte{1, 0, 0, 0, 0, 0, 25, 0, 10, 0, 50, 1, 0x93, 14, 'A', 'C', 'C', 'E', 'S', 'S', '_', 'R', 'E', 'F', 'U', 'S', 'E', 'D', 0, 10, 0, 11, 0xCE}
	fixtureCloseOk   = []byte{1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE}
	fixtureHeartbeat = []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}
)

// payloadOf is a frame's payload; argsOf its method arguments.
func payloadOf(t testing.TB, frame []byte) []byte {
	t.Helper()
	fr, _, err := DecodeFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	return fr.Payload
}

func argsOf(t testing.TB, frame []byte) []byte { return payloadOf(t, frame)[4:] }

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		payload int
		n       int
		wantErr error
	}{
		{"heartbeat", fixtureHeartbeat, 8, 0, 8, nil},
		{"tune", fixtureTune, 1, 12, len(fixtureTune), nil},
		{"tune-ok then more", append(bytes.Clone(fixtureTuneOk), fixtureHeartbeat...), 1, 12, len(fixtureTuneOk), nil},
		{"heartbeat then tune", append(bytes.Clone(fixtureHeartbeat), fixtureTune...), 8, 0, 8, nil},
		{"header only", fixtureHeartbeat[:7], 0, 0, 0, ErrShort},
		{"partial header", fixtureTune[:5], 0, 0, 0, ErrShort},
		{"partial payload", fixtureTune[:19], 0, 0, 0, ErrShort},
		{"empty", nil, 0, 0, 0, ErrShort},
		{"protocol header", []byte(ProtocolHeader), 0, 0, 0, ErrProtocolHeader},
		{"bad end", []byte{8, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, ErrFrameEnd},
		{"bad end after a payload", append(bytes.Clone(fixtureTune[:19]), 0), 0, 0, 0, ErrFrameEnd},
		{"huge", []byte{3, 0, 1, 0x7f, 0xff, 0xff, 0xff}, 0, 0, 0, ErrFrameSize},
		{"just over the limit", []byte{1, 0, 0, 0, 0x10, 0, 1}, 0, 0, 0, ErrFrameSize},
		{"at the limit, incomplete", []byte{1, 0, 0, 0, 0x10, 0, 0}, 0, 0, 0, ErrShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr, n, err := DecodeFrame(tc.in)
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

func TestEncodeFrame(t *testing.T) {
	if got := EncodeFrame(Frame{Type: FrameHeartbeat}); !bytes.Equal(got, fixtureHeartbeat) {
		t.Errorf("heartbeat % x", got)
	}
	if got := EncodeFrame(Frame{Type: FrameMethod, Payload: payloadOf(t, fixtureTune)}); !bytes.Equal(got, fixtureTune) {
		t.Errorf("tune % x", got)
	}
	if got := EncodeFrame(Frame{Type: FrameBody, Channel: 0x0102, Payload: []byte{9}}); !bytes.Equal(got, []byte{3, 1, 2, 0, 0, 0, 1, 9, 0xCE}) {
		t.Errorf("body % x", got)
	}
}

func TestMethodOf(t *testing.T) {
	if c, m, err := MethodOf(payloadOf(t, fixtureClose403)); err != nil || c != 10 || m != 50 {
		t.Errorf("close: %d %d %v", c, m, err)
	}
	if _, _, err := MethodOf([]byte{0, 10}); !errors.Is(err, ErrShort) {
		t.Errorf("two-byte payload: %v", err)
	}
}

func TestEncodeStart(t *testing.T) {
	got, err := EncodeStart(Start{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN", Locales: "en_US"})
	if err != nil || !bytes.Equal(got, fixtureStart) {
		t.Fatalf("got  % x (%v)\nwant % x", got, err, fixtureStart)
	}
	got, err = EncodeStart(Start{
		VersionMinor:     9,
		ServerProperties: []Field{{"p", "x"}, {"c", []Field{{"b", true}}}, {"n", int64(-2)}},
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
	if _, err := EncodeStart(Start{ServerProperties: []Field{{"f", 1.5}}}); !errors.Is(err, ErrValueNotEncoded) {
		t.Errorf("float: %v", err)
	}
	if _, err := EncodeStartOk(StartOk{ClientProperties: []Field{{"t", []Field{{strings.Repeat("n", 256), true}}}}}); !errors.Is(err, ErrValueNotEncoded) {
		t.Errorf("long name in a nested table: %v", err)
	}
}

// serverProperties is a Connection.Start's table as a broker sends it.
var serverProperties = []Field{
	{"product", "hopcheck lab"},
	{"platform", "Go"},
	{"capabilities", []Field{{"authentication_failure_close", true}}},
}

func TestCapability(t *testing.T) {
	props := []Field{
		{"product", "RabbitMQ"},
		{"capabilities", []Field{{"basic.nack", true}, {"authentication_failure_close", true}, {"connection.blocked", false}, {"odd", "true"}}},
	}
	tests := []struct {
		props []Field
		name  string
		want  bool
	}{
		{props, "authentication_failure_close", true},
		{props, "basic.nack", true},
		{props, "connection.blocked", false}, // announced as false
		{props, "odd", false},                // not a bool
		{props, "direct_reply_to", false},    // not announced
		{props, "product", false},            // a property, not a capability
		{[]Field{{"capabilities", "x"}}, "x", false},
		{nil, "authentication_failure_close", false},
	}
	for _, tc := range tests {
		if got := Capability(tc.props, tc.name); got != tc.want {
			t.Errorf("Capability(%v, %q) = %v, want %v", tc.props, tc.name, got, tc.want)
		}
	}
}

func TestDecodeStart(t *testing.T) {
	withProps, err := EncodeStart(Start{VersionMinor: 9, ServerProperties: serverProperties, Mechanisms: "PLAIN", Locales: "en_US"})
	if err != nil {
		t.Fatal(err)
	}
	rabbitShort := []byte{
		1, 0, 0, 0, 0, 0, 38,
		0, 10, 0, 10, 0, 9,
		0, 0, 0, 10, 1, 'v', 's', 3, '3', '.', '9', 1, 'x', 'V', // 's' short string and 'V' void
		0, 0, 0, 5, 'P', 'L', 'A', 'I', 'N',
		0, 0, 0, 5, 'e', 'n', '_', 'U', 'S',
		0xCE,
	}
	numbers := []byte{0, 10, 0, 10, 0, 9,
		0, 0, 0, 29,
		1, 'a', 'b', 0xff, // -1
		1, 'b', 'B', 0xff, // 255
		1, 'c', 'U', 0xff, 0xfe, // -2
		1, 'd', 'u', 0xff, 0xfe, // 65534
		1, 'e', 'I', 0xff, 0xff, 0xff, 0xfd, // -3
		1, 'f', 't', 0,
		0, 0, 0, 0, 0, 0, 0, 0,
	}
	nested := []byte{}
	for range 12 {
		nested = append([]byte{0, 0, 0, byte(len(nested) + 3), 1, 'a', 'F'}, nested...)
	}
	nested = append(nested, 0, 0, 0, 0) // innermost empty table, lengths are wrong on purpose
	deep := append([]byte{0, 10, 0, 10, 0, 9}, nested...)
	minimal := Start{VersionMinor: 9, ServerProperties: []Field{}, Mechanisms: "PLAIN", Locales: "en_US"}

	tests := []struct {
		name    string
		in      []byte // payload
		want    Start
		wantErr error
	}{
		{"minimal", payloadOf(t, fixtureStart), minimal, nil},
		{"server properties", payloadOf(t, withProps), Start{VersionMinor: 9, ServerProperties: serverProperties, Mechanisms: "PLAIN", Locales: "en_US"}, nil},
		{"rabbit short string and void", payloadOf(t, rabbitShort), Start{VersionMinor: 9, ServerProperties: []Field{{"v", "3.9"}, {"x", nil}}, Mechanisms: "PLAIN", Locales: "en_US"}, nil},
		{"numbers", numbers, Start{VersionMinor: 9, ServerProperties: []Field{{"a", int64(-1)}, {"b", int64(255)}, {"c", int64(-2)}, {"d", int64(65534)}, {"e", int64(-3)}, {"f", false}}}, nil},
		{"truncated", payloadOf(t, fixtureStart)[:12], Start{}, ErrShort},
		{"trailing", append(bytes.Clone(payloadOf(t, fixtureStart)), 0), Start{}, ErrTrailing},
		{"start-ok", payloadOf(t, fixtureStartOk), Start{}, ErrUnexpectedMethod},
		{"method id only", []byte{0, 10}, Start{}, ErrShort},
		{"unknown field type", []byte{0, 10, 0, 10, 0, 9, 0, 0, 0, 3, 1, 'f', 'x', 0, 0, 0, 0, 0, 0, 0, 0}, Start{}, ErrTable},
		{"long string over the limit", []byte{0, 10, 0, 10, 0, 9, 0, 0, 0, 0, 0x80, 0, 0, 0}, Start{}, ErrTable},
		{"nesting bomb", deep, Start{}, ErrTable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeStart(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v (%v), want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeMethods(t *testing.T) {
	so, err := DecodeStartOk(payloadOf(t, fixtureStartOk))
	if err != nil || !reflect.DeepEqual(so, StartOk{ClientProperties: []Field{}, Mechanism: "PLAIN", Response: "\x00tok\x00", Locale: "en_US"}) {
		t.Errorf("start-ok %+v %v", so, err)
	}
	if tune, err := DecodeTune(payloadOf(t, fixtureTune)); err != nil || tune != (Tune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}) {
		t.Errorf("tune %+v %v", tune, err)
	}
	if tune, err := DecodeTuneOk(payloadOf(t, fixtureTuneOk)); err != nil || tune != (Tune{ChannelMax: 2047, FrameMax: 131072}) {
		t.Errorf("tune-ok %+v %v", tune, err)
	}
	if vhost, err := DecodeOpen(payloadOf(t, fixtureOpen)); err != nil || vhost != "/lab" {
		t.Errorf("open %q %v", vhost, err)
	}
	if err := DecodeOpenOk(payloadOf(t, fixtureOpenOk)); err != nil {
		t.Errorf("open-ok %v", err)
	}
	if c, err := DecodeClose(payloadOf(t, fixtureClose403)); err != nil || c != (Close{Code: 403, Text: "ACCESS_REFUSED", Class: 10, Method: 11}) {
		t.Errorf("close %+v %v", c, err)
	}
	if err := DecodeCloseOk(payloadOf(t, fixtureCloseOk)); err != nil {
		t.Errorf("close-ok %v", err)
	}
}

// Each decoder refuses the others' frames, truncated arguments and bytes
// after them.
func TestDecodeMethodsRefuse(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"start":    func(b []byte) error { _, err := DecodeStart(b); return err },
		"start-ok": func(b []byte) error { _, err := DecodeStartOk(b); return err },
		"tune":     func(b []byte) error { _, err := DecodeTune(b); return err },
		"tune-ok":  func(b []byte) error { _, err := DecodeTuneOk(b); return err },
		"open":     func(b []byte) error { _, err := DecodeOpen(b); return err },
		"open-ok":  DecodeOpenOk,
		"close":    func(b []byte) error { _, err := DecodeClose(b); return err },
		"close-ok": DecodeCloseOk,
	}
	frames := map[string][]byte{
		"start": fixtureStart, "start-ok": fixtureStartOk, "tune": fixtureTune, "tune-ok": fixtureTuneOk,
		"open": fixtureOpen, "open-ok": fixtureOpenOk, "close": fixtureClose403, "close-ok": fixtureCloseOk,
	}
	for name, decode := range decoders {
		for other, frame := range frames {
			if other != name {
				if err := decode(payloadOf(t, frame)); !errors.Is(err, ErrUnexpectedMethod) {
					t.Errorf("%s of a %s: %v", name, other, err)
				}
			}
		}
		own := payloadOf(t, frames[name])
		if err := decode(append(bytes.Clone(own), 9)); !errors.Is(err, ErrTrailing) {
			t.Errorf("%s with a trailing byte: %v", name, err)
		}
		if len(own) > 4 {
			if err := decode(own[:len(own)-1]); !errors.Is(err, ErrShort) {
				t.Errorf("%s truncated: %v", name, err)
			}
		}
		if err := decode([]byte{0, 10}); !errors.Is(err, ErrShort) {
			t.Errorf("%s of a two-byte payload: %v", name, err)
		}
	}
	// Connection.Close's text longer than the arguments.
	if _, err := DecodeClose([]byte{0, 10, 0, 50, 1, 0x93, 40, 'A'}); !errors.Is(err, ErrShort) {
		t.Errorf("close text overrun: %v", err)
	}
}

func TestEncodeMethods(t *testing.T) {
	startOk, err := EncodeStartOk(StartOk{Mechanism: "PLAIN", Response: "\x00tok\x00", Locale: "en_US"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"start-ok", startOk, fixtureStartOk},
		{"tune", EncodeTune(Tune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}), fixtureTune},
		{"tune-ok", EncodeTuneOk(Tune{ChannelMax: 2047, FrameMax: 131072}), fixtureTuneOk},
		{"open", EncodeOpen("/lab"), fixtureOpen},
		{"open-ok", EncodeOpenOk(), fixtureOpenOk},
		{"close", EncodeClose(Close{Code: 403, Text: "NO", Class: 10, Method: 11}), []byte{1, 0, 0, 0, 0, 0, 13, 0, 10, 0, 50, 1, 0x93, 2, 'N', 'O', 0, 10, 0, 11, 0xCE}},
		{"close 403", EncodeClose(Close{Code: 403, Text: "ACCESS_REFUSED", Class: 10, Method: 11}), fixtureClose403},
		{"close-ok", EncodeCloseOk(), fixtureCloseOk},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s:\ngot  % x\nwant % x", tc.name, tc.got, tc.want)
		}
	}
	// A short string is cut at 255 bytes, never a wrong length octet.
	long := strings.Repeat("x", 300)
	if c, err := DecodeClose(payloadOf(t, EncodeClose(Close{Code: 501, Text: long}))); err != nil || c.Text != long[:255] {
		t.Errorf("long close text: %d bytes, %v", len(c.Text), err)
	}
	if vhost, err := DecodeOpen(payloadOf(t, EncodeOpen(long))); err != nil || vhost != long[:255] {
		t.Errorf("long vhost: %d bytes, %v", len(vhost), err)
	}
}

func TestRoundTripStartOk(t *testing.T) {
	in := StartOk{
		ClientProperties: []Field{{"product", "hopcheck"}, {"n", int64(1)}, {"caps", []Field{{"b", false}}}},
		Mechanism:        "PLAIN", Response: "\x00u\x00p", Locale: "en_US",
	}
	frame, err := EncodeStartOk(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeStartOk(payloadOf(t, frame))
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("got %+v (%v), want %+v", got, err, in)
	}
}

// The fuzz targets: decoding never panics, never reads past its input,
// and what decodes re-encodes to the same value.

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range [][]byte{fixtureStart, fixtureStartOk, fixtureTune, fixtureTuneOk, fixtureOpen, fixtureOpenOk,
		fixtureClose403, fixtureCloseOk, fixtureHeartbeat, []byte(ProtocolHeader)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if n > len(b) || n != len(fr.Payload)+8 {
			t.Fatalf("consumed %d of %d bytes, payload %d", n, len(b), len(fr.Payload))
		}
		if again := EncodeFrame(fr); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded % x, was % x", again, b[:n])
		}
	})
}

// FuzzDecodeStart takes a whole frame, as a broker's first bytes are.
func FuzzDecodeStart(f *testing.F) {
	f.Add(fixtureStart)
	if withProps, err := EncodeStart(Start{VersionMinor: 9, ServerProperties: serverProperties}); err == nil {
		f.Add(withProps)
	}
	f.Add([]byte(ProtocolHeader))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, _, err := DecodeFrame(b)
		if err != nil {
			return
		}
		s, err := DecodeStart(fr.Payload)
		if err != nil || hasVoid(s.ServerProperties) {
			return // void values are decoded but never encoded
		}
		again, err := EncodeStart(s)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", s, err)
		}
		s2, err := DecodeStart(payloadOf(t, again))
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip: %+v -> %+v (%v)", s, s2, err)
		}
	})
}

func hasVoid(fields []Field) bool {
	for _, f := range fields {
		switch v := f.Value.(type) {
		case nil:
			return true
		case []Field:
			if hasVoid(v) {
				return true
			}
		}
	}
	return false
}

// fuzzPayloads seeds the targets that take a method frame's payload.
func fuzzPayloads(f *testing.F) {
	for _, s := range [][]byte{fixtureStartOk, fixtureTuneOk, fixtureOpen, fixtureOpenOk, fixtureCloseOk} {
		f.Add(s[7 : len(s)-1])
	}
	f.Add([]byte{0, 10})
}

func FuzzDecodeStartOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		so, err := DecodeStartOk(b)
		if err != nil || hasVoid(so.ClientProperties) {
			return
		}
		again, err := EncodeStartOk(so)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", so, err)
		}
		so2, err := DecodeStartOk(payloadOf(t, again))
		if err != nil || !reflect.DeepEqual(so, so2) {
			t.Fatalf("round trip: %+v -> %+v (%v)", so, so2, err)
		}
	})
}

func FuzzDecodeTuneOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		tune, err := DecodeTuneOk(b)
		if err != nil {
			return
		}
		if again := EncodeTuneOk(tune); len(b) != 12 || !bytes.Equal(payloadOf(t, again), b) {
			t.Fatalf("decoded %+v from % x", tune, b)
		}
	})
}

func FuzzDecodeOpen(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		vhost, err := DecodeOpen(b)
		if err != nil {
			return
		}
		if len(vhost) > len(b) {
			t.Fatalf("vhost %q longer than the payload", vhost)
		}
		if again, err := DecodeOpen(payloadOf(t, EncodeOpen(vhost))); err != nil || again != vhost {
			t.Fatalf("round trip: %q -> %q (%v)", vhost, again, err)
		}
	})
}

func FuzzDecodeOpenOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if DecodeOpenOk(b) == nil && len(b) < 5 {
			t.Fatalf("open-ok of %d bytes", len(b))
		}
	})
}

func FuzzDecodeCloseOk(f *testing.F) {
	fuzzPayloads(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if DecodeCloseOk(b) == nil && !bytes.Equal(b, payloadOf(t, fixtureCloseOk)) {
			t.Fatalf("close-ok of % x", b)
		}
	})
}

// FuzzDecodeTune and FuzzDecodeClose take the method's arguments (their
// seeds are a broker's arguments); the method id is put in front.
func FuzzDecodeTune(f *testing.F) {
	f.Add(argsOf(f, fixtureTune))
	f.Add(argsOf(f, fixtureClose403))
	f.Fuzz(func(t *testing.T, args []byte) {
		payload := append([]byte{0, ClassConnection, 0, MethodTune}, args...)
		tune, err := DecodeTune(payload)
		if err != nil {
			return
		}
		if again := EncodeTune(tune); !bytes.Equal(payloadOf(t, again), payload) {
			t.Fatalf("decoded %+v from % x", tune, args)
		}
	})
}

func FuzzDecodeClose(f *testing.F) {
	f.Add(argsOf(f, fixtureClose403))
	f.Add(argsOf(f, fixtureTune))
	f.Fuzz(func(t *testing.T, args []byte) {
		payload := append([]byte{0, ClassConnection, 0, MethodClose}, args...)
		c, err := DecodeClose(payload)
		if err != nil {
			return
		}
		if len(c.Text) > len(args) {
			t.Fatalf("text %q longer than the arguments", c.Text)
		}
		if again := EncodeClose(c); !bytes.Equal(payloadOf(t, again), payload) {
			t.Fatalf("decoded %+v from % x", c, args)
		}
	})
}
