package labtest

import (
	"context"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
)

// RequireNginx skips t, with the reason, when a real nginx cannot run
// here (no lab, or no nginx-light package); with HOPCHECK_LAB=required it
// fails t instead (.ci/run installs the package).
func RequireNginx(t testing.TB) {
	t.Helper()
	Require(t)
	requireProgram(t, lab.RealNginxMissing())
}

// StartNginx starts a real nginx in l's server namespace and stops it when
// t ends (before the lab, whose cleanup was registered earlier). When t
// failed it logs nginx's error and access logs.
func StartNginx(t testing.TB, l *lab.Lab, opt lab.NginxOptions) *lab.Nginx {
	t.Helper()
	RequireNginx(t)
	n, err := l.StartNginx(context.Background(), opt)
	if err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	t.Logf("nginx in %s: TLS on %d, keepalive_timeout %v", l.ServerNS, n.Port, opt.KeepaliveTimeout)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx error log:\n%s\naccess log:\n%s", n.Log(), n.AccessLog())
		}
		if err := n.Close(); err != nil {
			t.Errorf("stopping nginx: %v", err)
		}
	})
	return n
}
