package tcpcheck

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/internal/amqp"
	"github.com/hopcheck/hopcheck/probe"
)

// amqpProtocol is TLS + AMQP 0-9-1: the protocol header, then, with a
// token and a vhost, the login (the UOF feed). The frames are encoded and
// decoded by internal/amqp.
type amqpProtocol struct{}

func (amqpProtocol) tlsConfig(cfg DialConfig) *tls.Config { return clientTLSConfig(cfg, nil) }

// request is a heartbeat frame: the broker does not answer it.
func (amqpProtocol) request(DialConfig) []byte {
	return amqp.EncodeFrame(amqp.Frame{Type: amqp.FrameHeartbeat})
}

func (amqpProtocol) read(cn *Conn) { readRaw(cn) }

func (amqpProtocol) ackOnly() bool { return true }

// transfer: a broker sends nothing large before login, and garbage after
// the protocol header would make it close.
func (amqpProtocol) transfer(*Conn, transferSpec) (transfer, error) {
	return nil, &appError{"an AMQP broker has no large transfer to test: use the API host (https://) or a tcp:// echo service"}
}

// start sends the AMQP 0-9-1 protocol header and expects a
// Connection.Start method frame (type 1, channel 0, class 10, method 10);
// with a token and a vhost it then logs in (amqpLogin).
func (amqpProtocol) start(cn *Conn, deadline time.Time) error {
	if err := cn.write([]byte(amqp.ProtocolHeader), deadline); err != nil {
		return err
	}
	r := amqpFrameReader{cn: cn, deadline: deadline, timer: time.NewTimer(deadline.Sub(cn.now()))}
	defer r.timer.Stop()
	for len(r.got) < 11 {
		if err := r.more("Connection.Start"); err != nil {
			return err
		}
	}
	if err := CheckConnectionStart(r.got); err != nil {
		return err
	}
	if cn.cfg.Token == "" || cn.cfg.AMQPVHost == "" {
		return nil
	}
	return amqpLogin(cn, &r)
}

// amqpLogin is the client side of the connection handshake after
// Connection.Start: Start-Ok (PLAIN, token as user name), Tune-Ok with
// heartbeats off, Open of the vhost, Open-Ok.
func amqpLogin(cn *Conn, r *amqpFrameReader) error {
	if _, err := r.method("Connection.Start", amqp.MethodStart); err != nil {
		return err
	}
	startOkFrame, err := amqp.EncodeStartOk(startOk(cn.cfg.Token))
	if err != nil {
		return fmt.Errorf("encoding Connection.Start-Ok: %w", err)
	}
	if err := cn.write(startOkFrame, r.deadline); err != nil {
		return err
	}
	payload, err := r.method("Connection.Tune", amqp.MethodTune)
	if err != nil {
		return err
	}
	tune, err := amqp.DecodeTune(payload)
	if err != nil {
		return &appError{fmt.Sprintf("decoding Connection.Tune: %v", err)}
	}
	// Heartbeat 0 turns AMQP heartbeats off: the idle ladder must be able
	// to hold a logged-in connection silent, as a box on the path sees an
	// idle feed between messages.
	tune.Heartbeat = 0
	if err := cn.write(append(amqp.EncodeTuneOk(tune), amqp.EncodeOpen(cn.cfg.AMQPVHost)...), r.deadline); err != nil {
		return err
	}
	if _, err := r.method("Connection.Open-Ok", amqp.MethodOpenOk); err != nil {
		return err
	}
	cn.LoggedIn = true
	return nil
}

// amqpFrameReader collects the broker's bytes from the reader goroutine
// during the handshake.
type amqpFrameReader struct {
	cn       *Conn
	got      []byte
	deadline time.Time
	timer    *time.Timer
}

// more waits for the next bytes.
func (r *amqpFrameReader) more(what string) error {
	select {
	case ev, ok := <-r.cn.events:
		if !ok || ev.err != nil {
			if ev.err == nil {
				ev.err = io.EOF
			}
			r.cn.ended = &ev
			return ev.err
		}
		r.got = append(r.got, ev.data...)
		return nil
	case <-r.timer.C:
		return fmt.Errorf("no %s within %v: %w", what, r.cn.cfg.SetupTimeout, errTimeout)
	}
}

