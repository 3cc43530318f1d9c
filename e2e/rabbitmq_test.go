package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/lab/labtest"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// hopcheck's AMQP against a real RabbitMQ (the Debian rabbitmq-server
// package) in the server namespace: TLS on 5671, the token as user name
// through the HTTP auth backend, vhost /unifiedfeed/<id>, RabbitMQ's own
// handshake timeout (10 s) and refusals. One broker for all cases, which
// run in parallel (they mostly wait). Skips without the package, fails
// under HOPCHECK_LAB=required.
func TestRabbitMQ(t *testing.T) {
	t.Parallel() // mostly waiting: the broker's start, the handshake timeout, the idle ladder
	labtest.RequireRabbitMQ(t)
	// lab-serve's broker double moves off 5671 for the real one.
	l := buildLab(t, lab.Scenario{Name: "rabbitmq", Routers: make([]lab.Router, 2), Server: lab.Server{AMQPPort: 15671}})
	rmq := labtest.StartRabbitMQ(t, l, lab.RabbitMQOptions{BookmakerID: 42})
	target := fmt.Sprintf("amqps://%s:%d", l.Server4, rmq.Port)
	wrongToken := filepath.Join(t.TempDir(), "wrong-token")
	if err := os.WriteFile(wrongToken, []byte("not-the-"+l.Server.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("no token: the broker's handshake timeout is named", func(t *testing.T) {
		t.Parallel()
		rep, wall := tcpJSON(t, l, "idle", "--idle-max", "25s", "--ca-file", l.CAFile, target)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 {
			t.Fatalf("findings %+v: the handshake timeout is no idle finding; %s", rep.Findings, resultSummary(rep))
		}
		id := rep.Results[0].Idle
		if id == nil || id.Cause != tcpcheck.IdleCauseAMQPHandshake || id.Behaviour != "close" {
			t.Fatalf("idle %+v: want cause %s, behaviour close; %s", id, tcpcheck.IdleCauseAMQPHandshake, resultSummary(rep))
		}
		t.Logf("no token: idle cause %s (%s), wall %v", id.Cause, id.Note, wall.Round(100*time.Millisecond))
	})
	t.Run("token and vhost: idle held past 20s", func(t *testing.T) {
		t.Parallel()
		rep, wall := tcpJSON(t, l, "idle", "--idle-max", "25s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--amqp-vhost", rmq.VHost, target)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 {
			t.Fatalf("findings %+v: a clean path with login must give none; %s", rep.Findings, resultSummary(rep))
		}
		id := rep.Results[0].Idle
		if id == nil || id.TimeoutS != 0 || id.BracketS[1] != 0 || id.BracketS[0] <= 20 || id.Cause != "" {
			t.Fatalf("idle %+v: want no timeout up to 25s, a connection idle past 20s; %s", id, resultSummary(rep))
		}
		t.Logf("logged in: survived %.1fs idle, wall %v", id.BracketS[0], wall.Round(100*time.Millisecond))
	})
	t.Run("wrong token: refused login, 403 named", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, l, l.ClientNS, nil, "--format", "json", "tcp", "connect", "--count", "2", "--rate", "5",
			"--ca-file", l.CAFile, "--token-file", wrongToken, "--amqp-vhost", rmq.VHost, target)
		rep := decodeJSON[tcpcheck.Report](t, r)
		if rep.TLSProfile != tcpcheck.TLSProfileJava {
			t.Errorf("tls_profile %q, want the default java", rep.TLSProfile)
		}
		if len(rep.Results) != 1 || len(rep.Results[0].Connections) != 2 {
			t.Fatalf("exit %d; want one result with 2 connections; %s", r.code, resultSummary(rep))
		}
		for _, c := range rep.Results[0].Connections {
			if c.Phase != tcpcheck.PhaseApp || !strings.Contains(c.Error, "403") || !strings.Contains(c.Error, "ACCESS_REFUSED") {
				t.Errorf("connection %d: outcome %s phase %s error %q; want the broker's 403 ACCESS_REFUSED in the app phase", c.ID, c.Outcome, c.Phase, c.Error)
			}
			// With authentication_failure_close announced RabbitMQ answers at
			// once; without, it would drop the socket after 3 s, unexplained.
			if c.EndS-c.StartS > 2 {
				t.Errorf("connection %d: refused after %.2fs, want the broker's Close at once", c.ID, c.EndS-c.StartS)
			}
		}
		if strings.Contains(r.stdout+r.stderr, "not-the-") {
			t.Errorf("the (wrong) token appears in the output")
		}
	})
}
