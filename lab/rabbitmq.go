package lab

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A real RabbitMQ broker in the lab: the Debian rabbitmq-server package run
// in a lab's server namespace, so that hopcheck's AMQP login is tested
// against the broker UOF runs (mq.betradar.com), not only against the lab
// double. TLS on 5671 with the lab's certificate; the rabbitmq_auth_backend_http
// plugin asks a tiny HTTP responder on the server namespace's loopback,
// which accepts the lab token as user name with any password (as UOF's
// broker accepts the access token); one vhost /unifiedfeed/<id>.

// RabbitMQServerScript is the Debian package's start script that runs the
// broker in the foreground as the calling user (/usr/sbin/rabbitmq-server
// would switch to the rabbitmq user and its system-wide state).
const RabbitMQServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// RabbitMQMissing returns why a real broker cannot run here, or "".
func RabbitMQMissing() string {
	if _, err := os.Stat(RabbitMQServerScript); err != nil {
		return fmt.Sprintf("RabbitMQ tests need the rabbitmq-server package (%s: %v)", RabbitMQServerScript, err)
	}
	return ""
}

// RabbitMQOptions configure StartRabbitMQ. Zero values mean the defaults.
type RabbitMQOptions struct {
	Port        int           // TLS listener; 0 = 5671
	BookmakerID int           // the vhost is /unifiedfeed/<BookmakerID>; 0 = 1
	StartWait   time.Duration // how long the broker may take to accept connections; 0 = 120s
}

// RabbitMQ is a broker started by StartRabbitMQ. Close it (before the lab).
type RabbitMQ struct {
	Port  int
	VHost string
	// Started is how long the broker took from exec to accepting TLS
	// connections on Port.
	Started time.Duration

	ns, dir string
	d       *daemon
	auth    *http.Server
	authLn  net.Listener
	authWG  sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	closeErr error
}

// rabbitMQAuthHandler answers rabbitmq_auth_backend_http's requests: user
// (username = token, any password: "allow", else "deny"), vhost, resource
// and topic ("allow": the vhost's existence is the broker's own check).
func rabbitMQAuthHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/auth/user", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("username") == token {
			io.WriteString(w, "allow")
			return
		}
		io.WriteString(w, "deny")
	})
	for _, p := range []string{"/auth/vhost", "/auth/resource", "/auth/topic"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "allow") })
	}
	return mux
}

// rabbitMQConfig is the broker's rabbitmq.conf: TLS only, the HTTP auth
// backend as the only one, the vhost from a definitions file.
func rabbitMQConfig(port int, caFile, certFile, keyFile, authURL, definitions string) string {
	lines := []string{
		"listeners.tcp = none",
		"listeners.ssl.default = " + strconv.Itoa(port),
		"ssl_options.cacertfile = " + caFile,
		"ssl_options.certfile = " + certFile,
		"ssl_options.keyfile = " + keyFile,
		"ssl_options.verify = verify_none",
		"ssl_options.fail_if_no_peer_cert = false",
		"auth_backends.1 = http",
		"auth_http.user_path = " + authURL + "/auth/user",
		"auth_http.vhost_path = " + authURL + "/auth/vhost",
		"auth_http.resource_path = " + authURL + "/auth/resource",
		"auth_http.topic_path = " + authURL + "/auth/topic",
		"definitions.import_backend = local_filesystem",
		"definitions.local.path = " + definitions,
		// A lab on a small disk must not block the broker.
		"disk_free_limit.absolute = 1MB",
	}
	return strings.Join(lines, "\n") + "\n"
}

