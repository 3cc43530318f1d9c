package labtest

import (
	"context"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
)

// RequireHAProxy skips t, with the reason, when a real HAProxy cannot run
// here (no lab, or no haproxy package); with HOPCHECK_LAB=required it
// fails t instead (.ci/run installs the package).
func RequireHAProxy(t testing.TB) {
	t.Helper()
	Require(t)
	requireProgram(t, lab.HAProxyMissing())
}

// StartHAProxy starts a real HAProxy on one of l's routers and stops it
// when t ends (before the lab, whose cleanup was registered earlier); when
// t failed it logs HAProxy's output.
func StartHAProxy(t testing.TB, l *lab.Lab, opt lab.HAProxyOptions) *lab.HAProxy {
	t.Helper()
	RequireHAProxy(t)
	h, err := l.StartHAProxy(context.Background(), opt)
	if err != nil {
		t.Fatalf("starting HAProxy: %v", err)
	}
	t.Logf("HAProxy on router %d (hop %d, %s): VIP %s ports %v", h.Router, h.Hop, h.RouterAddr4, h.VIP4, h.Ports)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("HAProxy output:\n%s", h.Log())
		}
		if err := h.Close(); err != nil {
			t.Errorf("stopping HAProxy: %v", err)
		}
	})
	return h
}
