package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A real HAProxy load balancer in the lab: the Debian haproxy package run
// on a lab router in TCP mode (an L4 load balancer: TLS passes through to
// the lab server), listening on a virtual address (VIP) that only that
// router holds. The client reaches the VIP through the routers before it;
// the routers after it, and the server, see HAProxy's own connection from
// the router's server-side address. One of the UOF problem's causes: a
// load balancer that ends idle connections on its timeout.

// HAProxyBinary is the Debian package's daemon.
const HAProxyBinary = "/usr/sbin/haproxy"

// HAProxyVIP4 is the load balancer's virtual address: in 198.18.254.0/24,
// a link number the chain never reaches (maxRouters), so no lab link holds it.
var HAProxyVIP4 = netip.AddrFrom4([4]byte{198, 18, 254, 1})

// HAProxyMissing returns why a real HAProxy cannot run here, or "".
func HAProxyMissing() string {
	if _, err := os.Stat(HAProxyBinary); err != nil {
		return fmt.Sprintf("HAProxy tests need the haproxy package (%s: %v)", HAProxyBinary, err)
	}
	return ""
}

// HAProxyOptions configure StartHAProxy. Zero values mean the defaults.
type HAProxyOptions struct {
	// Router is the 1-based router that runs the load balancer; 0 = the
	// last one (the box in front of the server, where data centres put it).
	Router int
	// Ports the frontend listens on at the VIP, each forwarded to the same
	// port of the lab server; nil = the server's HTTPS, AMQP and echo ports.
	Ports []int
	// TimeoutClient and TimeoutServer are HAProxy's `timeout client` and
	// `timeout server`: inactivity toward the client and toward the server
	// after which it closes both sides. 0 = 50s (HAProxy's sample config).
	TimeoutClient, TimeoutServer time.Duration
	// MaxConn is the frontend's maxconn: connections beyond it wait in the
	// kernel's accept queue (HAProxy does not reset them). 0 = 2000.
	MaxConn int
	// NoLinger sets `option nolinger` on both sides: HAProxy ends its
	// connections with a reset instead of a FIN.
	NoLinger bool
	// StartWait bounds the wait for the VIP to accept connections; 0 = 10s.
	StartWait time.Duration
}

// HAProxy is a load balancer started by StartHAProxy. Close it (before the lab).
type HAProxy struct {
	VIP4   netip.Addr // the address clients connect to
	Router int        // 1-based router it runs on
	// Hop is the TTL distance from the client to the load balancer: the
	// hop that answers the client's SYN (its router's).
	Hop int
	// RouterAddr4 is the router's address toward the client: what the
	// router's ICMP answers to traces come from.
	RouterAddr4 netip.Addr
	Ports       []int

	ns, dir string
	d       *daemon

	mu       sync.Mutex
	closed   bool
	closeErr error
}

// haproxyConfig renders haproxy.cfg: TCP mode, one frontend on the VIP's
// ports, one backend whose server keeps the port the client connected to.
func haproxyConfig(opt HAProxyOptions, vip, server netip.Addr, pidFile string) string {
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }
	binds := make([]string, len(opt.Ports))
	for i, p := range opt.Ports {
		binds[i] = netip.AddrPortFrom(vip, uint16(p)).String()
	}
	lines := []string{
		"global",
		"\tpidfile " + pidFile,
		"\tmaxconn " + strconv.Itoa(opt.MaxConn+100),
		"defaults",
		"\tmode tcp",
		"\ttimeout connect 5s",
		"\ttimeout client " + ms(opt.TimeoutClient),
		"\ttimeout server " + ms(opt.TimeoutServer),
	}
	if opt.NoLinger {
		lines = append(lines, "\toption nolinger")
	}
	lines = append(lines,
		"frontend lb",
		"\tbind "+strings.Join(binds, ","),
		"\tmaxconn "+strconv.Itoa(opt.MaxConn),
		"\tdefault_backend servers",
		"backend servers",
		// No port: the port the client connected to.
		"\tserver lab "+server.String(),
	)
	return strings.Join(lines, "\n") + "\n"
}

// haproxyRoutes plans the `ip` commands that give router k (1-based) the
// VIP and route it there from the routers before it; the client's default
// route already leads to router 1. Routers after k and the server never
// see the VIP: HAProxy connects to the server from its own address.
func haproxyRoutes(routerNS []string, router4 []netip.Addr, k int, vip netip.Addr) [][]string {
	cmds := [][]string{{"-n", routerNS[k-1], "addr", "add", vip.String() + "/32", "dev", "lo"}}
	for j := 1; j < k; j++ {
		cmds = append(cmds, []string{"-n", routerNS[j-1], "route", "add", vip.String() + "/32", "via", router4[j].String()})
	}
	return cmds
}

