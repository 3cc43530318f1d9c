package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// AMQPHeader is the AMQP 0-9-1 protocol header a client sends first; a
// broker that does not accept a header answers with this one and closes.
var AMQPHeader = [8]byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

// AMQP 0-9-1 framing constants.
const (
	amqpFrameMethod        = 1
	amqpFrameEnd           = 0xCE
	amqpClassConnection    = 10
	amqpFrameHeartbeat     = 8
	amqpMethodStart        = 10
	amqpMethodStartOk      = 11
	amqpMethodTune         = 30
	amqpMethodTuneOk       = 31
	amqpMethodOpen         = 40
	amqpMethodOpenOk       = 41
	amqpMethodClose        = 50
	amqpMethodCloseOk      = 51
	amqpFrameHeaderLen     = 7 // type(1) channel(2) size(4)
	amqpMaxFramePayloadLen = 1 << 20
)

// AMQPField is one entry of an AMQP field table. Value is a string, bool,
// int64 or []AMQPField (nested table).
type AMQPField struct {
	Name  string
	Value any
}

// ConnectionStart is the AMQP 0-9-1 Connection.Start method.
type ConnectionStart struct {
	VersionMajor, VersionMinor byte
	ServerProperties           []AMQPField
	Mechanisms                 string // space-separated, e.g. "PLAIN"
	Locales                    string // space-separated, e.g. "en_US"
}

// LabConnectionStart is what the lab server sends.
func LabConnectionStart() ConnectionStart {
	return ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: []AMQPField{
			{"product", "hopcheck lab"},
			{"platform", "Go"},
			{"capabilities", []AMQPField{{"authentication_failure_close", true}}},
		},
		Mechanisms: "PLAIN",
		Locales:    "en_US",
	}
}

// Errors of the decoders, wrapped with detail.
var (
	ErrAMQPShort            = errors.New("amqp: frame truncated")
	ErrAMQPNotMethod        = errors.New("amqp: not a method frame on channel 0")
	ErrAMQPFrameEnd         = errors.New("amqp: bad frame-end octet")
	ErrAMQPNotStart         = errors.New("amqp: not Connection.Start")
	ErrAMQPTable            = errors.New("amqp: malformed field table")
	ErrAMQPProtocolHeader   = errors.New("amqp: got a protocol header instead of a frame")
	ErrAMQPTrailing         = errors.New("amqp: bytes after the method arguments")
	ErrAMQPFrameSize        = errors.New("amqp: frame too large")
	ErrAMQPUnexpectedMethod = errors.New("amqp: unexpected method")
	errAMQPValueNotEncoded  = errors.New("amqp: value type cannot be encoded")
)

// EncodeConnectionStart renders cs as a complete method frame on channel 0.
func EncodeConnectionStart(cs ConnectionStart) ([]byte, error) {
	payload := binary.BigEndian.AppendUint16(nil, amqpClassConnection)
	payload = binary.BigEndian.AppendUint16(payload, amqpMethodStart)
	payload = append(payload, cs.VersionMajor, cs.VersionMinor)
	payload, err := appendTable(payload, cs.ServerProperties)
	if err != nil {
		return nil, err
	}
	payload = appendLongString(payload, cs.Mechanisms)
	payload = appendLongString(payload, cs.Locales)
	frame := []byte{amqpFrameMethod, 0, 0}
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(payload)))
	frame = append(frame, payload...)
	return append(frame, amqpFrameEnd), nil
}

