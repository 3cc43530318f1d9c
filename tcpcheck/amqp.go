package tcpcheck

import (
	"fmt"
	"strings"

	"github.com/hopcheck/hopcheck/internal/amqp"
)

// The client side of the AMQP 0-9-1 connection handshake (login); the
// frames are encoded and decoded by internal/amqp.

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
