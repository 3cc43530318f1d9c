package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Router is one hop of the chain and the middlebox behaviour it shows.
type Router struct {
	NoICMP          bool          // sends no ICMP errors (time-exceeded, unreachable, v6 packet-too-big); neighbour discovery keeps working
	ICMPRateLimit   int           // ICMP errors per second this router may send, burst the same (0 = unlimited)
	DropTCPPort     uint16        // silently drop forwarded TCP to this destination port (client to server)
	IdleTimeout     time.Duration // conntrack established timeout (rounded up to seconds); a flow idle longer loses its state
	IdleAction      string        // for a packet of an expired flow: "reset" (TCP reset) or "drop" (default)
	LinkMTU         int           // MTU of this router's link toward the server (both ends); 0 = 1500
	HideFragNeeded  bool          // drop this router's ICMP frag-needed / ICMPv6 packet-too-big (PMTU black hole)
	MSSClamp        int           // rewrite the MSS option of forwarded SYNs and SYN-ACKs to this value
	Masquerade      bool          // source NAT out of the server-side interface
	SYNResetPercent int           // reject this percentage of forwarded SYNs with a TCP reset
	// Attribution knobs (lab/attrib.go).
	// ReturnDetour sends every packet this router passes toward the client,
	// its own and those it forwards, through this many extra routers
	// (1..3) before the router on its left: a return path longer than the
	// way there, from this hop on. The forward path is unchanged. Router 2
	// or later, at most one router per scenario.
	ReturnDetour int
	// InitialTTL is the TTL / hop limit this router's own packets (ICMP
	// errors, resets) start from: 0 the kernel's 64, or 128 or 255.
	// Forwarded packets keep theirs.
	InitialTTL int
	// ForgeServerTTL makes this router's own TCP resets start from the TTL
	// that makes them arrive at the client with the server's TTL.
	ForgeServerTTL bool
	// ResetAfterBytes resets a TCP flow once conntrack has counted more
	// than this many bytes of it, both directions together (IP headers
	// included): the client's next packet draws a reset, and from then on
	// so does every packet of the server. 0 = never.
	ResetAfterBytes int64

	// Router classes of ICMP generation (issue 9), beyond the kernel's
	// default per-peer limit that every node keeps:
	// ICMPBurst is the burst of ICMPRateLimit (0 = the rate itself), e.g.
	// rate 2 burst 3 for "a few answers per second";
	ICMPBurst int
	// ICMPEveryNth makes the router send only every Nth ICMP error (a
	// policer that lets one in N through); 0 or 1 = every one.
	ICMPEveryNth int

	// InjectRST runs an on-path RST injector on this router (lab/inject.go):
	// the router forwards everything, and a packet program beside it
	// injects a reset toward the client, so the server's answer still
	// arrives after it. nil = none.
	InjectRST *Injector
}

// Server configures the lab server. Zero values mean the defaults.
type Server struct {
	HTTPSPort int           // default 443: TLS HTTP server
	AMQPPort  int           // default 5671: TLS AMQP responder (login, then holds the connection)
	EchoPort  int           // default 7: plain TCP echo
	IdleClose time.Duration // idle close of every connection (HTTP keep-alive, AMQP, echo); 0 = 120s
	MaxConns  int           // open connections across ports; beyond it, new ones are reset. 0 = no cap
	LargeSize int           // bytes of GET /large; 0 = 8 MiB
	Token     string        // valid x-access-token and AMQP user name; "" = "lab-token"
	// HandshakeTimeout closes AMQP connections that have not completed the
	// login (Start-Ok, Tune-Ok, Connection.Open) by then, as RabbitMQ's
	// handshake_timeout does; 0 = 10s, its default.
	HandshakeTimeout time.Duration
	// ExtraAddresses gives the server that many more addresses on its
	// link (198.18.N.3..., 2001:db8:0:N::3...), behind the same routers:
	// traces to many addresses (Lab.ServerExtra4/6). 0 = none; at most 200.
	ExtraAddresses int
	// SmallCertChain serves a one-certificate ECDSA chain (a TLS server
	// flight of about 1 KB, one segment below any IPv6-capable MTU)
	// instead of the public-CA-shaped RSA leaf plus intermediate: a lab
	// where the handshake passes a PMTU black hole toward the client and
	// only a download's full-size segments die.
	SmallCertChain bool
}

