package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// daemon is a real server program (RabbitMQ, nginx, HAProxy) run inside
// one lab namespace: started through `ip netns exec` in its own process
// group, so that stopping it reaches its children, with its stdout and
// stderr in a log file, and reaped when it exits.
type daemon struct {
	name  string // for messages: "haproxy"
	ns    string
	cmd   *exec.Cmd
	ended chan struct{} // closed when the process has been reaped
}

// startDaemon starts argv inside namespace ns with env added to this
// process's environment and its output in logPath. deathSig reaches it
// if this process dies (a graceful SIGTERM where the program cleans up
// after itself, else SIGKILL; the next run's CleanupStale removes what is
// left with the namespace).
func startDaemon(name, ns, logPath string, env []string, deathSig syscall.Signal, argv ...string) (*daemon, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: starting %s: %w", name, argv[0], err)
	}
	d := &daemon{name: name, ns: ns, cmd: cmd, ended: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(d.ended)
	}()
	return d, nil
}

// waitAccepting waits until addr accepts TCP connections from inside
// namespace from (poll apart), failing when the daemon exits first, ctx
// ends or wait passes; logTail gives the daemon's last words for the
// error.
func (d *daemon) waitAccepting(ctx context.Context, l *Lab, from, addr string, wait, poll time.Duration, logTail func() string) error {
	deadline := time.Now().Add(wait)
	for {
		c, err := l.Dial(ctx, from, "tcp4", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-d.ended:
			return fmt.Errorf("%s: exited before accepting connections: %s", d.name, logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for it: %w", d.name, ctx.Err())
		case <-time.After(poll):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not accepting connections on %s after %v: %s", d.name, addr, wait, logTail())
		}
	}
}

// stop signals the daemon's process group with sig and waits for it to
// end; after grace it sends SIGKILL. Then it SIGKILLs the processes named
// leftovers still in its namespace (helpers outside the group).
func (d *daemon) stop(sig syscall.Signal, grace time.Duration, leftovers ...string) error {
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-d.ended:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-d.ended:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d) did not end after SIGKILL", d.name, pgid)
		}
	}
	var errs []error
	for _, name := range leftovers {
		errs = append(errs, killInNamespace(d.ns, name))
	}
	return errors.Join(errs...)
}
