package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/html"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/lab"
)

// runArgs are the arguments of `hopcheck run` against the lab server over
// IPv4, quick profile.
func runArgs(l *lab.Lab, format string, extra ...string) []string {
	args := []string{"--format", format, "run", "-4", "--profile", "quick",
		"--target", "https://" + labHost, "--ca-file", l.CAFile, "--token-file", l.TokenFile()}
	return append(args, extra...)
}

func runReport(t *testing.T, l *lab.Lab, extra ...string) (diagnose.Report, result) {
	t.Helper()
	r := runIn(t, l, l.ClientNS, nil, runArgs(l, "json", extra...)...)
	if r.code != 0 && r.code != 1 {
		t.Fatalf("hopcheck run: exit %d\nstderr: %s", r.code, r.stderr)
	}
	rep := decodeJSON[diagnose.Report](t, r)
	if rep.SchemaVersion != diagnose.SchemaVersion || len(rep.Targets) != 1 {
		t.Fatalf("schema_version %d, %d targets; want %d and 1", rep.SchemaVersion, len(rep.Targets), diagnose.SchemaVersion)
	}
	if (len(rep.Findings) > 0) != (r.code == 1) {
		t.Fatalf("exit %d with %d findings: exit 1 means findings", r.code, len(rep.Findings))
	}
	return rep, r
}

func findKind(rep diagnose.Report, kind string) *diagnose.Finding {
	for i := range rep.Findings {
		if rep.Findings[i].Kind == kind {
			return &rep.Findings[i]
		}
	}
	return nil
}

func kindsOf(rep diagnose.Report) []string {
	var k []string
	for _, f := range rep.Findings {
		k = append(k, f.Kind+"@"+strconv.Itoa(f.Hop))
	}
	return k
}

func TestRunIdleResetNamesHop3(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 5)
	rs[2].IdleTimeout, rs[2].IdleAction = 10*time.Second, "reset"
	l := buildLab(t, lab.Scenario{Name: "run-idle-reset", Routers: rs})
	evidence := t.TempDir()
	rep, _ := runReport(t, l, "--idle-max", "30s", "--evidence", evidence)
	f := findKind(rep, "idle-reset")
	if f == nil {
		t.Fatalf("no idle-reset finding: %v", kindsOf(rep))
	}
	pcaps, _ := filepath.Glob(filepath.Join(evidence, "*-idle-reset-conn*.pcapng"))
	if len(pcaps) == 0 || !strings.Contains(strings.Join(f.Evidence, "\n"), pcaps[0]) {
		t.Errorf("--evidence: pcaps %v, finding evidence %q", pcaps, f.Evidence)
	}
	if f.Hop != 3 || f.HopAddress != l.Router4[2].String() || string(f.Origin) != "middlebox" {
		t.Errorf("idle-reset at hop %d (%s) origin %s; want hop 3 (%s) middlebox", f.Hop, f.HopAddress, f.Origin, l.Router4[2])
	}
	if f.IdleTimeoutS < 9 || f.IdleTimeoutS > 11 {
		t.Errorf("idle timeout %.2fs, true 10s", f.IdleTimeoutS)
	}
	if rep.Targets[0].CulpritHop != 3 {
		t.Errorf("culprit hop %d, want 3", rep.Targets[0].CulpritHop)
	}
	wantInFlow(t, rep, 3, "reset", l.Router4[2].String())
	wantEvidence(t, evidence, rep, "idle-reset", 3)
	if len(f.Evidence) == 0 || f.Advice == "" || f.Severity == "" || f.Phase != "idle" {
		t.Errorf("finding lacks evidence/advice/severity/phase: %+v", f)
	}
}

func TestRunIdleDropNamesHop2(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 4)
	rs[1].IdleTimeout, rs[1].IdleAction = 8*time.Second, "drop"
	l := buildLab(t, lab.Scenario{Name: "run-idle-drop", Routers: rs})
	evidence := t.TempDir()
	rep, _ := runReport(t, l, "--idle-max", "30s", "--evidence", evidence)
	f := findKind(rep, "idle-drop")
	if f == nil {
		t.Fatalf("no idle-drop finding: %v", kindsOf(rep))
	}
	if f.Hop != 2 || f.HopAddress != l.Router4[1].String() {
		t.Errorf("idle-drop at hop %d (%s); want hop 2 (%s)", f.Hop, f.HopAddress, l.Router4[1])
	}
	if f.IdleTimeoutS < 7 || f.IdleTimeoutS > 9 {
		t.Errorf("idle timeout %.2fs, true 8s", f.IdleTimeoutS)
	}
	wantInFlow(t, rep, 2, "drop", l.Router4[1].String())
	wantEvidence(t, evidence, rep, "idle-drop", 2)
}