// Server defaults.
const (
	DefaultHTTPSPort = 443
	DefaultAMQPPort  = 5671
	DefaultEchoPort  = 7
	DefaultIdleClose = 120 * time.Second
	DefaultLargeSize = 8 << 20
	DefaultToken     = "lab-token"
	// DefaultHandshakeTimeout is RabbitMQ's default handshake_timeout.
	DefaultHandshakeTimeout = 10 * time.Second
	// VHost is the AMQP virtual host the lab broker accepts; its whoami.xml
	// names it as virtual_host, as Sportradar's does /unifiedfeed/<id>.
	VHost = "/lab"
	// ServerName is in the server certificate's SANs besides its addresses.
	ServerName = "lab.hopcheck.test"
)

// WithDefaults returns s with zero fields set to their defaults.
func (s Server) WithDefaults() Server {
	if s.HTTPSPort == 0 {
		s.HTTPSPort = DefaultHTTPSPort
	}
	if s.AMQPPort == 0 {
		s.AMQPPort = DefaultAMQPPort
	}
	if s.EchoPort == 0 {
		s.EchoPort = DefaultEchoPort
	}
	if s.IdleClose == 0 {
		s.IdleClose = DefaultIdleClose
	}
	if s.LargeSize == 0 {
		s.LargeSize = DefaultLargeSize
	}
	if s.Token == "" {
		s.Token = DefaultToken
	}
	if s.HandshakeTimeout == 0 {
		s.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return s
}

// Scenario declares a lab: the routers from the client side to the server
// side, and the server.
type Scenario struct {
	Name    string
	Routers []Router
	Server  Server
	// ECMPRouter, when set to k (2..len(Routers)), puts a twin of router k
	// (same knobs) in parallel with it, between router k-1 and the node
	// after k: router k-1 spreads flows over both by an ECMP route hashed
	// on the 5-tuple, so that Paris traces see two responders at hop k.
	// Return traffic takes router k alone. 0 = a plain chain.
	ECMPRouter int
}

// Options control how a lab is built.
type Options struct {
	// Binary is the hopcheck binary that runs `lab-serve` in the server
	// namespace; "" = this executable.
	Binary string
	// Prefix of namespace names; "" = "hc".
	Prefix string
	// Log receives progress lines; nil = silent.
	Log func(format string, args ...any)
}

// DefaultPrefix starts the names of lab namespaces.
const DefaultPrefix = "hc"

// Lab is a built lab. Close it.
type Lab struct {
	ID  string // unique per lab: prefix, creator pid, "x", random hex
	Dir string // temp dir: CA, cert, key, token, server log

	ClientNS, ServerNS string
	RouterNS           []string

	Client4, Server4, Client6, Server6 netip.Addr
	// ServerExtra4/6 are the server's Server.ExtraAddresses.
	ServerExtra4, ServerExtra6 []netip.Addr
	// Router4[i] and Router6[i] are the addresses router i+1 answers from:
	// its client-facing interface.
	Router4, Router6 []netip.Addr
	// TwinNS is the namespace of the twin of router Scenario.ECMPRouter,
	// and Twin4/Twin6 the addresses it answers from ("" and invalid when
	// the scenario has none). AfterTwin4/AfterTwin6 are the next node's
	// addresses on the twin's link: the kernel sends ICMPv6 errors from
	// the interface a packet came in on, so the next hop answers flows
	// through the twin from AfterTwin6 (ICMPv4 errors take the address
	// toward the client, Router4 as usual).
	TwinNS                 string
	Twin4, Twin6           netip.Addr
	AfterTwin4, AfterTwin6 netip.Addr
	// DetourNS are the namespaces of a Router.ReturnDetour's extra routers.
	DetourNS []string

	CAFile string // PEM CA of the server cert (SANs: server addresses, ServerName)
	Server Server // the server configuration in force (defaults applied)

	log       func(format string, args ...any)
	server    *exec.Cmd
	serverEnd chan struct{} // closed when the server process has been reaped
	injectors []*labProcess // Router.InjectRST's processes (lab/inject.go)

	mu        sync.Mutex
	closed    bool
	closeErr  error
	stopWatch func()
}

// netnsDir is where `ip netns` keeps its namespace handles.
const netnsDir = "/run/netns"

// Build creates the namespaces, links, routes and rules of sc, writes the
// certificates and starts the lab server. On any error it tears down what
// it built. It first removes stale namespaces of dead earlier runs.
func Build(ctx context.Context, sc Scenario, opt Options) (*Lab, error) {
	start := time.Now()
	prefix := opt.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	logf := opt.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	binary := opt.Binary
	if binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("lab: finding this executable for lab-serve: %w", err)
		}
		binary = exe
	}
	if err := CleanupStale(prefix); err != nil {
		logf("lab: removing stale namespaces: %v", err)
	}
	id, err := newID(prefix)
	if err != nil {
		return nil, err
	}
	topo, err := planTopology(id, sc)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	dir, err := os.MkdirTemp("", id+"-")
	if err != nil {
		return nil, fmt.Errorf("lab: creating temp dir: %w", err)
	}
	l := &Lab{
		ID: id, Dir: dir,
		ClientNS: topo.clientNS, ServerNS: topo.serverNS, RouterNS: topo.routerNS,
		Client4: topo.client4, Client6: topo.client6, Server4: topo.server4, Server6: topo.server6,
		Router4: topo.router4, Router6: topo.router6,
		ServerExtra4: topo.serverExtra4, ServerExtra6: topo.serverExtra6,
		TwinNS: topo.twinNS, Twin4: topo.twin4, Twin6: topo.twin6, AfterTwin4: topo.afterTwin4, AfterTwin6: topo.afterTwin6,
		Server: sc.Server.WithDefaults(),
		log:    logf,
	}
	l.DetourNS = topo.detourNS
	if err := l.build(ctx, topo, binary); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, cerr)
		}
		return nil, fmt.Errorf("lab %s (scenario %q): %w", id, sc.Name, err)
	}
	if err := l.isolateDNS(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, cerr)
		}
		return nil, fmt.Errorf("lab %s: %w", id, err)
	}
	logf("lab %s: %d routers built in %v", id, len(sc.Routers), time.Since(start).Round(time.Millisecond))
	return l, nil
}

