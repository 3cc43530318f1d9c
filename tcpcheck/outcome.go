package tcpcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Outcome is how one connection (or one use of it) ended.
type Outcome string

// Outcomes.
const (
	OutcomeOK               Outcome = "ok"
	OutcomeRefused          Outcome = "refused"            // RST to our SYN
	OutcomeResetInHandshake Outcome = "reset-in-handshake" // RST after the TCP handshake, before the TLS/app handshake completed
	OutcomeReset            Outcome = "reset"              // RST after the handshake
	OutcomeTimeout          Outcome = "timeout"            // no answer in time (SYN, handshake, or request)
	OutcomeClosed           Outcome = "closed"             // FIN (EOF) where an answer was due
	OutcomeTLSError         Outcome = "tls-error"
	OutcomeAppError         Outcome = "app-error"
	// OutcomeLoginRefused: the AMQP broker refused the login with
	// Connection.Close (403 wrong or expired token, 530 vhost not
	// allowed); the connection's record carries the reply.
	OutcomeLoginRefused Outcome = "login-refused"
)

// Phase is the part of a connection an error happened in.
type Phase string

// Phases.
const (
	PhaseTCP     Phase = "tcp"
	PhaseTLS     Phase = "tls"
	PhaseApp     Phase = "app" // first application exchange
	PhaseRequest Phase = "request"
)

// appError marks a protocol-level failure (bad HTTP, no Connection.Start).
type appError struct{ msg string }

func (e *appError) Error() string { return e.msg }

// Classify maps an error of phase to an outcome. nil is ok.
func Classify(phase Phase, err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	var ae *appError
	var le *AMQPLoginError
	switch {
	case errors.As(err, &le):
		return OutcomeLoginRefused
	case errors.Is(err, syscall.ECONNREFUSED):
		if phase == PhaseTCP {
			return OutcomeRefused
		}
		return OutcomeReset
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		if phase == PhaseTCP || phase == PhaseTLS || phase == PhaseApp {
			if phase == PhaseTCP {
				return OutcomeRefused
			}
			return OutcomeResetInHandshake
		}
		return OutcomeReset
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	case errors.As(err, &ae):
		return OutcomeAppError
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if phase == PhaseTLS {
			return OutcomeTLSError
		}
		return OutcomeClosed
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return OutcomeTimeout
	}
	if phase == PhaseTLS || isTLSError(err) {
		return OutcomeTLSError
	}
	return OutcomeAppError
}

func isTLSError(err error) bool {
	var ra tls.RecordHeaderError
	var ae tls.AlertError
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ra) || errors.As(err, &ae) || errors.As(err, &ue) || errors.As(err, &he) ||
		errors.As(err, &ce) || errors.As(err, &ve)
}

// IsReset reports whether an outcome is a TCP reset of some kind.
func (o Outcome) IsReset() bool {
	return o == OutcomeRefused || o == OutcomeResetInHandshake || o == OutcomeReset
}
