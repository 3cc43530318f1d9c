// Package amqp is the AMQP 0-9-1 codec that hopcheck's client login
// (tcpcheck) and the lab's broker double share: frames, method ids, field
// tables, short and long strings, and the Connection-class methods of the
// handshake. Everything is a pure function over []byte.
//
// Encoders return a complete method frame on channel 0. Decoders of a
// method take the payload of a method frame (class and method id first)
// and refuse another method with ErrUnexpectedMethod.
package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ProtocolHeader is the AMQP 0-9-1 protocol header a client sends first; a
// broker that does not accept a header answers with its own and closes.
const ProtocolHeader = "AMQP\x00\x00\x09\x01"

// Frame types, the frame-end octet and the limits of the decoders.
const (
	FrameMethod    = 1
	FrameHeader    = 2
	FrameBody      = 3
	FrameHeartbeat = 8
	FrameEnd       = 0xCE
	frameHeaderLen = 7 // type(1) channel(2) size(4)
	// MaxFramePayload bounds the payload of a frame the decoder accepts
	// (handshake frames are a few hundred bytes).
	MaxFramePayload = 1 << 20
	// MaxTableDepth bounds the nesting of field tables so that hostile
	// input cannot exhaust the stack.
	MaxTableDepth = 8
)

// The Connection class and its methods.
const (
	ClassConnection = 10
	MethodStart     = 10
	MethodStartOk   = 11
	MethodTune      = 30
	MethodTuneOk    = 31
	MethodOpen      = 40
	MethodOpenOk    = 41
	MethodClose     = 50
	MethodCloseOk   = 51
)

// Errors of the codec, wrapped with detail. ErrShort from DecodeFrame
// means more bytes are needed; from a method decoder that the arguments
// are truncated.
var (
	ErrShort            = errors.New("amqp: frame truncated")
	ErrFrameEnd         = errors.New("amqp: bad frame-end octet")
	ErrTable            = errors.New("amqp: malformed field table")
	ErrProtocolHeader   = errors.New("amqp: got a protocol header instead of a frame")
	ErrTrailing         = errors.New("amqp: bytes after the method arguments")
	ErrFrameSize        = errors.New("amqp: frame too large")
	ErrUnexpectedMethod = errors.New("amqp: unexpected method")
	ErrValueNotEncoded  = errors.New("amqp: value type cannot be encoded")
)

// Frame is one AMQP 0-9-1 frame; Payload aliases the decoded bytes.
type Frame struct {
	Type    byte // FrameMethod, FrameHeader, FrameBody, FrameHeartbeat
	Channel uint16
	Payload []byte
}

// DecodeFrame splits the frame at the start of b off and returns it with
// the number of bytes it used: ErrShort (wrapped) means more bytes are
// needed, any other error that the stream is not AMQP.
func DecodeFrame(b []byte) (Frame, int, error) {
	if len(b) >= 4 && string(b[:4]) == ProtocolHeader[:4] {
		return Frame{}, 0, ErrProtocolHeader
	}
	if len(b) < frameHeaderLen {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes of a 7-byte header", ErrShort, len(b))
	}
	size := binary.BigEndian.Uint32(b[3:7])
	if size > MaxFramePayload {
		return Frame{}, 0, fmt.Errorf("%w: payload size %d", ErrFrameSize, size)
	}
	end := frameHeaderLen + int(size)
	if len(b) < end+1 {
		return Frame{}, 0, fmt.Errorf("%w: have %d of %d bytes", ErrShort, len(b), end+1)
	}
	if b[end] != FrameEnd {
		return Frame{}, 0, fmt.Errorf("%w: 0x%02x", ErrFrameEnd, b[end])
	}
	return Frame{Type: b[0], Channel: binary.BigEndian.Uint16(b[1:3]), Payload: b[frameHeaderLen:end]}, end + 1, nil
}