// etcNetnsDir holds per-namespace files that `ip netns exec` bind-mounts
// over /etc.
const etcNetnsDir = "/etc/netns"

// isolateDNS gives the client namespace its own hosts file and resolver
// configuration: ServerName resolves to the server's IPv4 and IPv6
// addresses, and any DNS query goes to the namespace's own loopback, where
// nothing listens, so that no lookup from inside the lab ever leaves it.
// Only processes started with `ip netns exec` (l.Command) see them.
func (l *Lab) isolateDNS() error {
	dir := filepath.Join(etcNetnsDir, l.ClientNS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("isolating DNS: %w", err)
	}
	hosts := fmt.Sprintf("127.0.0.1 localhost\n::1 localhost\n%s %s\n%s %s\n", l.Server4, ServerName, l.Server6, ServerName)
	for i, a := range l.Router4 {
		hosts += fmt.Sprintf("%s r%d.%s\n%s r%d.%s\n", a, i+1, ServerName, l.Router6[i], i+1, ServerName)
	}
	files := map[string]string{
		"hosts":       hosts,
		"resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("isolating DNS: %w", err)
		}
	}
	return nil
}

// build creates namespaces and veths in one root batch, then configures
// every namespace and starts the server, all in parallel.
func (l *Lab) build(ctx context.Context, topo topology, binary string) error {
	if err := runCmd(ctx, strings.Join(topo.rootBatch, "\n")+"\n", "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("creating namespaces and links: %w", err)
	}
	errs := make(chan error, len(topo.nodes)+1)
	for _, nd := range topo.nodes {
		go func() { errs <- configureNode(ctx, nd) }()
	}
	go func() {
		ca, cert, key, err := writeCerts(l.Dir, []netip.Addr{l.Server4, l.Server6}, l.Server.SmallCertChain)
		if err == nil {
			l.CAFile = ca
			err = l.startServer(ctx, binary, cert, key)
		}
		errs <- err
	}()
	var all []error
	for range len(topo.nodes) + 1 {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return errors.Join(all...)
	}
	for _, nd := range topo.nodes {
		if err := waitLinksReady(ctx, nd.ns); err != nil {
			return err
		}
	}
	return l.startInjectors(ctx, topo.injectors, binary)
}

