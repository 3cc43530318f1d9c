package labtest

import (
	"context"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
)

// RequireRabbitMQ skips t, with the reason, when a real RabbitMQ broker
// cannot run here (no lab, or no rabbitmq-server package); with
// HOPCHECK_LAB=required it fails t instead (.ci/run installs the package).
func RequireRabbitMQ(t testing.TB) {
	t.Helper()
	Require(t)
	requireProgram(t, lab.RabbitMQMissing())
}

// StartRabbitMQ starts a real broker in l's server namespace and stops it
// when t ends (before the lab, whose cleanup was registered earlier). It
// logs how long the broker took to start and, when t failed, its log.
func StartRabbitMQ(t testing.TB, l *lab.Lab, opt lab.RabbitMQOptions) *lab.RabbitMQ {
	t.Helper()
	RequireRabbitMQ(t)
	r, err := l.StartRabbitMQ(context.Background(), opt)
	if err != nil {
		t.Fatalf("starting RabbitMQ: %v", err)
	}
	t.Logf("RabbitMQ in %s: TLS on %d, vhost %s, accepting connections after %v", l.ServerNS, r.Port, r.VHost, r.Started.Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("RabbitMQ log:\n%s", r.Log())
		}
		if err := r.Close(); err != nil {
			t.Errorf("stopping RabbitMQ: %v", err)
		}
	})
	return r
}
