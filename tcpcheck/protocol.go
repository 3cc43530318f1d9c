package tcpcheck

import (
	"crypto/tls"
	"time"
)

// protocol is what differs between the application layers spoken over a
// connection (https.go, amqp.go, echo.go). Conn does TCP, TLS and the
// reading goroutine; everything that depends on the application is here.
type protocol interface {
	// tlsConfig is the client's TLS configuration (nil: plain TCP).
	tlsConfig(cfg DialConfig) *tls.Config
	// request is the message of one reuse of an established connection.
	request(cfg DialConfig) []byte
	// read delivers every answer, then the end of the stream, on cn.events.
	read(cn *Conn)
	// ackOnly: requests get no answer (AMQP heartbeats); a reuse
	// completes when the peer has acknowledged the request.
	ackOnly() bool
	// transfer starts the data test's large transfer.
	transfer(cn *Conn, t transferSpec) (transfer, error)
}

// starter is a protocol with a first application exchange (HTTP
// request, AMQP handshake), timed as the first_byte phase.
type starter interface {
	start(cn *Conn, deadline time.Time) error
}

// idleCauser is a protocol whose own rules can end idle connections
// (an AMQP broker's handshake timeout): idleCause names that cause and
// explains it, or returns "".
type idleCauser interface {
	idleCause(cfg DialConfig, behaviour string, hi time.Duration, fs []idleFailure, conns []ConnRecord) (cause, note string)
}

// protocols maps each App to its protocol; App values outside it speak
// plain TCP.
var protocols = map[App]protocol{
	AppHTTPS: httpsProtocol{},
	AppAMQPS: amqpProtocol{},
	AppTCP:   echoProtocol{},
}

func protocolFor(app App) protocol {
	if p, ok := protocols[app]; ok {
		return p
	}
	return echoProtocol{}
}

// clientTLSConfig is the one place where hopcheck's TLS client settings
// are made, for every protocol that speaks TLS (and for the whoami
// request).
func clientTLSConfig(cfg DialConfig, nextProtos []string) *tls.Config {
	return &tls.Config{ServerName: cfg.ServerName, RootCAs: cfg.RootCAs, InsecureSkipVerify: cfg.Insecure, NextProtos: nextProtos}
}

// transferSpec is what the data test asks a protocol to move.
type transferSpec struct {
	path       string        // HTTPS: the large object
	stallAfter time.Duration // no progress this long is a stall
	timeout    time.Duration // for writing the request
}

// transfer is one large transfer in progress, as the data test watches it.
type transfer interface {
	// complete reports whether ev (an answer, not the end of the stream)
	// finishes the transfer, moved being the bytes received so far; status
	// is the HTTP status of a whole response (0 otherwise).
	complete(ev event, moved int64) (done bool, status int)
	// due is what arrived of what was due when the transfer ended: got of
	// want bytes (want -1: unknown).
	due(moved int64, cut *bodyCut) (got, want int64)
	// path is what was downloaded ("" for echo).
	path() string
	// truncation says how much arrived before a FIN.
	truncation(e transferEnd, cut *bodyCut) string
	// writeEnd is how the sending side ended (nil: still writing, done, or
	// nothing to send), waiting briefly.
	writeEnd() error
}