// waitLinksReady waits until every lab interface in ns is operationally up
// and has its IPv6 link-local address: before that, IPv6 packets are lost.
func waitLinksReady(ctx context.Context, ns string) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		var notReady string
		err := InNamespace(ns, func() error {
			ifaces, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, ifc := range ifaces {
				if !isLabInterface(ifc.Name) {
					continue
				}
				if ifc.Flags&net.FlagRunning == 0 {
					notReady = ifc.Name + " not running"
					return nil
				}
				addrs, err := ifc.Addrs()
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(addrs, func(a net.Addr) bool {
					ipn, ok := a.(*net.IPNet)
					return ok && ipn.IP.IsLinkLocalUnicast()
				}) {
					notReady = ifc.Name + " has no IPv6 link-local address"
					return nil
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: checking links: %w", ns, err)
		}
		if notReady == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s after 3s", ns, notReady)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// configureNode loads the ruleset first (its ct rule loads conntrack, whose
// sysctls exist only then), then the sysctls (DAD off before links go up),
// then addresses, links and routes.
func configureNode(ctx context.Context, nd node) error {
	if nd.ruleset != "" {
		if err := runCmd(ctx, nd.ruleset, "ip", "netns", "exec", nd.ns, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("%s %s: loading nft ruleset: %w", nd.role, nd.ns, err)
		}
	}
	args := append([]string{"netns", "exec", nd.ns, "sysctl", "-q", "-w"}, nd.sysctls...)
	if err := runCmd(ctx, "", "ip", args...); err != nil {
		return fmt.Errorf("%s %s: setting sysctls: %w", nd.role, nd.ns, err)
	}
	if err := runCmd(ctx, strings.Join(nd.ipBatch, "\n")+"\n", "ip", "-n", nd.ns, "-batch", "-"); err != nil {
		return fmt.Errorf("%s %s: addresses and routes: %w", nd.role, nd.ns, err)
	}
	return nil
}

// startServer runs `binary lab-serve` in the server namespace and waits
// until it prints "ready".
func (l *Lab) startServer(ctx context.Context, binary, certFile, keyFile string) error {
	tokenFile := filepath.Join(l.Dir, "token")
	if err := os.WriteFile(tokenFile, []byte(l.Server.Token+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}
	logPath := filepath.Join(l.Dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating server log: %w", err)
	}
	s := l.Server
	cmd := exec.Command("ip", "netns", "exec", l.ServerNS, binary, "lab-serve",
		"--cert", certFile, "--key", keyFile,
		"--https-port", strconv.Itoa(s.HTTPSPort),
		"--amqp-port", strconv.Itoa(s.AMQPPort),
		"--echo-port", strconv.Itoa(s.EchoPort),
		"--idle-close", s.IdleClose.String(),
		"--handshake-timeout", s.HandshakeTimeout.String(),
		"--max-conns", strconv.Itoa(s.MaxConns),
		"--large-size", strconv.Itoa(s.LargeSize),
		"--token-file", tokenFile)
	ready := newReadyWriter(logFile)
	cmd.Stdout = ready
	cmd.Stderr = logFile
	// If this process dies without Close, the server goes with it; stale
	// namespaces are removed by the next run's CleanupStale.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting lab server: %w", err)
	}
	end := make(chan struct{})
	l.mu.Lock()
	l.server, l.serverEnd = cmd, end
	l.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(end)
	}()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case <-ready.ready:
		return nil
	case <-end:
		return fmt.Errorf("lab server exited before ready: %s", tail(logPath, 400))
	case <-timer.C:
		return fmt.Errorf("lab server not ready after 15s: %s", tail(logPath, 400))
	case <-ctx.Done():
		return fmt.Errorf("waiting for lab server: %w", ctx.Err())
	}
}

// Close stops the lab server and every process left in the lab's
// namespaces, deletes the namespaces and removes Dir. It is idempotent and
// safe to call concurrently; later calls return the first call's result.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	if l.stopWatch != nil {
		l.stopWatch()
	}
	var errs []error
	l.stopInjectors()
	if l.server != nil && l.server.Process != nil {
		_ = l.server.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.serverEnd:
		case <-time.After(3 * time.Second):
			_ = l.server.Process.Kill()
			<-l.serverEnd
		}
	}
	if err := deleteNamespaces(l.Namespaces()); err != nil {
		errs = append(errs, err)
	}
	if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", l.Dir, err))
		}
	}
	l.closeErr = errors.Join(errs...)
	if l.closeErr != nil {
		l.closeErr = fmt.Errorf("lab %s: closing: %w", l.ID, l.closeErr)
	}
	return l.closeErr
}