// EncodeFrame renders f (e.g. a heartbeat: Frame{Type: FrameHeartbeat}).
func EncodeFrame(f Frame) []byte {
	out := make([]byte, 0, frameHeaderLen+len(f.Payload)+1)
	out = append(out, f.Type)
	out = binary.BigEndian.AppendUint16(out, f.Channel)
	out = binary.BigEndian.AppendUint32(out, uint32(len(f.Payload)))
	out = append(out, f.Payload...)
	return append(out, FrameEnd)
}

// MethodOf returns the class and method id of a method frame's payload.
func MethodOf(payload []byte) (class, method uint16, err error) {
	if len(payload) < 4 {
		return 0, 0, fmt.Errorf("%w: method payload of %d bytes", ErrShort, len(payload))
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), nil
}

// methodFrame renders a Connection-class method on channel 0.
func methodFrame(method uint16, args []byte) []byte {
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 4+len(args)), ClassConnection)
	payload = binary.BigEndian.AppendUint16(payload, method)
	return EncodeFrame(Frame{Type: FrameMethod, Payload: append(payload, args...)})
}

// methodArgs checks that payload is Connection-class method want and
// returns a reader over its arguments.
func methodArgs(payload []byte, want uint16) (reader, error) {
	class, method, err := MethodOf(payload)
	if err != nil {
		return reader{}, err
	}
	if class != ClassConnection || method != want {
		return reader{}, fmt.Errorf("%w: class %d method %d, want 10 %d", ErrUnexpectedMethod, class, method, want)
	}
	return reader{b: payload[4:]}, nil
}

// Field is one entry of a field table. Value is a string, bool, int64,
// []Field (nested table) or, decoded only, nil (void).
type Field struct {
	Name  string
	Value any
}

// Capability reports whether a Start's server-properties or a Start-Ok's
// client-properties announce capability name: a "capabilities" table
// holding name as true. RabbitMQ acts on the client's: without
// authentication_failure_close it answers a refused login with silence
// and a dropped socket instead of Connection.Close.
func Capability(props []Field, name string) bool {
	for _, f := range props {
		if f.Name != "capabilities" {
			continue
		}
		caps, _ := f.Value.([]Field)
		for _, c := range caps {
			if c.Name == name {
				v, _ := c.Value.(bool)
				return v
			}
		}
	}
	return false
}

// Start is Connection.Start (broker).
type Start struct {
	VersionMajor, VersionMinor byte
	ServerProperties           []Field
	Mechanisms                 string // space-separated, e.g. "PLAIN"
	Locales                    string // space-separated, e.g. "en_US"
}

// EncodeStart renders Connection.Start; it fails on a table value it
// cannot encode.
func EncodeStart(s Start) ([]byte, error) {
	args := []byte{s.VersionMajor, s.VersionMinor}
	args, err := appendTable(args, s.ServerProperties)
	if err != nil {
		return nil, err
	}
	args = appendLongString(args, s.Mechanisms)
	args = appendLongString(args, s.Locales)
	return methodFrame(MethodStart, args), nil
}

// DecodeStart parses the payload of a Connection.Start method frame.
func DecodeStart(payload []byte) (Start, error) {
	r, err := methodArgs(payload, MethodStart)
	if err != nil {
		return Start{}, err
	}
	var s Start
	s.VersionMajor, s.VersionMinor = r.byte(), r.byte()
	s.ServerProperties = r.table(0)
	s.Mechanisms = r.longString()
	s.Locales = r.longString()
	if err := r.done(); err != nil {
		return Start{}, err
	}
	return s, nil
}

// StartOk is Connection.Start-Ok (client).
type StartOk struct {
	ClientProperties []Field
	Mechanism        string
	Response         string // PLAIN: "\x00" user "\x00" password
	Locale           string
}

// EncodeStartOk renders Connection.Start-Ok; it fails on a table value it
// cannot encode.
func EncodeStartOk(s StartOk) ([]byte, error) {
	args, err := appendTable(nil, s.ClientProperties)
	if err != nil {
		return nil, err
	}
	args = appendShortString(args, s.Mechanism)
	args = appendLongString(args, s.Response)
	args = appendShortString(args, s.Locale)
	return methodFrame(MethodStartOk, args), nil
}