// StartHAProxy starts HAProxy on one of l's routers, listening on
// HAProxyVIP4, and waits until the VIP accepts connections. Its files
// (config, pid file, log) live in a directory of l.Dir; it runs in the
// foreground (-db) in its own process group. IPv4 only. Close stops it.
func (l *Lab) StartHAProxy(ctx context.Context, opt HAProxyOptions) (*HAProxy, error) {
	if why := HAProxyMissing(); why != "" {
		return nil, errors.New(why)
	}
	if len(l.RouterNS) == 0 {
		return nil, errors.New("haproxy: the lab has no router to run on")
	}
	if opt.Router == 0 {
		opt.Router = len(l.RouterNS)
	}
	if opt.Router < 1 || opt.Router > len(l.RouterNS) {
		return nil, fmt.Errorf("haproxy: router %d outside 1..%d", opt.Router, len(l.RouterNS))
	}
	if l.TwinNS != "" || len(l.DetourNS) > 0 {
		// The VIP's routes assume a plain chain.
		return nil, errors.New("haproxy: needs a plain chain (no ECMP twin, no return detour)")
	}
	if opt.Ports == nil {
		opt.Ports = []int{l.Server.HTTPSPort, l.Server.AMQPPort, l.Server.EchoPort}
	}
	if opt.TimeoutClient == 0 {
		opt.TimeoutClient = 50 * time.Second
	}
	if opt.TimeoutServer == 0 {
		opt.TimeoutServer = 50 * time.Second
	}
	if opt.MaxConn == 0 {
		opt.MaxConn = 2000
	}
	if opt.StartWait == 0 {
		opt.StartWait = 10 * time.Second
	}
	if opt.TimeoutClient < 0 || opt.TimeoutServer < 0 || opt.MaxConn < 0 || len(opt.Ports) == 0 {
		return nil, fmt.Errorf("haproxy: negative timeout or maxconn, or no port: %+v", opt)
	}
	// Router k answers probes of TTL k; the load balancer's SYN-ACK
	// comes from router k itself.
	h := &HAProxy{VIP4: HAProxyVIP4, Router: opt.Router, Hop: opt.Router, RouterAddr4: l.Router4[opt.Router-1],
		Ports: opt.Ports, ns: l.RouterNS[opt.Router-1], dir: filepath.Join(l.Dir, "haproxy")}
	for _, c := range haproxyRoutes(l.RouterNS, l.Router4, opt.Router, HAProxyVIP4) {
		if err := runCmd(ctx, "", "ip", c...); err != nil {
			return nil, fmt.Errorf("haproxy: VIP: %w", err)
		}
	}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	cfg := filepath.Join(h.dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(opt, HAProxyVIP4, l.Server4, filepath.Join(h.dir, "haproxy.pid"))), 0o600); err != nil {
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	logPath := filepath.Join(h.dir, "haproxy.log")
	// SIGTERM if this process dies: HAProxy stops cleanly on it.
	d, err := startDaemon("haproxy", h.ns, logPath, nil, syscall.SIGTERM, HAProxyBinary, "-db", "-f", cfg)
	if err != nil {
		return nil, err
	}
	h.d = d
	ok := false
	defer func() {
		if !ok {
			h.Close()
		}
	}()
	// Ready when the VIP accepts a connection on the router itself.
	addr := netip.AddrPortFrom(HAProxyVIP4, uint16(opt.Ports[0])).String()
	if err := d.waitAccepting(ctx, l, h.ns, addr, opt.StartWait, 50*time.Millisecond, func() string { return tail(logPath, 1500) }); err != nil {
		return nil, err
	}
	ok = true
	return h, nil
}

// Log returns the end of HAProxy's output.
func (h *HAProxy) Log() string { return tail(filepath.Join(h.dir, "haproxy.log"), 4000) }

// Close stops HAProxy (SIGTERM to its process group, SIGKILL after 5 s,
// then any haproxy left in its namespace). Idempotent.
func (h *HAProxy) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return h.closeErr
	}
	h.closed = true
	if h.d != nil {
		h.closeErr = h.d.stop(syscall.SIGTERM, 5*time.Second, "haproxy")
	}
	return h.closeErr
}
