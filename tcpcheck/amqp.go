package tcpcheck

import (
	"fmt"
	"strings"

	"github.com/hopcheck/hopcheck/internal/amqp"
)

// The client side of the AMQP 0-9-1 connection handshake (login); the
// frames are encoded and decoded by internal/amqp.

// JavaClientCapabilities are the capabilities the RabbitMQ Java client
// announces in Start-Ok's client-properties (AMQConnection's
// defaultClientProperties; the .NET client sends the same set). They
// change what a RabbitMQ broker does: without authentication_failure_close
// it answers a refused login by waiting about 3 s and dropping the socket,
// with it by Connection.Close 403 ACCESS_REFUSED. consumer_priorities,
// per_consumer_qos and direct_reply_to are the broker's own capabilities
// (its Connection.Start); no RabbitMQ client announces them.
var JavaClientCapabilities = []string{
	"publisher_confirms",
	"exchange_exchange_bindings",
	"basic.nack",
	"consumer_cancel_notify",
	"connection.blocked",
	"authentication_failure_close",
}

// clientProperties is hopcheck's Start-Ok client-properties: what the UOF
// Java SDK's connection sends through the RabbitMQ Java client (product,
// version and platform of that client, its capabilities), so that the
// broker treats hopcheck as it treats the SDK; information and
// connection_name say that hopcheck it is, for whoever reads the broker's
// connection list. The SDK's own SrUfSdk* entries are left out: hopcheck
// is not the SDK and must not be counted as one.
func clientProperties() []amqp.Field {
	caps := make([]amqp.Field, 0, len(JavaClientCapabilities))
	for _, c := range JavaClientCapabilities {
		caps = append(caps, amqp.Field{Name: c, Value: true})
	}
	return []amqp.Field{
		{Name: "product", Value: "RabbitMQ"},
		{Name: "version", Value: javaClientVersion},
		{Name: "platform", Value: "Java"},
		{Name: "information", Value: "hopcheck connectivity check: logs in and idles, no channels"},
		{Name: "connection_name", Value: "hopcheck"},
		{Name: "capabilities", Value: caps},
	}
}

// javaClientVersion is a current release of the RabbitMQ Java client,
// which the UOF Java SDK builds on (the exact release follows the SDK's).
const javaClientVersion = "5.21.0"

// startOk is hopcheck's Connection.Start-Ok: the Java client's
// properties, mechanism PLAIN with the token as user name and an empty
// password (UOF's login).
func startOk(token string) amqp.StartOk {
	return amqp.StartOk{
		ClientProperties: clientProperties(),
		Mechanism:        "PLAIN",
		Response:         "\x00" + token + "\x00",
		Locale:           "en_US",
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