func appendLongString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendTable(b []byte, fields []AMQPField) ([]byte, error) {
	var body []byte
	for _, f := range fields {
		if len(f.Name) > 255 {
			return nil, fmt.Errorf("%w: field name of %d bytes", errAMQPValueNotEncoded, len(f.Name))
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
		case []AMQPField:
			body = append(body, 'F')
			var err error
			if body, err = appendTable(body, v); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: %s is %T", errAMQPValueNotEncoded, f.Name, f.Value)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// DecodeConnectionStart parses a Connection.Start method frame at the start
// of b and returns it with the number of bytes the frame used.
func DecodeConnectionStart(b []byte) (ConnectionStart, int, error) {
	var cs ConnectionStart
	fr, n, err := DecodeAMQPFrame(b)
	if err != nil {
		return cs, 0, err
	}
	if fr.Type != amqpFrameMethod || fr.Channel != 0 {
		return cs, 0, fmt.Errorf("%w: type %d channel %d", ErrAMQPNotMethod, fr.Type, fr.Channel)
	}
	r := amqpReader{b: fr.Payload}
	class, method := r.uint16(), r.uint16()
	if r.err != nil {
		return cs, 0, r.err
	}
	if class != amqpClassConnection || method != amqpMethodStart {
		return cs, 0, fmt.Errorf("%w: class %d method %d", ErrAMQPNotStart, class, method)
	}
	cs.VersionMajor, cs.VersionMinor = r.byte(), r.byte()
	cs.ServerProperties = r.table(0)
	cs.Mechanisms = r.longString()
	cs.Locales = r.longString()
	if r.err != nil {
		return ConnectionStart{}, 0, r.err
	}
	if len(r.b) != 0 {
		return ConnectionStart{}, 0, fmt.Errorf("%w: %d", ErrAMQPTrailing, len(r.b))
	}
	return cs, n, nil
}

// AMQPFrame is one AMQP 0-9-1 frame; Payload aliases the decoded bytes.
type AMQPFrame struct {
	Type    byte // 1 method, 2 header, 3 body, 8 heartbeat
	Channel uint16
	Payload []byte
}

// DecodeAMQPFrame splits the frame at the start of b off: ErrAMQPShort
// (wrapped) means more bytes are needed, any other error that the stream
// is not AMQP.
func DecodeAMQPFrame(b []byte) (AMQPFrame, int, error) {
	if len(b) >= 4 && string(b[:4]) == "AMQP" {
		return AMQPFrame{}, 0, ErrAMQPProtocolHeader
	}
	if len(b) < amqpFrameHeaderLen {
		return AMQPFrame{}, 0, fmt.Errorf("%w: %d bytes of a 7-byte header", ErrAMQPShort, len(b))
	}
	size := binary.BigEndian.Uint32(b[3:7])
	if size > amqpMaxFramePayloadLen {
		return AMQPFrame{}, 0, fmt.Errorf("%w: payload size %d", ErrAMQPFrameSize, size)
	}
	end := amqpFrameHeaderLen + int(size)
	if len(b) < end+1 {
		return AMQPFrame{}, 0, fmt.Errorf("%w: have %d of %d bytes", ErrAMQPShort, len(b), end+1)
	}
	if b[end] != amqpFrameEnd {
		return AMQPFrame{}, 0, fmt.Errorf("%w: 0x%02x", ErrAMQPFrameEnd, b[end])
	}
	return AMQPFrame{Type: b[0], Channel: binary.BigEndian.Uint16(b[1:3]), Payload: b[amqpFrameHeaderLen:end]}, end + 1, nil
}

// AMQPMethodOf returns the class and method of a method frame's payload.
func AMQPMethodOf(payload []byte) (class, method uint16, err error) {
	if len(payload) < 4 {
		return 0, 0, fmt.Errorf("%w: method payload of %d bytes", ErrAMQPShort, len(payload))
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), nil
}

// StartOk is the client's Connection.Start-Ok.
type StartOk struct {
	ClientProperties []AMQPField
	Mechanism        string
	Response         string // PLAIN: "\x00" user "\x00" password
	Locale           string
}

// Tune is Connection.Tune (broker) or Connection.Tune-Ok (client).
type Tune struct {
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  uint16 // seconds; 0 = heartbeats off
}

// methodArgs checks that payload is class 10 method want and returns a
// reader over its arguments.
func methodArgs(payload []byte, want uint16) (amqpReader, error) {
	class, method, err := AMQPMethodOf(payload)
	if err != nil {
		return amqpReader{}, err
	}
	if class != amqpClassConnection || method != want {
		return amqpReader{}, fmt.Errorf("%w: class %d method %d, want 10 %d", ErrAMQPUnexpectedMethod, class, method, want)
	}
	return amqpReader{b: payload[4:]}, nil
}

// done is the reader's error, or ErrAMQPTrailing if arguments are left.
func (r *amqpReader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d", ErrAMQPTrailing, len(r.b))
	}
	return nil
}

// DecodeStartOk parses the payload of a Connection.Start-Ok method frame.
func DecodeStartOk(payload []byte) (StartOk, error) {
	r, err := methodArgs(payload, amqpMethodStartOk)
	if err != nil {
		return StartOk{}, err
	}
	so := StartOk{ClientProperties: r.table(0), Mechanism: r.shortString(), Response: r.longString(), Locale: r.shortString()}
	if err := r.done(); err != nil {
		return StartOk{}, err
	}
	return so, nil
}

// DecodeTuneOk parses the payload of a Connection.Tune-Ok method frame.
func DecodeTuneOk(payload []byte) (Tune, error) {
	r, err := methodArgs(payload, amqpMethodTuneOk)
	if err != nil {
		return Tune{}, err
	}
	t := Tune{ChannelMax: r.uint16(), FrameMax: r.uint32(), Heartbeat: r.uint16()}
	if err := r.done(); err != nil {
		return Tune{}, err
	}
	return t, nil
}

// DecodeOpen parses the payload of a Connection.Open method frame and
// returns its virtual host.
func DecodeOpen(payload []byte) (string, error) {
	r, err := methodArgs(payload, amqpMethodOpen)
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

// amqpMethodFrame renders a connection-class method on channel 0.
func amqpMethodFrame(method uint16, args []byte) []byte {
	frame := []byte{amqpFrameMethod, 0, 0}
	frame = binary.BigEndian.AppendUint32(frame, uint32(4+len(args)))
	frame = binary.BigEndian.AppendUint16(frame, amqpClassConnection)
	frame = binary.BigEndian.AppendUint16(frame, method)
	frame = append(frame, args...)
	return append(frame, amqpFrameEnd)
}

func appendShortString(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// EncodeTune renders Connection.Tune.
func EncodeTune(t Tune) []byte {
	args := binary.BigEndian.AppendUint16(nil, t.ChannelMax)
	args = binary.BigEndian.AppendUint32(args, t.FrameMax)
	args = binary.BigEndian.AppendUint16(args, t.Heartbeat)
	return amqpMethodFrame(amqpMethodTune, args)
}

// EncodeOpenOk renders Connection.Open-Ok (one reserved empty short string).
func EncodeOpenOk() []byte { return amqpMethodFrame(amqpMethodOpenOk, []byte{0}) }

// EncodeClose renders Connection.Close with a reply code and text and the
// method that caused it (0 0 for none).
func EncodeClose(code uint16, text string, class, method uint16) []byte {
	args := binary.BigEndian.AppendUint16(nil, code)
	args = appendShortString(args, text)
	args = binary.BigEndian.AppendUint16(args, class)
	args = binary.BigEndian.AppendUint16(args, method)
	return amqpMethodFrame(amqpMethodClose, args)
}

// EncodeCloseOk renders Connection.Close-Ok.
func EncodeCloseOk() []byte { return amqpMethodFrame(amqpMethodCloseOk, nil) }

// amqpReader consumes big-endian AMQP types; the first error sticks and
// every later read returns zero values.
type amqpReader struct {
	b   []byte
	err error
}

func (r *amqpReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: need %d bytes, have %d", ErrAMQPShort, n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *amqpReader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *amqpReader) uint16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *amqpReader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *amqpReader) uint64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *amqpReader) shortString() string { return string(r.take(int(r.byte()))) }

func (r *amqpReader) longString() string {
	n := r.uint32()
	if n > math.MaxInt32 {
		r.fail("long string of %d bytes", n)
		return ""
	}
	return string(r.take(int(n)))
}

func (r *amqpReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrAMQPTable, fmt.Sprintf(format, a...))
	}
}

// maxTableDepth bounds nesting so hostile input cannot exhaust the stack.
const maxTableDepth = 8

// table reads a field table. Numbers decode to int64 (float types are
// rejected: the lab never sends them).
func (r *amqpReader) table(depth int) []AMQPField {
	if depth > maxTableDepth {
		r.fail("tables nested deeper than %d", maxTableDepth)
		return nil
	}
	n := r.uint32()
	body := r.take(int(min(n, math.MaxInt32)))
	if r.err != nil {
		return nil
	}
	sub := amqpReader{b: body}
	fields := []AMQPField{}
	for len(sub.b) > 0 && sub.err == nil {
		name := sub.shortString()
		v := sub.value(depth)
		if sub.err == nil {
			fields = append(fields, AMQPField{Name: name, Value: v})
		}
	}
	if sub.err != nil {
		r.fail("%v", sub.err)
		return nil
	}
	return fields
}

func (r *amqpReader) value(depth int) any {
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
