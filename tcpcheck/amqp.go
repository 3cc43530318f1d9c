package tcpcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The client side of the AMQP 0-9-1 connection handshake (login): the
// broker's frames are decoded by pure functions over []byte.

// AMQP frame types and connection-class methods.
const (
	amqpFrameMethod    = 1
	amqpFrameHeartbeat = 8
	amqpFrameEnd       = 0xCE
	amqpClassConn      = 10
	amqpStart          = 10
	amqpStartOk        = 11
	amqpTune           = 30
	amqpTuneOk         = 31
	amqpOpen           = 40
	amqpOpenOk         = 41
	amqpClose          = 50
	amqpCloseOk        = 51
	// amqpMaxFrame bounds a frame we accept before login (a broker's
	// Connection.Start is a few hundred bytes).
	amqpMaxFrame = 1 << 20
)

var (
	errAMQPNeedMore  = errors.New("amqp: incomplete frame")
	errAMQPMalformed = errors.New("amqp: malformed frame")
)

// amqpFrame is one frame; payload aliases the decoded bytes.
type amqpFrame struct {
	typ     byte
	channel uint16
	payload []byte
}

// decodeAMQPFrame splits the frame at the start of b off and returns the
// bytes it used; errAMQPNeedMore when b holds only part of it.
func decodeAMQPFrame(b []byte) (amqpFrame, int, error) {
	if len(b) >= 4 && string(b[:4]) == "AMQP" {
		return amqpFrame{}, 0, fmt.Errorf("%w: the broker answered with a protocol header %q", errAMQPMalformed, b[:min(len(b), 8)])
	}
	if len(b) < 7 {
		return amqpFrame{}, 0, errAMQPNeedMore
	}
	size := binary.BigEndian.Uint32(b[3:7])
	if size > amqpMaxFrame {
		return amqpFrame{}, 0, fmt.Errorf("%w: frame of %d bytes", errAMQPMalformed, size)
	}
	end := 7 + int(size)
	if len(b) < end+1 {
		return amqpFrame{}, 0, errAMQPNeedMore
	}
	if b[end] != amqpFrameEnd {
		return amqpFrame{}, 0, fmt.Errorf("%w: frame-end 0x%02x", errAMQPMalformed, b[end])
	}
	return amqpFrame{typ: b[0], channel: binary.BigEndian.Uint16(b[1:3]), payload: b[7:end]}, end + 1, nil
}

// amqpMethod returns the class and method of a method payload and its
// arguments.
func amqpMethod(payload []byte) (class, method uint16, args []byte, err error) {
	if len(payload) < 4 {
		return 0, 0, nil, fmt.Errorf("%w: method payload of %d bytes", errAMQPMalformed, len(payload))
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), payload[4:], nil
}

// amqpTuneArgs are the arguments of Connection.Tune and Tune-Ok.
type amqpTuneArgs struct {
	channelMax uint16
	frameMax   uint32
	heartbeat  uint16
}

// decodeTune parses the arguments of Connection.Tune.
func decodeTune(args []byte) (amqpTuneArgs, error) {
	if len(args) != 8 {
		return amqpTuneArgs{}, fmt.Errorf("%w: Connection.Tune arguments of %d bytes, want 8", errAMQPMalformed, len(args))
	}
	return amqpTuneArgs{channelMax: binary.BigEndian.Uint16(args), frameMax: binary.BigEndian.Uint32(args[2:]),
		heartbeat: binary.BigEndian.Uint16(args[6:])}, nil
}

// amqpCloseArgs are the arguments of Connection.Close.
type amqpCloseArgs struct {
	code          uint16
	text          string
	class, method uint16 // the method that caused it
}

// decodeClose parses the arguments of Connection.Close.
func decodeClose(args []byte) (amqpCloseArgs, error) {
	if len(args) < 3 {
		return amqpCloseArgs{}, fmt.Errorf("%w: Connection.Close arguments of %d bytes", errAMQPMalformed, len(args))
	}
	n := int(args[2])
	if len(args) != 3+n+4 {
		return amqpCloseArgs{}, fmt.Errorf("%w: Connection.Close arguments of %d bytes with a %d-byte text", errAMQPMalformed, len(args), n)
	}
	rest := args[3+n:]
	return amqpCloseArgs{code: binary.BigEndian.Uint16(args), text: string(args[3 : 3+n]),
		class: binary.BigEndian.Uint16(rest), method: binary.BigEndian.Uint16(rest[2:])}, nil
}

func amqpMethodFrame(method uint16, args []byte) []byte {
	f := []byte{amqpFrameMethod, 0, 0}
	f = binary.BigEndian.AppendUint32(f, uint32(4+len(args)))
	f = binary.BigEndian.AppendUint16(f, amqpClassConn)
	f = binary.BigEndian.AppendUint16(f, method)
	f = append(f, args...)
	return append(f, amqpFrameEnd)
}

func appendShortStr(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

func appendLongStr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// encodeStartOk renders Connection.Start-Ok: client properties naming
// hopcheck, mechanism PLAIN with the token as user name and an empty
// password (UOF's login).
func encodeStartOk(token string) []byte {
	var props []byte
	props = appendShortStr(props, "product")
	props = appendLongStr(append(props, 'S'), "hopcheck")
	props = appendShortStr(props, "information")
	props = appendLongStr(append(props, 'S'), "connectivity check: logs in and idles, no channels")
	args := appendLongStr(nil, string(props))
	args = appendShortStr(args, "PLAIN")
	args = appendLongStr(args, "\x00"+token+"\x00")
	args = appendShortStr(args, "en_US")
	return amqpMethodFrame(amqpStartOk, args)
}

// encodeTuneOk renders Connection.Tune-Ok.
func encodeTuneOk(t amqpTuneArgs) []byte {
	args := binary.BigEndian.AppendUint16(nil, t.channelMax)
	args = binary.BigEndian.AppendUint32(args, t.frameMax)
	args = binary.BigEndian.AppendUint16(args, t.heartbeat)
	return amqpMethodFrame(amqpTuneOk, args)
}

// encodeOpen renders Connection.Open of vhost (at most 255 bytes, checked
// where the vhost is read).
func encodeOpen(vhost string) []byte {
	args := appendShortStr(nil, vhost)
	args = appendShortStr(args, "")
	return amqpMethodFrame(amqpOpen, append(args, 0))
}

// AMQP login refusals by reply code.
const (
	AMQPAuthRefused     = "auth-refused"      // 403 ACCESS_REFUSED: wrong or expired token
	AMQPVHostNotAllowed = "vhost-not-allowed" // 530 NOT_ALLOWED: wrong virtual host
	AMQPRefused         = "refused"           // another code
)

// AMQPLoginError is the broker's Connection.Close during login.
type AMQPLoginError struct {
	Reason string // AMQPAuthRefused, AMQPVHostNotAllowed, AMQPRefused
	Code   uint16
	Text   string // the broker's reply text, the token removed
}

func (e *AMQPLoginError) Error() string {
	return fmt.Sprintf("AMQP login refused (%s): %d %s", e.Reason, e.Code, e.Text)
}

// loginError makes the typed failure of a Connection.Close; the token is
// the user name, so it is removed from the reply text should a broker
// quote it.
func loginError(c amqpCloseArgs, token string) *AMQPLoginError {
	reason := AMQPRefused
	switch c.code {
	case 403:
		reason = AMQPAuthRefused
	case 530:
		reason = AMQPVHostNotAllowed
	}
	text := c.text
	if token != "" {
		text = strings.ReplaceAll(text, token, "<token>")
	}
	return &AMQPLoginError{Reason: reason, Code: c.code, Text: text}
}
