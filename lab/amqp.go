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
	amqpMethodStart        = 10
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

// Errors of DecodeConnectionStart, wrapped with detail.
var (
	ErrAMQPShort           = errors.New("amqp: frame truncated")
	ErrAMQPNotMethod       = errors.New("amqp: not a method frame on channel 0")
	ErrAMQPFrameEnd        = errors.New("amqp: bad frame-end octet")
	ErrAMQPNotStart        = errors.New("amqp: not Connection.Start")
	ErrAMQPTable           = errors.New("amqp: malformed field table")
	ErrAMQPProtocolHeader  = errors.New("amqp: got a protocol header instead of a frame")
	ErrAMQPTrailing        = errors.New("amqp: bytes after the method arguments")
	errAMQPValueNotEncoded = errors.New("amqp: value type cannot be encoded")
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
	if len(b) >= 4 && string(b[:4]) == "AMQP" {
		return cs, 0, ErrAMQPProtocolHeader
	}
	if len(b) < amqpFrameHeaderLen {
		return cs, 0, fmt.Errorf("%w: %d bytes of a 7-byte header", ErrAMQPShort, len(b))
	}
	typ, channel := b[0], binary.BigEndian.Uint16(b[1:3])
	size := binary.BigEndian.Uint32(b[3:7])
	if typ != amqpFrameMethod || channel != 0 {
		return cs, 0, fmt.Errorf("%w: type %d channel %d", ErrAMQPNotMethod, typ, channel)
	}
	if size > amqpMaxFramePayloadLen {
		return cs, 0, fmt.Errorf("%w: payload size %d", ErrAMQPShort, size)
	}
	end := amqpFrameHeaderLen + int(size)
	if len(b) < end+1 {
		return cs, 0, fmt.Errorf("%w: have %d of %d bytes", ErrAMQPShort, len(b), end+1)
	}
	if b[end] != amqpFrameEnd {
		return cs, 0, fmt.Errorf("%w: 0x%02x", ErrAMQPFrameEnd, b[end])
	}
	r := amqpReader{b: b[amqpFrameHeaderLen:end]}
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
	return cs, end + 1, nil
}

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
