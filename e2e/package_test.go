package e2e

import (
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/lab/labtest"
)

// What the Debian package installs, as dpkg-deb -c lists it.
var packagedFiles = []string{
	"./usr/bin/hopcheck",
	"./usr/share/man/man1/hopcheck.1.gz",
	"./usr/share/bash-completion/completions/hopcheck",
	"./usr/share/zsh/vendor-completions/_hopcheck",
	"./usr/lib/systemd/system/hopcheck.service",
	"./usr/lib/systemd/system/hopcheck.timer",
	"./usr/share/hopcheck/default",
}

// The files the admin makes (the package never creates them: no conffile,
// nothing under /etc) and the directory systemd makes when the service
// first starts (StateDirectory=), where its runs keep their history.
const (
	adminDefaults = "/etc/default/hopcheck"
	adminTokenDir = "/etc/hopcheck"
	adminToken    = "/etc/hopcheck/token"
	stateDir      = "/var/lib/hopcheck"
	timerWants    = "/etc/systemd/system/timers.target.wants/hopcheck.timer"
)

// leftovers lists what of the package, its maintainer scripts, its service
// and its admin is on this machine: files and directories, the service
// user and group.
func leftovers() []string {
	var left []string
	paths := []string{"/usr/share/hopcheck", adminDefaults, adminTokenDir, stateDir, timerWants}
	for _, f := range packagedFiles {
		paths = append(paths, strings.TrimPrefix(f, "."))
	}
	for _, path := range paths {
		if exists(path) {
			left = append(left, path)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if exec.Command("getent", db, "hopcheck").Run() == nil {
			left = append(left, db+" entry hopcheck")
		}
	}
	return left
}

// requirePackaging skips (or, with HOPCHECK_LAB=required, fails) where the
// package cannot be installed for real: it needs root and dpkg, and must
// not replace a hopcheck package someone installed on this machine.
func requirePackaging(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "installing the package needs root"
	case !onPath("dpkg", "dpkg-deb", "getcap", "setpriv", "make"):
		why = "installing the package needs dpkg, dpkg-deb, getcap (libcap2-bin), setpriv and make (scripts/deps.sh)"
	case exec.Command("dpkg", "-s", "hopcheck").Run() == nil:
		why = "a hopcheck package is installed on this machine; the test would replace it"
	case exec.Command("getent", "passwd", "hopcheck").Run() == nil:
		why = "a user hopcheck exists on this machine; the package would take it as its service user"
	case exec.Command("getent", "group", "hopcheck").Run() == nil:
		why = "a group hopcheck exists on this machine; the package's useradd would refuse to make it"
	case exists(adminDefaults) || exists(adminTokenDir) || exists(stateDir):
		why = "an admin's " + adminDefaults + ", " + adminTokenDir + " or " + stateDir + " exists on this machine; the test makes and deletes them"
	}
	if why == "" {
		return
	}
	if os.Getenv(labtest.RequiredEnv) == "required" {
		t.Fatalf("%s (%s=required)", why, labtest.RequiredEnv)
	}
	t.Skipf("%s; set %s=required to fail instead", why, labtest.RequiredEnv)
}

