package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/lab"
)

// demoScenario is a faulty (or clean) lab path for `hopcheck demo`.
type demoScenario struct {
	about    string
	scenario lab.Scenario
}

func routers(n int, set func(rs []lab.Router)) []lab.Router {
	rs := make([]lab.Router, n)
	if set != nil {
		set(rs)
	}
	return rs
}

// demoScenarios are the built-in labs; "idle-reset" is the default.
var demoScenarios = map[string]demoScenario{
	// The server closes idle connections after 15 s: router 3 resets only
	// the client's side of an expired flow, and without that close the
	// server would keep the dead connections, which count against its cap.
	"idle-reset": {"5 routers; router 3 resets flows idle for 8 s or more; the server caps concurrent connections at 12",
		lab.Scenario{Name: "idle-reset", Routers: routers(5, func(rs []lab.Router) {
			rs[2].IdleTimeout, rs[2].IdleAction = 8*time.Second, "reset"
		}), Server: lab.Server{MaxConns: 12, IdleClose: 15 * time.Second}}},
	"idle-drop": {"4 routers; router 2 silently drops flows idle for 8 s or more",
		lab.Scenario{Name: "idle-drop", Routers: routers(4, func(rs []lab.Router) {
			rs[1].IdleTimeout, rs[1].IdleAction = 8*time.Second, "drop"
		})}},
	"server-close": {"3 routers; the server closes keep-alive connections idle for 6 s",
		lab.Scenario{Name: "server-close", Routers: routers(3, nil), Server: lab.Server{IdleClose: 6 * time.Second}}},
	"tcp-filtered": {"4 routers; router 3 drops TCP to 443 (ICMP and UDP pass)",
		lab.Scenario{Name: "tcp-filtered", Routers: routers(4, func(rs []lab.Router) { rs[2].DropTCPPort = 443 })}},
	"mss-clamp": {"4 routers; router 2 clamps the TCP MSS to 1200",
		lab.Scenario{Name: "mss-clamp", Routers: routers(4, func(rs []lab.Router) { rs[1].MSSClamp = 1200 })}},
	"nat": {"3 routers; router 1 masquerades (source NAT)",
		lab.Scenario{Name: "nat", Routers: routers(3, func(rs []lab.Router) { rs[0].Masquerade = true })}},
	"pmtu-blackhole": {"4 routers; the link behind router 3 has MTU 1280 and router 3 hides frag-needed",
		lab.Scenario{Name: "pmtu-blackhole", Routers: routers(4, func(rs []lab.Router) {
			rs[2].LinkMTU, rs[2].HideFragNeeded = 1280, true
		})}},
	"midstream-reset": {"3 routers; router 2 resets connections once 1 MB has crossed it",
		lab.Scenario{Name: "midstream-reset", Routers: routers(3, func(rs []lab.Router) { rs[1].ResetAfterBytes = 1_000_000 })}},
	"syn-reset": {"4 routers; router 2 resets 2 % of new connections",
		lab.Scenario{Name: "syn-reset", Routers: routers(4, func(rs []lab.Router) { rs[1].SYNResetPercent = 2 })}},
	"clean": {"4 routers, two of them silent to ICMP; nothing wrong",
		lab.Scenario{Name: "clean", Routers: routers(4, func(rs []lab.Router) { rs[1].NoICMP, rs[3].NoICMP = true, true })}},
}

func demoScenarioList() string {
	var names []string
	for n := range demoScenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %-15s %s\n", n, demoScenarios[n].about)
	}
	return b.String()
}

func demoCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "demo",
		Usage: "build a faulty namespace lab, run `run --profile quick` against it, print the report, remove the lab (needs root; exit 0 once the report is written, findings or not)",
		Description: "Scenarios (--scenario):\n" + demoScenarioList() +
			"The lab lives in network namespaces on this machine only; nothing is sent anywhere else.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "scenario", Value: "idle-reset", Usage: "lab scenario (see --list)"},
			&ucli.BoolFlag{Name: "list", Usage: "list the scenarios and exit"},
			&ucli.StringFlag{Name: "profile", Value: "quick", Usage: "run profile"},
		},
		Action: runDemo,
	}
}

func runDemo(c *ucli.Context) error {
	if c.Bool("list") {
		fmt.Fprint(c.App.Writer, demoScenarioList())
		return nil
	}
	sc, ok := demoScenarios[c.String("scenario")]
	if !ok {
		return usageErr("unknown --scenario %q (hopcheck demo --list shows them)", c.String("scenario"))
	}
	format := flagString(c, "format")
	if format == "auto" {
		format = "text"
	}
	switch format {
	case "text", "json", "markdown", "html":
	default:
		return usageErr("unknown --format %q (want one of [text json markdown html])", format)
	}
	if why := lab.Missing(); why != "" {
		return cantRunErr("demo builds network namespaces: %s (run it as root: sudo hopcheck demo)", why)
	}
	out, err := openOutput(c, "text", "json", "markdown", "html")
	if err != nil {
		return err
	}
	defer out.abort()

	ctx := c.Context
	fmt.Fprintf(c.App.ErrWriter, "demo: building lab %q: %s\n", c.String("scenario"), sc.about)
	l, err := lab.Build(ctx, sc.scenario, lab.Options{})
	if err != nil {
		return cantRunErr("demo: %v", err)
	}
	l.CloseOnSignal()
	defer func() {
		if err := l.Close(); err != nil {
			warnf(c, "demo: removing the lab: %v", err)
		}
		fmt.Fprintf(c.App.ErrWriter, "demo: lab removed\n")
	}()

	self, err := os.Executable()
	if err != nil {
		return cantRunErr("demo: %v", err)
	}
	args := []string{"--format", format, "run", "--profile", c.String("profile"),
		"--target", "https://" + lab.ServerName, "--target", fmt.Sprintf("amqps://%s:%d", lab.ServerName, l.Server.AMQPPort),
		"--ca-file", l.CAFile, "--token-file", l.TokenFile(), "--peer-url", "https://" + lab.ServerName + "/peer"}
	fmt.Fprintf(c.App.ErrWriter, "demo: hopcheck %s (inside the lab's client namespace)\n", strings.Join(args, " "))
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := l.Command(runCtx, l.ClientNS, self, args...)
	cmd.Stdout, cmd.Stderr = out.w, c.App.ErrWriter
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		return cantRunErr("demo: %v", err)
	}
	if code != ExitOK && code != ExitFindings {
		return &exitError{code: code, err: fmt.Errorf("demo: the run inside the lab exited with %d", code)}
	}
	if cerr := out.commit(); cerr != nil {
		return cerr
	}
	// Findings are what a faulty lab is built to show: the demo ran as
	// designed whether the run inside it exited 0 or 1 (its report says
	// which), so `sudo make demo` succeeds.
	return nil
}