// DecodeStartOk parses the payload of a Connection.Start-Ok method frame.
func DecodeStartOk(payload []byte) (StartOk, error) {
	r, err := methodArgs(payload, MethodStartOk)
	if err != nil {
		return StartOk{}, err
	}
	so := StartOk{ClientProperties: r.table(0), Mechanism: r.shortString(), Response: r.longString(), Locale: r.shortString()}
	if err := r.done(); err != nil {
		return StartOk{}, err
	}
	return so, nil
}

// Tune is the arguments of Connection.Tune (broker) and Tune-Ok (client).
type Tune struct {
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  uint16 // seconds; 0 = heartbeats off
}

func tuneArgs(t Tune) []byte {
	args := binary.BigEndian.AppendUint16(make([]byte, 0, 8), t.ChannelMax)
	args = binary.BigEndian.AppendUint32(args, t.FrameMax)
	return binary.BigEndian.AppendUint16(args, t.Heartbeat)
}

func decodeTune(payload []byte, method uint16) (Tune, error) {
	r, err := methodArgs(payload, method)
	if err != nil {
		return Tune{}, err
	}
	t := Tune{ChannelMax: r.uint16(), FrameMax: r.uint32(), Heartbeat: r.uint16()}
	if err := r.done(); err != nil {
		return Tune{}, err
	}
	return t, nil
}

// EncodeTune renders Connection.Tune.
func EncodeTune(t Tune) []byte { return methodFrame(MethodTune, tuneArgs(t)) }

// DecodeTune parses the payload of a Connection.Tune method frame.
func DecodeTune(payload []byte) (Tune, error) { return decodeTune(payload, MethodTune) }

// EncodeTuneOk renders Connection.Tune-Ok.
func EncodeTuneOk(t Tune) []byte { return methodFrame(MethodTuneOk, tuneArgs(t)) }

// DecodeTuneOk parses the payload of a Connection.Tune-Ok method frame.
func DecodeTuneOk(payload []byte) (Tune, error) { return decodeTune(payload, MethodTuneOk) }

// EncodeOpen renders Connection.Open of vhost (cut to 255 bytes, a short
// string's limit) with the reserved fields empty.
func EncodeOpen(vhost string) []byte {
	args := appendShortString(nil, vhost)
	args = appendShortString(args, "") // reserved (capabilities)
	return methodFrame(MethodOpen, append(args, 0))
}

// DecodeOpen parses the payload of a Connection.Open method frame and
// returns its virtual host.
func DecodeOpen(payload []byte) (string, error) {
	r, err := methodArgs(payload, MethodOpen)
	if err != nil {
		return "", err
	}
	vhost := r.shortString()
	_ = r.shortString() // reserved (capabilities)
	_ = r.byte()        // reserved (insist)
	if err := r.done(); err != nil {
		return "", err
	}
	return vhost, nil
}

// EncodeOpenOk renders Connection.Open-Ok (one reserved empty short string).
func EncodeOpenOk() []byte { return methodFrame(MethodOpenOk, []byte{0}) }

// DecodeOpenOk checks the payload of a Connection.Open-Ok method frame.
func DecodeOpenOk(payload []byte) error {
	r, err := methodArgs(payload, MethodOpenOk)
	if err != nil {
		return err
	}
	_ = r.shortString() // reserved (known-hosts)
	return r.done()
}

// Close is the arguments of Connection.Close: a reply code and text and
// the method that caused it (0 0 for none).
type Close struct {
	Code          uint16
	Text          string
	Class, Method uint16
}

// EncodeClose renders Connection.Close (the text cut to 255 bytes).
func EncodeClose(c Close) []byte {
	args := binary.BigEndian.AppendUint16(nil, c.Code)
	args = appendShortString(args, c.Text)
	args = binary.BigEndian.AppendUint16(args, c.Class)
	args = binary.BigEndian.AppendUint16(args, c.Method)
	return methodFrame(MethodClose, args)
}