// A flow that must idle longer than --in-flow-max to expire is not held
// again: the report says the in-flow confirmation was not tested, and
// why, instead of leaving it out; the TTL attribution stands.
func TestRunInFlowNotTestedBeyondLimit(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 3)
	rs[1].IdleTimeout, rs[1].IdleAction = 5*time.Second, "reset"
	l := buildLab(t, lab.Scenario{Name: "run-inflow-limit", Routers: rs})
	rep, _ := runReport(t, l, "--idle-max", "12s", "--in-flow-max", "3s")
	f := findKind(rep, "idle-reset")
	if f == nil || f.Hop != 2 || string(f.Origin) != "middlebox" {
		t.Fatalf("idle-reset finding %+v; want hop 2, middlebox (%v)", f, kindsOf(rep))
	}
	loc := rep.Targets[0].Localisation
	if loc == nil || loc.InFlow == nil {
		t.Fatalf("no in-flow record: %+v", loc)
	}
	in := loc.InFlow
	if in.Behaviour != diagnose.InFlowNotTested || !strings.Contains(in.Reason, "--in-flow-max 3s") || len(in.Healthy)+len(in.Expired) != 0 || in.Hop != 0 {
		t.Errorf("in-flow %+v; want not-tested naming --in-flow-max 3s, no probes", in)
	}
	for _, e := range f.Evidence {
		if strings.Contains(e, "in-flow") {
			t.Errorf("finding claims in-flow evidence: %q", e)
		}
	}
}

// wantInFlow checks the in-flow confirmation: a real connection held idle
// past the timeout, probed with its own segments before and after.
func wantInFlow(t *testing.T, rep diagnose.Report, hop int, behaviour, addr string) {
	t.Helper()
	loc := rep.Targets[0].Localisation
	if loc == nil || loc.InFlow == nil {
		t.Fatalf("no in-flow localisation: %+v", loc)
	}
	in := loc.InFlow
	if in.Hop != hop || in.Behaviour != behaviour || in.HopAddress != addr || len(in.Healthy) == 0 || len(in.Expired) == 0 {
		t.Errorf("in-flow: hop %d %s (%s), %d healthy / %d expired answers; want hop %d %s (%s). %s",
			in.Hop, in.Behaviour, in.HopAddress, len(in.Healthy), len(in.Expired), hop, behaviour, addr, in.Reason)
	}
}

func TestRunServerConcurrencyLimit(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "run-conc", Routers: make([]lab.Router, 2), Server: lab.Server{MaxConns: 15}})
	rep, _ := runReport(t, l, "--idle-max", "5s")
	f := findKind(rep, "concurrency-limit")
	if f == nil {
		t.Fatalf("no concurrency-limit finding: %v", kindsOf(rep))
	}
	if f.Limit < 14 || f.Limit > 16 || string(f.Origin) != "server" {
		t.Errorf("limit %d origin %s, want 15±1 server", f.Limit, f.Origin)
	}
	for _, other := range rep.Findings {
		if strings.HasPrefix(other.Kind, "idle-") {
			t.Errorf("the idle ladder mistook the server's connection cap for idle expiry: %+v", other)
		}
	}
}

func TestRunTCPFilteredAtHop3(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 4)
	rs[2].DropTCPPort = 443
	l := buildLab(t, lab.Scenario{Name: "run-filtered", Routers: rs})
	rep, r := runReport(t, l, "--idle-max", "2s")
	f := findKind(rep, "tcp-filtered")
	if f == nil {
		t.Fatalf("no tcp-filtered finding: %v\n%s", kindsOf(rep), r.stderr)
	}
	if f.Hop != 3 || f.HopAddress != l.Router4[2].String() {
		t.Errorf("tcp-filtered at hop %d (%s); want hop 3 (%s)", f.Hop, f.HopAddress, l.Router4[2])
	}
}

