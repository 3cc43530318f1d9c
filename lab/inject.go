package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Injector configures Router.InjectRST: an on-path box that watches the
// flows the router forwards and injects a TCP reset toward the client
// while the router keeps forwarding everything, so that the server's own
// answer still reaches the client after the reset (a censor's or IPS's
// injection, as opposed to an in-path box that blocks the flow and
// resets it, like ResetAfterBytes or IdleAction "reset").
//
// The injector is a packet program (package lab/injector, run by the
// hidden `hopcheck lab-inject`) started in the router's namespace: it
// sniffs the router's interfaces with a packet socket, tracks the server's
// sequence numbers, and sends the reset from a raw socket with the
// server's address and port as source, the server's next sequence number
// (the one the client expects: Linux takes no other) and the router's own
// initial TTL (64, or the router's InitialTTL), so that it arrives at the
// client like the router's own packets, not with the server's TTL.
// Lab.Close stops it.
type Injector struct {
	// AfterClientBytes: the client segment that takes the client's
	// payload in a flow beyond this many bytes draws the reset (0: its
	// first segment with payload), once per connection.
	AfterClientBytes int
	// Port limits the injector to flows toward this server port; 0 = every
	// TCP flow.
	Port uint16
}

// validateInject checks the injector knobs of sc.
func validateInject(sc Scenario) error {
	for i, r := range sc.Routers {
		if r.InjectRST == nil {
			continue
		}
		where := fmt.Sprintf("scenario %q router %d", sc.Name, i+1)
		if r.InjectRST.AfterClientBytes < 0 {
			return fmt.Errorf("%s: InjectRST.AfterClientBytes %d is negative", where, r.InjectRST.AfterClientBytes)
		}
		if sc.ECMPRouter == i+1 {
			// The twin would need its own injector, and each sees half the flows.
			return fmt.Errorf("%s: InjectRST does not combine with ECMPRouter on the same router", where)
		}
	}
	return nil
}

// injectorPlan is one injector process to start: where, and its arguments
// after the subcommand name.
type injectorPlan struct {
	ns     string
	router int // 1-based, for log names
	args   []string
}

// planInject adds the injectors of sc to a planned chain.
func planInject(t *topology, sc Scenario) {
	for i, r := range sc.Routers {
		if r.InjectRST == nil {
			continue
		}
		ttl := r.InitialTTL
		if ttl == 0 {
			ttl = 64
		}
		t.injectors = append(t.injectors, injectorPlan{ns: t.routerNS[i], router: i + 1, args: []string{
			"--after-bytes", strconv.Itoa(r.InjectRST.AfterClientBytes),
			"--port", strconv.Itoa(int(r.InjectRST.Port)),
			"--ttl", strconv.Itoa(ttl),
			"--client-interface", ifToClient}})
	}
}

// InjectCommand is the hidden subcommand that runs the injector
// (lab/injector.Run).
const InjectCommand = "lab-inject"

// labProcess is a helper process the lab started in one of its namespaces.
type labProcess struct {
	cmd *exec.Cmd
	end chan struct{} // closed once reaped
}

// startInjectors starts every planned injector and waits until each has
// its sockets open (it prints "ready"), so that the lab's first flow is
// already watched.
func (l *Lab) startInjectors(ctx context.Context, plans []injectorPlan, binary string) error {
	for _, p := range plans {
		logPath := filepath.Join(l.Dir, fmt.Sprintf("inject-r%d.log", p.router))
		logFile, err := os.Create(logPath)
		if err != nil {
			return fmt.Errorf("creating injector log: %w", err)
		}
		args := append([]string{"netns", "exec", p.ns, binary, InjectCommand}, p.args...)
		cmd := exec.Command("ip", args...)
		ready := newReadyWriter(logFile)
		cmd.Stdout, cmd.Stderr = ready, logFile
		// If this process dies without Close, the injector goes with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			logFile.Close()
			return fmt.Errorf("starting injector on router %d: %w", p.router, err)
		}
		proc := &labProcess{cmd: cmd, end: make(chan struct{})}
		l.mu.Lock()
		l.injectors = append(l.injectors, proc)
		l.mu.Unlock()
		go func() {
			_ = cmd.Wait()
			logFile.Close()
			close(proc.end)
		}()
		select {
		case <-ready.ready:
		case <-proc.end:
			return fmt.Errorf("injector on router %d exited before ready: %s", p.router, tail(logPath, 400))
		case <-time.After(5 * time.Second):
			return fmt.Errorf("injector on router %d not ready after 5s: %s", p.router, tail(logPath, 400))
		case <-ctx.Done():
			return fmt.Errorf("waiting for injector on router %d: %w", p.router, ctx.Err())
		}
	}
	return nil
}

// stopInjectors ends the injectors (SIGTERM, then SIGKILL after 3 s) and
// waits until they are reaped. l.mu is held.
func (l *Lab) stopInjectors() {
	for _, p := range l.injectors {
		if p.cmd.Process == nil {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.end:
		case <-time.After(3 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.end
		}
	}
}