// DecodeClose parses the payload of a Connection.Close method frame.
func DecodeClose(payload []byte) (Close, error) {
	r, err := methodArgs(payload, MethodClose)
	if err != nil {
		return Close{}, err
	}
	c := Close{Code: r.uint16(), Text: r.shortString(), Class: r.uint16(), Method: r.uint16()}
	if err := r.done(); err != nil {
		return Close{}, err
	}
	return c, nil
}

// EncodeCloseOk renders Connection.Close-Ok.
func EncodeCloseOk() []byte { return methodFrame(MethodCloseOk, nil) }

// DecodeCloseOk checks the payload of a Connection.Close-Ok method frame.
func DecodeCloseOk(payload []byte) error {
	r, err := methodArgs(payload, MethodCloseOk)
	if err != nil {
		return err
	}
	return r.done()
}

// appendShortString appends s as a short string, cut to 255 bytes.
func appendShortString(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendLongString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendTable appends a field table: strings as 'S' long strings, bools
// 't', int64 'l', nested tables 'F'; any other value is an error.
func appendTable(b []byte, fields []Field) ([]byte, error) {
	var body []byte
	for _, f := range fields {
		if len(f.Name) > 255 {
			return nil, fmt.Errorf("%w: field name of %d bytes", ErrValueNotEncoded, len(f.Name))
		}
		body = append(body, byte(len(f.Name)))
		body = append(body, f.Name...)
		switch v := f.Value.(type) {
		case string:
			body = append(body, 'S')
			body = appendLongString(body, v)
		case bool:
			body = append(body, 't')
			if v {
				body = append(body, 1)
			} else {
				body = append(body, 0)
			}
		case int64:
			body = append(body, 'l')
			body = binary.BigEndian.AppendUint64(body, uint64(v))
		case []Field:
			body = append(body, 'F')
			var err error
			if body, err = appendTable(body, v); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: %s is %T", ErrValueNotEncoded, f.Name, f.Value)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// reader consumes big-endian AMQP types; the first error sticks and every
// later read returns zero values.
type reader struct {
	b   []byte
	err error
}

// done is the reader's error, or ErrTrailing if arguments are left.
func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d", ErrTrailing, len(r.b))
	}
	return nil
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: need %d bytes, have %d", ErrShort, n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) shortString() string { return string(r.take(int(r.byte()))) }

func (r *reader) longString() string {
	n := r.uint32()
	if n > math.MaxInt32 {
		r.fail("long string of %d bytes", n)
		return ""
	}
	return string(r.take(int(n)))
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrTable, fmt.Sprintf(format, a...))
	}
}

// table reads a field table. Numbers decode to int64; float and decimal
// types are rejected (neither side of the handshake uses them).
func (r *reader) table(depth int) []Field {
	if depth > MaxTableDepth {
		r.fail("tables nested deeper than %d", MaxTableDepth)
		return nil
	}
	n := r.uint32()
	body := r.take(int(min(n, math.MaxInt32)))
	if r.err != nil {
		return nil
	}
	sub := reader{b: body}
	fields := []Field{}
	for len(sub.b) > 0 && sub.err == nil {
		name := sub.shortString()
		v := sub.value(depth)
		if sub.err == nil {
			fields = append(fields, Field{Name: name, Value: v})
		}
	}
	if sub.err != nil {
		r.fail("%v", sub.err)
		return nil
	}
	return fields
}

func (r *reader) value(depth int) any {
	switch t := r.byte(); t {
	case 'S':
		return r.longString()
	case 's': // short string in RabbitMQ's dialect
		return r.shortString()
	case 't':
		return r.byte() != 0
	case 'b':
		return int64(int8(r.byte()))
	case 'B':
		return int64(r.byte())
	case 'U':
		return int64(int16(r.uint16()))
	case 'u':
		return int64(r.uint16())
	case 'I':
		return int64(int32(r.uint32()))
	case 'i':
		return int64(r.uint32())
	case 'l', 'L':
		return int64(r.uint64())
	case 'T':
		return int64(r.uint64())
	case 'F':
		return r.table(depth + 1)
	case 'V':
		return nil
	default:
		if r.err == nil {
			r.fail("unsupported field type %q", t)
		}
		return nil
	}
}