func TestRunCleanPathHasNoFindings(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 4)
	rs[1].NoICMP, rs[3].NoICMP = true, true
	l := buildLab(t, lab.Scenario{Name: "run-clean", Routers: rs})
	hist, prom := t.TempDir(), filepath.Join(t.TempDir(), "hopcheck.prom")
	rep, r := runReport(t, l, "--idle-max", "10s", "--history", hist, "--keep", "5", "--metrics-file", prom)
	if r.code != 0 || len(rep.Findings) != 0 {
		t.Fatalf("exit %d, findings %v; a clean path must give none", r.code, kindsOf(rep))
	}
	if saved, _ := filepath.Glob(filepath.Join(hist, "run-*.json")); len(saved) != 1 {
		t.Errorf("--history saved %v, want one run report", saved)
	}
	pf, err := os.Open(prom)
	if err != nil {
		t.Fatalf("--metrics-file: %v", err)
	}
	defer pf.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(pf)
	if err != nil || len(fams) == 0 {
		t.Fatalf("--metrics-file is not valid Prometheus text (%d families): %v", len(fams), err)
	}
	tg := rep.Targets[0]
	for _, name := range []string{"connect", "concurrency", "data", "idle"} {
		if _, ok := tg.Tests[name]; !ok {
			t.Errorf("test %s did not run", name)
		}
	}
	if len(tg.Traces) != 3 {
		t.Errorf("%d traces, want icmp, udp and tcp", len(tg.Traces))
	}
}

