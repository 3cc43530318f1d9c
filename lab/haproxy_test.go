package lab

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHAProxyConfig(t *testing.T) {
	server := netip.MustParseAddr("198.18.3.2")
	for _, c := range []struct {
		name   string
		opt    HAProxyOptions
		want   []string
		absent []string
	}{
		{"timeouts, maxconn, FIN on close",
			HAProxyOptions{Ports: []int{443, 7}, TimeoutClient: 6 * time.Second, TimeoutServer: 1500 * time.Millisecond, MaxConn: 5},
			[]string{"\tmode tcp\n", "\ttimeout client 6000ms\n", "\ttimeout server 1500ms\n", "\tbind 198.18.254.1:443,198.18.254.1:7\n",
				"frontend lb\n\tbind 198.18.254.1:443,198.18.254.1:7\n\tmaxconn 5\n", "\tserver lab 198.18.3.2\n", "\tpidfile /d/p\n"},
			[]string{"nolinger", "mode http"}},
		{"nolinger", HAProxyOptions{Ports: []int{443}, TimeoutClient: time.Second, TimeoutServer: time.Second, MaxConn: 1, NoLinger: true},
			[]string{"\toption nolinger\n"}, nil},
	} {
		got := haproxyConfig(c.opt, HAProxyVIP4, server, "/d/p")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: config lacks %q:\n%s", c.name, w, got)
			}
		}
		for _, w := range c.absent {
			if strings.Contains(got, w) {
				t.Errorf("%s: config has %q:\n%s", c.name, w, got)
			}
		}
	}
}

func TestHAProxyRoutes(t *testing.T) {
	ns := []string{"x-r1", "x-r2", "x-r3"}
	r4 := []netip.Addr{link4(0, 2), link4(1, 2), link4(2, 2)}
	got := haproxyRoutes(ns, r4, 3, HAProxyVIP4)
	want := [][]string{
		{"-n", "x-r3", "addr", "add", "198.18.254.1/32", "dev", "lo"},
		{"-n", "x-r1", "route", "add", "198.18.254.1/32", "via", "198.18.1.2"},
		{"-n", "x-r2", "route", "add", "198.18.254.1/32", "via", "198.18.2.2"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("router 3: %q, want %q", got, want)
	}
	if got := haproxyRoutes(ns, r4, 1, HAProxyVIP4); len(got) != 1 {
		t.Errorf("router 1: %q, want the address only (the client's default route leads there)", got)
	}
	// No lab link, however long the chain, holds the VIP.
	for k := 0; k <= maxRouters; k++ {
		if linkPrefix4(k).Contains(HAProxyVIP4) {
			t.Errorf("link %d's prefix %s holds the VIP %s", k, linkPrefix4(k), HAProxyVIP4)
		}
	}
}