// deleteNamespaces kills the processes left in the given namespaces and
// deletes those that exist.
func deleteNamespaces(names []string) error {
	var batch []string
	for _, ns := range names {
		if ns == "" {
			continue
		}
		os.RemoveAll(filepath.Join(etcNetnsDir, ns))
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			continue
		}
		killNamespaceProcesses(ns)
		batch = append(batch, "netns del "+ns)
	}
	if len(batch) == 0 {
		return nil
	}
	err := runCmd(context.Background(), strings.Join(batch, "\n")+"\n", "ip", "-force", "-batch", "-")
	if err == nil {
		return nil
	}
	// Another cleaner may have raced us; only what still exists is an error.
	var left []string
	for _, ns := range names {
		if _, serr := os.Stat(filepath.Join(netnsDir, ns)); serr == nil {
			left = append(left, ns)
		}
	}
	if len(left) == 0 {
		return nil
	}
	return fmt.Errorf("deleting namespaces %s: %w", strings.Join(left, " "), err)
}

// killNamespaceProcesses SIGKILLs every process whose network namespace is
// ns (processes the lab or its users started there), never this process.
func killNamespaceProcesses(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Command returns `ip netns exec ns name args...`.
func (l *Lab) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Namespaces lists the lab's namespaces from client to server, the ECMP
// twin (if any) last.
func (l *Lab) Namespaces() []string {
	out := append([]string{l.ClientNS}, l.RouterNS...)
	out = append(out, l.ServerNS)
	if l.TwinNS != "" {
		out = append(out, l.TwinNS)
	}
	out = append(out, l.DetourNS...)
	return out
}

// TokenFile is the file holding the server's access token (mode 0600).
func (l *Lab) TokenFile() string { return filepath.Join(l.Dir, "token") }

// ServerLog returns the lab server's log so far (for test failure output).
func (l *Lab) ServerLog() string {
	b, err := os.ReadFile(filepath.Join(l.Dir, "server.log"))
	if err != nil {
		return fmt.Sprintf("(server log unreadable: %v)", err)
	}
	return string(b)
}

// newID returns prefix, this pid, "x" and 4 random hex digits: short enough
// that namespace names stay readable, and the pid tells CleanupStale whether
// the creator is still alive.
func newID(prefix string) (string, error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lab: random id: %w", err)
	}
	return prefix + strconv.Itoa(os.Getpid()) + "x" + hex.EncodeToString(b[:]), nil
}

// runCmd runs name args with stdin and returns an error that carries its
// output.
func runCmd(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "(empty log)"
	}
	return s
}

// readyWriter copies the server's stdout to the log and closes ready at the
// first "ready" line.
type readyWriter struct {
	w     io.Writer
	ready chan struct{}
	buf   []byte
	seen  bool
}

func newReadyWriter(w io.Writer) *readyWriter {
	return &readyWriter{w: w, ready: make(chan struct{})}
}

func (r *readyWriter) Write(p []byte) (int, error) {
	if !r.seen {
		r.buf = append(r.buf, p...)
		for {
			i := bytes.IndexByte(r.buf, '\n')
			if i < 0 {
				break
			}
			if strings.TrimSpace(string(r.buf[:i])) == "ready" {
				r.seen = true
				close(r.ready)
				r.buf = nil
				break
			}
			r.buf = r.buf[i+1:]
		}
	}
	return r.w.Write(p)
}
