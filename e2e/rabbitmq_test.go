package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
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
	// A refused login: outcome login-refused with the broker's reply, the
	// test stops at its first connection (one refused login, not --count),
	// exit 3 with one line naming the reply.
	for _, tc := range []struct {
		name, tokenFile, vhost string
		code                   uint16
		text                   string
	}{
		{"wrong token: 403 named, exit 3", wrongToken, rmq.VHost, 403, "ACCESS_REFUSED"},
		{"wrong vhost: 530 named, exit 3", l.TokenFile(), "/unifiedfeed/7", 530, "NOT_ALLOWED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runIn(t, l, l.ClientNS, nil, "--format", "json", "tcp", "connect", "--count", "5", "--rate", "5",
				"--ca-file", l.CAFile, "--token-file", tc.tokenFile, "--amqp-vhost", tc.vhost, target)
			rep := decodeJSON[tcpcheck.Report](t, r)
			if rep.TLSProfile != tcpcheck.TLSProfileJava {
				t.Errorf("tls_profile %q, want the default java", rep.TLSProfile)
			}
			if r.code != 3 || len(rep.Results) != 1 || len(rep.Findings) != 0 {
				t.Fatalf("exit %d, findings %v; want exit 3, one result, no finding; %s", r.code, rep.Findings, resultSummary(rep))
			}
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); !strings.Contains(lines[len(lines)-1], fmt.Sprint(tc.code)) {
				t.Errorf("stderr %q: want its last line to name %d", r.stderr, tc.code)
			}
			res := rep.Results[0]
			if res.LoginRefused == nil || res.LoginRefused.Code != tc.code || !strings.Contains(res.LoginRefused.Text, tc.text) || !strings.Contains(res.Error, fmt.Sprint(tc.code)) {
				t.Fatalf("login_refused %+v error %q; want %d %s", res.LoginRefused, res.Error, tc.code, tc.text)
			}
			if len(res.Connections) != 1 {
				t.Errorf("%d connections: want the test to stop at the first refused login", len(res.Connections))
			}
			for _, c := range res.Connections {
				if c.Outcome != tcpcheck.OutcomeLoginRefused || c.Phase != tcpcheck.PhaseApp || c.AMQPReply == nil || c.AMQPReply.Code != tc.code {
					t.Errorf("connection %d: outcome %s phase %s reply %+v; want login-refused %d in the app phase", c.ID, c.Outcome, c.Phase, c.AMQPReply, tc.code)
				}
				// With authentication_failure_close announced RabbitMQ answers
				// at once; without, it would drop the socket after 3 s, unexplained.
				if c.EndS-c.StartS > 2 {
					t.Errorf("connection %d: refused after %.2fs, want the broker's Close at once", c.ID, c.EndS-c.StartS)
				}
			}
			if strings.Contains(r.stdout+r.stderr, "not-the-") {
				t.Errorf("the (wrong) token appears in the output")
			}
		})
	}
	t.Run("soak, wrong vhost: refused before the soak, exit 3", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, l, l.ClientNS, nil, "--format", "json", "soak", "--duration", "1m",
			"--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--amqp-vhost", "/unifiedfeed/7", target)
		if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code != 3 || r.stdout != "" || !strings.Contains(lines[len(lines)-1], "530") {
			t.Fatalf("exit %d stdout %.200q stderr %q; want exit 3, no report, the last line naming 530", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("run, wrong token: a run error naming 403, exit 3", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", "-4", "--profile", "quick",
			"--target", target, "--ca-file", l.CAFile, "--token-file", wrongToken, "--amqp-vhost", rmq.VHost)
		rep := decodeJSON[diagnose.Report](t, r)
		if r.code != 3 || len(rep.Targets) != 1 {
			t.Fatalf("exit %d, %d targets; want exit 3\nstderr %s", r.code, len(rep.Targets), r.stderr)
		}
		if rep.AMQP == nil || rep.AMQP.Refused == nil || rep.AMQP.Refused.Code != 403 || !strings.Contains(rep.Targets[0].Error, "403") {
			t.Fatalf("amqp %+v, target error %q; want the refusal 403 named", rep.AMQP, rep.Targets[0].Error)
		}
		if !strings.Contains(r.stderr, "403") || strings.Contains(r.stdout+r.stderr, "not-the-") {
			t.Errorf("stderr %q: want 403 named, never the token", r.stderr)
		}
		refused := 0
		for _, res := range rep.Targets[0].Tests {
			refused += res.Counts[tcpcheck.OutcomeLoginRefused]
		}
		if refused != 1 {
			t.Errorf("%d refused logins in the run: want one (the first test stops, later tests do not dial)", refused)
		}
	})
}