// StartRabbitMQ starts a RabbitMQ broker in l's server namespace and waits
// until it accepts connections on the TLS port. The lab server must not
// listen on that port (build the lab with Server.AMQPPort set elsewhere).
// Its files (config, Mnesia, logs, Erlang cookie) live in a directory of
// l.Dir; the node name is unique to the lab. Close stops the broker and
// the epmd it started.
func (l *Lab) StartRabbitMQ(ctx context.Context, opt RabbitMQOptions) (*RabbitMQ, error) {
	if why := RabbitMQMissing(); why != "" {
		return nil, errors.New(why)
	}
	if opt.Port == 0 {
		opt.Port = DefaultAMQPPort
	}
	if opt.BookmakerID == 0 {
		opt.BookmakerID = 1
	}
	if opt.StartWait == 0 {
		opt.StartWait = 120 * time.Second
	}
	if l.Server.AMQPPort == opt.Port {
		return nil, fmt.Errorf("rabbitmq: the lab server listens on %d itself: build the lab with Server.AMQPPort set elsewhere", opt.Port)
	}
	r := &RabbitMQ{Port: opt.Port, VHost: "/unifiedfeed/" + strconv.Itoa(opt.BookmakerID), ns: l.ServerNS,
		dir: filepath.Join(l.Dir, "rabbitmq")}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	// The auth responder listens on the server namespace's loopback; the
	// socket stays there while this process serves it.
	err := InNamespace(l.ServerNS, func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		r.authLn = ln
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: auth responder: %w", err)
	}
	r.auth = &http.Server{Handler: rabbitMQAuthHandler(l.Server.Token), ReadHeaderTimeout: 10 * time.Second}
	r.authWG.Go(func() { _ = r.auth.Serve(r.authLn) })

	ok := false
	defer func() {
		if !ok {
			r.Close()
		}
	}()
	certDir := filepath.Dir(l.CAFile)
	leaf, chain, err := rabbitMQCertFiles(filepath.Join(certDir, "server.pem"), l.CAFile)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	definitions := filepath.Join(r.dir, "definitions.json")
	files := map[string]string{
		"leaf.pem":  leaf,
		"chain.pem": chain,
		"rabbitmq.conf": rabbitMQConfig(opt.Port, filepath.Join(r.dir, "chain.pem"), filepath.Join(r.dir, "leaf.pem"),
			filepath.Join(certDir, "server-key.pem"), "http://"+r.authLn.Addr().String(), definitions),
		"definitions.json": fmt.Sprintf(`{"vhosts":[{"name":%q}]}`+"\n", r.VHost),
		"enabled_plugins":  "[rabbitmq_auth_backend_http].\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
	}
	logPath := filepath.Join(r.dir, "rabbitmq.log")
	env := []string{
		"HOME=" + r.dir, // the Erlang cookie
		"RABBITMQ_NODENAME=rabbit-" + l.ID + "@localhost",
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(r.dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(r.dir, "rabbitmq-env.conf"), // none: not /etc/rabbitmq's
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(r.dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(r.dir, "rabbitmq.pid"),
		"RABBITMQ_LOGS=-", // to stdout, the log file
	}
	// SIGTERM if this process dies: the start script stops the Erlang VM
	// (stale namespaces and what is left in them are removed by the next
	// run's CleanupStale).
	start := time.Now()
	d, err := startDaemon("rabbitmq", l.ServerNS, logPath, env, syscall.SIGTERM, RabbitMQServerScript)
	if err != nil {
		return nil, err
	}
	r.d = d
	addr := netip.AddrPortFrom(l.Server4, uint16(opt.Port)).String()
	if err := d.waitAccepting(ctx, l, l.ServerNS, addr, opt.StartWait, 200*time.Millisecond, func() string { return tail(logPath, 1500) }); err != nil {
		return nil, err
	}
	r.Started = time.Since(start)
	ok = true
	return r, nil
}

// Log returns the end of the broker's log.
func (r *RabbitMQ) Log() string { return tail(filepath.Join(r.dir, "rabbitmq.log"), 4000) }

// Close stops the broker (SIGTERM to its process group, SIGKILL after
// 15 s), the epmd it started in the server namespace and the auth
// responder. Idempotent.
func (r *RabbitMQ) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.closeErr
	}
	r.closed = true
	var errs []error
	if r.d != nil {
		// The VM's helpers outside its group (erl_child_setup,
		// inet_gethost) go with it; epmd is a daemon of its own.
		if err := r.d.stop(syscall.SIGTERM, 15*time.Second, "beam.smp", "erl_child_setup", "inet_gethost", "epmd"); err != nil {
			errs = append(errs, err)
		}
	}
	if r.auth != nil {
		if err := r.auth.Close(); err != nil {
			errs = append(errs, fmt.Errorf("rabbitmq auth responder: %w", err))
		}
		r.authWG.Wait()
	}
	r.closeErr = errors.Join(errs...)
	return r.closeErr
}

// killInNamespace SIGKILLs the processes of network namespace ns whose
// command name is name (never this process).
func killInNamespace(ns, name string) error {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return fmt.Errorf("listing processes of %s: %w", ns, err)
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", f, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing %s (%d) in %s: %w", name, pid, ns, err)
		}
	}
	return nil
}

// rabbitMQCertFiles splits the lab's server.pem (leaf, then intermediate)
// for Erlang's ssl: certfile the leaf, cacertfile the intermediate and
// the CA, from which it builds the chain it sends (leaf + intermediate,
// as lab-serve does).
func rabbitMQCertFiles(serverPEM, caPEM string) (leaf, chain string, err error) {
	b, err := os.ReadFile(serverPEM)
	if err != nil {
		return "", "", err
	}
	ca, err := os.ReadFile(caPEM)
	if err != nil {
		return "", "", err
	}
	var blocks []string
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		blocks = append(blocks, string(pem.EncodeToMemory(blk)))
	}
	if len(blocks) == 0 {
		return "", "", fmt.Errorf("%s holds no certificate", serverPEM)
	}
	return blocks[0], strings.Join(blocks[1:], "") + string(ca), nil
}