func onPath(tools ...string) bool {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	// dpkg refuses at once while another dpkg or apt holds its lock (an
	// unattended upgrade, an install beside the tests): wait for it.
	for deadline := time.Now().Add(2 * time.Minute); err != nil && name == "dpkg" &&
		strings.Contains(string(out), "lock") && time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		out, err = exec.Command(name, args...).CombinedOutput()
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDebianPackage builds the package with `make deb`, checks its
// contents, installs it on this machine, checks the capability, the
// service user and the units (installed, not enabled), then removes it and
// checks that nothing of it is left, and purges it. A second install plays
// the admin (options, token) and the service's runs (history): dpkg -r
// keeps those, dpkg -P removes the history and keeps the admin's files.
func TestDebianPackage(t *testing.T) {
	requirePackaging(t)
	dist := t.TempDir()
	start := time.Now()
	build := exec.Command("make", "-C", "..", "deb", "DIST="+dist)
	// Under `make test` the outer make's flags (jobserver, -n, -s) must
	// not reach this one.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") && !strings.HasPrefix(kv, "MAKELEVEL=") {
			build.Env = append(build.Env, kv)
		}
	}
	build.Env = append(build.Env, "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	t.Logf("make deb: %v", time.Since(start).Round(time.Second))
	debs, _ := filepath.Glob(filepath.Join(dist, "hopcheck_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s; want one hopcheck_*_amd64.deb", debs, dist)
	}
	deb := debs[0]

	listing := mustRun(t, "dpkg-deb", "-c", deb)
	listed := map[string]string{}
	for _, line := range strings.Split(listing, "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			listed[f[len(f)-1]] = f[0]
			// dpkg -r keeps conffiles and the directories they need:
			// the package ships nothing under /etc.
			if strings.HasPrefix(f[len(f)-1], "./etc/") {
				t.Errorf("dpkg-deb -c lists %s; the package ships nothing under /etc", f[len(f)-1])
			}
		}
	}
	for _, want := range packagedFiles {
		if _, ok := listed[want]; !ok {
			t.Errorf("dpkg-deb -c lacks %s:\n%s", want, listing)
		}
	}
	if mode := listed["./usr/bin/hopcheck"]; mode != "-rwxr-xr-x" {
		t.Errorf("/usr/bin/hopcheck mode %s; want -rwxr-xr-x", mode)
	}
	if info := mustRun(t, "dpkg-deb", "-I", deb); strings.Contains(info, "conffiles") {
		t.Errorf("the package has conffiles (dpkg -r would keep them):\n%s", info)
	}
	if depends := mustRun(t, "dpkg-deb", "-f", deb, "Depends"); !strings.Contains(depends, "libcap2-bin") {
		t.Errorf("Depends %q; want libcap2-bin (setcap in postinst)", depends)
	}

	t.Cleanup(func() {
		if exec.Command("dpkg", "-s", "hopcheck").Run() == nil {
			if out, err := exec.Command("dpkg", "-P", "hopcheck").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P hopcheck: %v\n%s", err, out)
			}
		}
		// What the test made as the admin (requirePackaging made sure
		// none of it was there before).
		for _, path := range []string{adminDefaults, adminTokenDir, stateDir} {
			if err := os.RemoveAll(path); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	mustRun(t, "dpkg", "-i", deb)
	if caps := mustRun(t, "getcap", "/usr/bin/hopcheck"); !strings.Contains(caps, "cap_net_raw") {
		t.Errorf("getcap /usr/bin/hopcheck = %q; want cap_net_raw", caps)
	}
	if v := mustRun(t, "/usr/bin/hopcheck", "--version"); !strings.Contains(v, "commit ") || !strings.Contains(v, "go1.") {
		t.Errorf("hopcheck --version = %q; want version, commit and Go version", v)
	}
	if pw := mustRun(t, "getent", "passwd", "hopcheck"); !strings.Contains(pw, "/usr/sbin/nologin") {
		t.Errorf("service user %q; want a system user without a shell", pw)
	}
	// The capability works for the unprivileged service user: a raw ICMP
	// trace of loopback (nothing leaves this host).
	if out, err := exec.Command("setpriv", "--reuid", "hopcheck", "--regid", "hopcheck", "--clear-groups",
		"/usr/bin/hopcheck", "trace", "--privilege", "raw", "-n", "--protocol", "icmp", "--max-hops", "2", "--format", "json", "127.0.0.1").CombinedOutput(); err != nil || !strings.Contains(string(out), `"reached": true`) {
		t.Errorf("raw trace of loopback as user hopcheck: %v\n%s", err, out)
	}
	for _, path := range []string{adminDefaults, adminTokenDir, stateDir} {
		if exists(path) {
			t.Errorf("dpkg -i made %s; the admin (or systemd, at the service's first start) makes it", path)
		}
	}
	unit, err := os.ReadFile("/usr/lib/systemd/system/hopcheck.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=hopcheck", "AmbientCapabilities=CAP_NET_RAW", "StateDirectory=hopcheck",
		"LoadCredential=token:/etc/hopcheck/token", "AssertPathExists=/etc/hopcheck/token",
		"EnvironmentFile=/usr/share/hopcheck/default\nEnvironmentFile=-/etc/default/hopcheck\n",
		"ExecStart=/usr/bin/hopcheck run ", "--history ", "--metrics-file ", "--token-file %d/token"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("hopcheck.service lacks %q", want)
		}
	}
	if defaults, err := os.ReadFile("/usr/share/hopcheck/default"); err != nil || !strings.Contains(string(defaults), "HOPCHECK_OPTS=") {
		t.Errorf("/usr/share/hopcheck/default: %v %q; want the defaults of HOPCHECK_OPTS", err, defaults)
	}
	if exists(timerWants) {
		t.Errorf("the package enabled hopcheck.timer; it must only install it")
	}
	if onPath("systemd-analyze") {
		if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "/usr/lib/systemd/system/hopcheck.service",
			"/usr/lib/systemd/system/hopcheck.timer").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	man, err := os.Open("/usr/share/man/man1/hopcheck.1.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(man)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(zr)
	man.Close()
	for _, want := range []string{".TH hopcheck 1", "soak", "--metrics-file"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if out, err := exec.Command("bash", "-c", "source /usr/share/bash-completion/completions/hopcheck && complete -p hopcheck").CombinedOutput(); err != nil || !strings.Contains(string(out), "_hopcheck") {
		t.Errorf("bash completion: %v %q; want a completion function for hopcheck", err, out)
	}
	// An admin enables the timer (systemctl does that offline too); dpkg -r
	// must not leave its symlink behind.
	enableTimer := func() bool {
		if !onPath("systemctl") {
			return false
		}
		if out, err := exec.Command("systemctl", "enable", "hopcheck.timer").CombinedOutput(); err != nil {
			t.Logf("systemctl enable hopcheck.timer: %v %s (not checked)", err, out)
			return false
		}
		return exists(timerWants)
	}
	t.Logf("timer enabled by systemctl for the removal check: %v", enableTimer())

	// The service never ran: dpkg -r leaves nothing, dpkg -P neither.
	mustRun(t, "dpkg", "-r", "hopcheck")
	if left := leftovers(); len(left) > 0 {
		t.Errorf("after dpkg -r: %s left", strings.Join(left, ", "))
	}
	mustRun(t, "dpkg", "-P", "hopcheck")
	if left := leftovers(); len(left) > 0 {
		t.Errorf("after dpkg -P: %s left", strings.Join(left, ", "))
	}
	if exec.Command("dpkg", "-s", "hopcheck").Run() == nil {
		t.Errorf("after dpkg -P: dpkg -s hopcheck still knows the package")
	}

	// Again, with what the admin and the service's runs add: the admin's
	// options and token, and history in the directory systemd made for
	// the service (which does not run here: it would reach the internet).
	mustRun(t, "dpkg", "-i", deb)
	t.Logf("timer enabled again: %v", enableTimer())
	if err := os.WriteFile(adminDefaults, []byte("HOPCHECK_OPTS=\"--profile quick --keep 50\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "install", "-d", "-m", "700", adminTokenDir)
	if err := os.WriteFile(adminToken, []byte("not-a-real-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "install", "-d", "-o", "hopcheck", "-g", "hopcheck", stateDir, stateDir+"/history")
	mustRun(t, "install", "-m", "644", "-o", "hopcheck", "-g", "hopcheck", "/dev/null", stateDir+"/last.json")

	mustRun(t, "dpkg", "-r", "hopcheck")
	if left, want := strings.Join(leftovers(), ", "), strings.Join([]string{adminDefaults, adminTokenDir, stateDir}, ", "); left != want {
		t.Errorf("after dpkg -r with the admin's files and a run's history: %s left; want %s", left, want)
	}
	mustRun(t, "dpkg", "-P", "hopcheck")
	if left, want := strings.Join(leftovers(), ", "), strings.Join([]string{adminDefaults, adminTokenDir}, ", "); left != want {
		t.Errorf("after dpkg -P with the admin's files: %s left; want %s (the history purged, the admin's files kept)", left, want)
	}
	if token, err := os.ReadFile(adminToken); err != nil || string(token) != "not-a-real-token\n" {
		t.Errorf("after dpkg -P: the admin's token %q, %v; want it untouched", token, err)
	}
}