// method returns the payload of the next connection method, which must
// be want; Connection.Close instead is the typed login refusal.
// Heartbeats are skipped.
func (r *amqpFrameReader) method(what string, want uint16) ([]byte, error) {
	for {
		fr, n, err := amqp.DecodeFrame(r.got)
		if errors.Is(err, amqp.ErrShort) {
			if err := r.more(what); err != nil {
				if errors.Is(err, io.EOF) {
					return nil, fmt.Errorf("broker closed the connection while we waited for %s: %w", what, err)
				}
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, &appError{fmt.Sprintf("waiting for %s: %v", what, err)}
		}
		r.got = r.got[n:]
		if fr.Type == amqp.FrameHeartbeat {
			continue
		}
		class, method, err := amqp.MethodOf(fr.Payload)
		if err != nil || fr.Type != amqp.FrameMethod || fr.Channel != 0 || class != amqp.ClassConnection {
			return nil, &appError{fmt.Sprintf("waiting for %s: got frame type %d channel %d", what, fr.Type, fr.Channel)}
		}
		switch method {
		case want:
			return fr.Payload, nil
		case amqp.MethodClose:
			c, err := amqp.DecodeClose(fr.Payload)
			if err != nil {
				return nil, &appError{fmt.Sprintf("waiting for %s: %v", what, err)}
			}
			return nil, loginError(c, r.cn.cfg.Token)
		}
		return nil, &appError{fmt.Sprintf("waiting for %s: got connection method %d", what, method)}
	}
}

// CheckConnectionStart validates the start of a broker's first frame.
func CheckConnectionStart(b []byte) error {
	if len(b) >= 8 && string(b[:4]) == "AMQP" {
		return &appError{fmt.Sprintf("broker rejected the protocol header and offered %q", b[:8])}
	}
	if len(b) < 11 {
		return &appError{"short AMQP frame"}
	}
	if b[0] != 1 || b[1] != 0 || b[2] != 0 || b[7] != 0 || b[8] != 10 || b[9] != 0 || b[10] != 10 {
		return &appError{fmt.Sprintf("first AMQP frame is not Connection.Start (% x)", b[:11])}
	}
	return nil
}

// startOk is hopcheck's Connection.Start-Ok: client properties naming
// hopcheck, mechanism PLAIN with the token as user name and an empty
// password (UOF's login).
func startOk(token string) amqp.StartOk {
	return amqp.StartOk{
		ClientProperties: []amqp.Field{
			{Name: "product", Value: "hopcheck"},
			{Name: "information", Value: "connectivity check: logs in and idles, no channels"},
		},
		Mechanism: "PLAIN",
		Response:  "\x00" + token + "\x00",
		Locale:    "en_US",
	}
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
func loginError(c amqp.Close, token string) *AMQPLoginError {
	reason := AMQPRefused
	switch c.Code {
	case 403:
		reason = AMQPAuthRefused
	case 530:
		reason = AMQPVHostNotAllowed
	}
	text := c.Text
	if token != "" {
		text = strings.ReplaceAll(text, token, "<token>")
	}
	return &AMQPLoginError{Reason: reason, Code: c.Code, Text: text}
}

// idleCause explains idle failures that are no idle timeout: the
// broker's handshake timeout closes connections that never logged in.
func (amqpProtocol) idleCause(cfg DialConfig, behaviour string, hi time.Duration, fs []idleFailure, conns []ConnRecord) (cause, note string) {
	if !amqpHandshakeClose(cfg, behaviour, hi, fs) {
		return "", ""
	}
	// The handshake timeout runs from connect, not from the last use:
	// the connections' lifetimes show it, their idle ages do not.
	return IdleCauseAMQPHandshake, fmt.Sprintf("the broker closed connections that had not logged in about %.0fs after they were opened: its AMQP handshake timeout "+
		"(RabbitMQ handshake_timeout, 10 s by default), not an idle timeout; a logged-in feed connection is not subject to it. "+
		"Give the access token (and --amqp-vhost, or an https:// API target in the same run) to test AMQP idle behaviour past it", closedLifetime(conns))
}

// amqpHandshakeClose reports whether the idle failures of an AMQP target
// are its broker's handshake timeout rather than an idle timeout: the
// connections did not log in (no token or vhost), the other side closed
// them (FIN) at most about twice RabbitMQ's default handshake_timeout,
// and no close came from a box on the path.
func amqpHandshakeClose(d DialConfig, behaviour string, hi time.Duration, fs []idleFailure) bool {
	if d.App != AppAMQPS || (d.Token != "" && d.AMQPVHost != "") || behaviour != behaviourClose || hi > 2*amqpDefaultHandshakeTimeout {
		return false
	}
	for _, f := range fs {
		if f.behaviour == behaviourClose && f.attr != nil && f.attr.Origin == probe.OriginMiddlebox {
			return false
		}
	}
	return true
}

// closedLifetime is the longest life, from start to end, of connections
// that were closed (FIN) after their first exchange.
func closedLifetime(cs []ConnRecord) float64 {
	longest := 0.0
	for _, c := range cs {
		if c.Outcome == OutcomeClosed && c.Phase == PhaseRequest && c.EndS > c.StartS {
			longest = max(longest, c.EndS-c.StartS)
		}
	}
	return longest
}

// amqpDefaultHandshakeTimeout is RabbitMQ's default handshake_timeout.
const amqpDefaultHandshakeTimeout = 10 * time.Second
