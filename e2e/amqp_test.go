package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab"
	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// The lab broker closes AMQP connections that have not logged in after
// 10 s (RabbitMQ's default handshake_timeout). Logged in (token and
// vhost), the idle ladder holds connections past it on a clean path;
// without a token the close is reported as the handshake timeout, not as
// the broker's idle timeout, and is no finding (exit 0).
func TestTCPIdleAMQPHandshakeTimeout(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	l := buildLab(t, lab.Scenario{Name: "amqp-handshake", Routers: make([]lab.Router, 2)})
	target := fmt.Sprintf("amqps://%s:%d", l.Server4, l.Server.AMQPPort)
	t.Run("logged in", func(t *testing.T) {
		t.Parallel()
		rep, wall := tcpJSON(t, l, "idle", "--idle-max", "25s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--amqp-vhost", lab.VHost, target)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 {
			t.Fatalf("findings %+v; a clean path with login must give none; %s", rep.Findings, resultSummary(rep))
		}
		id := rep.Results[0].Idle
		if id == nil || id.TimeoutS != 0 || id.BracketS[1] != 0 || id.BracketS[0] < 15 || id.Cause != "" {
			t.Fatalf("idle %+v: want no timeout up to 25s, connections alive well past the 10s handshake timeout", id)
		}
		t.Logf("logged in: survived %.1fs idle, wall %v", id.BracketS[0], wall.Round(100*time.Millisecond))
	})
	t.Run("no token", func(t *testing.T) {
		t.Parallel()
		rep, wall := tcpJSON(t, l, "idle", "--idle-max", "25s", "--ca-file", l.CAFile, target)
		if len(rep.Findings) != 0 || len(rep.Results) != 1 {
			t.Fatalf("findings %+v: the handshake timeout is no idle finding; %s", rep.Findings, resultSummary(rep))
		}
		id := rep.Results[0].Idle
		if id == nil || id.Cause != tcpcheck.IdleCauseAMQPHandshake || id.Behaviour != "close" || !strings.Contains(id.Note, "token") {
			t.Fatalf("idle %+v: want cause %s, behaviour close and a note asking for the token", id, tcpcheck.IdleCauseAMQPHandshake)
		}
		// The handshake timeout runs from connect: every connection closed
		// while idle lived about 10 s, whatever its idle age.
		closed := 0
		for _, c := range rep.Results[0].Connections {
			if c.Outcome != tcpcheck.OutcomeClosed {
				continue
			}
			closed++
			if life := c.EndS - c.StartS; life < 9.5 || life > 11 {
				t.Errorf("connection %d closed %.2fs after it was opened, want about 10s", c.ID, life)
			}
		}
		if closed == 0 {
			t.Fatalf("no connection was closed; %s", resultSummary(rep))
		}
		t.Logf("no token: %d connections closed at the handshake timeout (%s), wall %v", closed, id.Note, wall.Round(100*time.Millisecond))
	})
}

// Router 2 of 3 resets flows idle ≥ 8 s: with login on, the AMQP idle
// reset is still that hop's.
func TestTCPIdleAMQPResetByRouterLoggedIn(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 3)
	rs[1].IdleTimeout, rs[1].IdleAction = 8*time.Second, lab.IdleActionReset
	l := buildLab(t, lab.Scenario{Name: "amqp-idle-reset", Routers: rs})
	target := fmt.Sprintf("amqps://%s:%d", l.Server4, l.Server.AMQPPort)
	rep, _ := tcpJSON(t, l, "idle", "--idle-max", "20s", "--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--amqp-vhost", lab.VHost, target)
	f := oneFinding(t, rep, tcpcheck.KindIdleReset)
	if f.Origin != probe.OriginMiddlebox || f.Hop != 2 || f.HopAddress != l.Router4[1].String() || f.IdleTimeoutS < 7 || f.IdleTimeoutS > 9 {
		t.Errorf("idle-reset origin %s hop %d (%s) after %.2fs; want middlebox hop 2 (%s), 8±1s; evidence %v",
			f.Origin, f.Hop, f.HopAddress, f.IdleTimeoutS, l.Router4[1], f.Evidence)
	}
}

// run with the API and the feed target and the token: the AMQP vhost is
// learnt from whoami.xml and the AMQP idle ladder runs clean past the
// broker's handshake timeout.
func TestRunAMQPLearnsVHostFromWhoami(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	l := buildLab(t, lab.Scenario{Name: "run-amqp-login", Routers: make([]lab.Router, 2)})
	r := runIn(t, l, l.ClientNS, nil, "--format", "json", "run", "-4", "--profile", "quick", "--idle-max", "20s",
		"--target", "https://"+labHost, "--target", fmt.Sprintf("amqps://%s:%d", labHost, l.Server.AMQPPort),
		"--ca-file", l.CAFile, "--token-file", l.TokenFile())
	if r.code != 0 {
		t.Fatalf("exit %d, want 0 (clean path)\nstdout %.2000s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	rep := decodeJSON[diagnose.Report](t, r)
	if rep.AMQP == nil || rep.AMQP.VHost != lab.VHost || rep.AMQP.Source != "whoami" {
		t.Fatalf("amqp login %+v; want vhost %s learnt from whoami", rep.AMQP, lab.VHost)
	}
	var amqp *diagnose.TargetReport
	for i := range rep.Targets {
		if rep.Targets[i].App == "amqps" {
			amqp = &rep.Targets[i]
		}
	}
	if amqp == nil {
		t.Fatalf("no amqps target in %d targets", len(rep.Targets))
	}
	idle, ok := amqp.Tests["idle"]
	if !ok || idle.Idle == nil || idle.Idle.TimeoutS != 0 || idle.Idle.BracketS[0] < 12 || idle.Idle.Cause != "" {
		t.Fatalf("amqps idle %+v: want no timeout up to 20s with login", idle.Idle)
	}
	if len(rep.Findings) != 0 || len(rep.Warnings) != 0 {
		t.Errorf("findings %v, warnings %q: want none", kindsOf(rep), rep.Warnings)
	}
}