func TestRunHTMLMarksCulprit(t *testing.T) {
	t.Parallel() // it mostly waits
	rs := make([]lab.Router, 5)
	rs[2].IdleTimeout, rs[2].IdleAction = 4*time.Second, "reset"
	l := buildLab(t, lab.Scenario{Name: "run-html", Routers: rs})
	r := runIn(t, l, l.ClientNS, nil, runArgs(l, "html", "--idle-max", "10s")...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (findings)\n%s", r.code, r.stderr)
	}
	doc, err := html.Parse(strings.NewReader(r.stdout))
	if err != nil {
		t.Fatalf("HTML does not parse: %v", err)
	}
	var culprits []string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			var class, ttl string
			for _, a := range n.Attr {
				switch a.Key {
				case "class":
					class = a.Val
				case "data-ttl":
					ttl = a.Val
				}
			}
			if strings.Contains(" "+class+" ", " culprit ") && ttl != "" {
				culprits = append(culprits, ttl)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if len(culprits) == 0 || culprits[0] != "3" {
		t.Fatalf("culprit hop elements %v, want data-ttl=3", culprits)
	}
}

func TestRunInterruptedLeavesPartialReport(t *testing.T) {
	l := buildLab(t, lab.Scenario{Name: "run-sigint", Routers: make([]lab.Router, 2)})
	out := filepath.Join(t.TempDir(), "report.json")
	cmd := l.Command(t.Context(), l.ClientNS, binary, append([]string{"-o", out}, runArgs(l, "json", "--idle-max", "60s")...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	// ip netns exec execs the command, so the signal reaches hopcheck.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no report after SIGINT: %v", err)
	}
	rep := decodeJSON[diagnose.Report](t, result{stdout: string(b)})
	if !rep.Incomplete {
		t.Fatalf("report after SIGINT not marked incomplete")
	}
}

func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--env", "moon"}, "moon"},
		{[]string{"run", "--profile", "slow"}, "slow"},
		{[]string{"run", "--target", "ftp://127.0.0.1"}, "ftp"},
		{[]string{"run", "--target", "https://127.0.0.1:70000"}, "70000"},
		{[]string{"run", "--target", "https://127.0.0.1", "--idle-max", "500ms"}, "500ms"},
		{[]string{"run", "--target", "https://127.0.0.1", "--in-flow-max", "-5m"}, "-5m"},
		{[]string{"run", "--target", "https://127.0.0.1", "--in-flow-max", "soon"}, "soon"},
		{[]string{"run", "--target", "https://127.0.0.1", "--data-path", "markets.xml"}, "markets.xml"},
		{[]string{"run", "--target", "https://127.0.0.1", "--ca-file", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{[]string{"run", "--target", "https://127.0.0.1", "--token-file", "/nonexistent/token"}, "/nonexistent/token"},
		{[]string{"--format", "pdf", "run", "--target", "https://127.0.0.1"}, "pdf"},
		{[]string{"run", "stray-arg"}, "stray-arg"},
		{[]string{"run", "--target", "https://127.0.0.1", "--tls-profile", "java17"}, "java17"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := runLocal(t, dir, append([]string{"-o", filepath.Join(dir, "r.json")}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) || r.stdout != "" {
				t.Fatalf("exit %d stderr %q; want exit 2 and one line naming %q", r.code, r.stderr, c.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("files left behind: %v", entries)
			}
		})
	}
}

func TestRunLocalisesMSSClampAtHop2(t *testing.T) {
	rs := make([]lab.Router, 4)
	rs[1].MSSClamp = 1200
	l := buildLab(t, lab.Scenario{Name: "run-mss", Routers: rs})
	rep, _ := runReport(t, l, "--idle-max", "2s")
	f := findKind(rep, "header-rewrite")
	if f == nil {
		t.Fatalf("no header-rewrite finding: %v", kindsOf(rep))
	}
	if f.Hop != 2 || f.HopAddress != l.Router4[1].String() || !strings.Contains(strings.Join(f.Evidence, " "), "1200") {
		t.Errorf("header-rewrite at hop %d (%s), evidence %q; want hop 2 (%s) with mss 1200", f.Hop, f.HopAddress, f.Evidence, l.Router4[1])
	}
	if findKind(rep, "nat") != nil {
		t.Errorf("an MSS clamp is not a NAT: %v", kindsOf(rep))
	}
}

func TestRunLocalisesNATAtHop1(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[0].Masquerade = true
	l := buildLab(t, lab.Scenario{Name: "run-nat", Routers: rs})
	rep, _ := runReport(t, l, "--idle-max", "2s", "--peer-url", "https://"+labHost+"/peer")
	f := findKind(rep, "nat")
	if f == nil {
		t.Fatalf("no nat finding: %v (localisation %+v)", kindsOf(rep), rep.Targets[0].Localisation)
	}
	if f.Hop != 1 || f.HopAddress != l.Router4[0].String() {
		t.Errorf("nat at hop %d (%s); want hop 1 (%s)", f.Hop, f.HopAddress, l.Router4[0])
	}
}

func TestRunLocalisesPMTUBlackholeAtHop3(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	rs := make([]lab.Router, 4)
	rs[2].LinkMTU, rs[2].HideFragNeeded = 1280, true
	l := buildLab(t, lab.Scenario{Name: "run-pmtu", Routers: rs})
	rep, _ := runReport(t, l, "--idle-max", "2s")
	f := findKind(rep, "pmtu-blackhole")
	if f == nil {
		t.Fatalf("no pmtu-blackhole finding: %v (localisation %+v)", kindsOf(rep), rep.Targets[0].Localisation)
	}
	if f.Hop != 3 || f.HopAddress != l.Router4[2].String() || f.MTU != 1280 {
		t.Errorf("pmtu-blackhole at hop %d (%s) mtu %d; want hop 3 (%s) mtu 1280", f.Hop, f.HopAddress, f.MTU, l.Router4[2])
	}
}

func TestRunServerIdleCloseStaysWithServer(t *testing.T) {
	t.Parallel() // mostly waiting for idle timeouts: runs beside the other waiting lab tests
	l := buildLab(t, lab.Scenario{Name: "run-idle-close", Routers: make([]lab.Router, 2), Server: lab.Server{IdleClose: 6 * time.Second}})
	rep, _ := runReport(t, l, "--idle-max", "15s")
	f := findKind(rep, "idle-close")
	if f == nil {
		t.Fatalf("no idle-close finding: %v", kindsOf(rep))
	}
	if string(f.Origin) != "server" || f.IdleTimeoutS < 5 || f.IdleTimeoutS > 7 {
		t.Errorf("idle-close origin %s after %.2fs; want server, 6±1s", f.Origin, f.IdleTimeoutS)
	}
	if rep.Targets[0].CulpritHop != 0 {
		t.Errorf("culprit hop %d: a server's own timeout names no box on the path", rep.Targets[0].CulpritHop)
	}
}

func TestRunMidstreamResetAtHop2(t *testing.T) {
	rs := make([]lab.Router, 3)
	rs[1].ResetAfterBytes = 1_000_000
	l := buildLab(t, lab.Scenario{Name: "run-midstream-reset", Routers: rs})
	start := time.Now()
	evidence := t.TempDir()
	rep, r := runReport(t, l, "--idle-max", "2s", "--evidence", evidence)
	f := findKind(rep, "midstream-reset")
	if f == nil {
		t.Fatalf("no midstream-reset finding: %v\n%s", kindsOf(rep), r.stderr)
	}
	if f.Hop != 2 || f.HopAddress != l.Router4[1].String() || string(f.Origin) != "middlebox" || f.Phase != "transfer" {
		t.Errorf("midstream-reset at hop %d (%s) origin %s phase %s; want hop 2 (%s) middlebox, transfer", f.Hop, f.HopAddress, f.Origin, f.Phase, l.Router4[1])
	}
	if rep.Targets[0].CulpritHop != 2 {
		t.Errorf("culprit hop %d, want 2", rep.Targets[0].CulpritHop)
	}
	// Only the large transfer crosses the limit: the short connections of
	// the other tests stay clean.
	if len(rep.Findings) != 1 {
		t.Errorf("findings %v, want only the midstream reset", kindsOf(rep))
	}
	wantEvidence(t, evidence, rep, "midstream-reset", 2)
	t.Logf("run: %v, wall %v", kindsOf(rep), time.Since(start).Round(100*time.Millisecond))
}
