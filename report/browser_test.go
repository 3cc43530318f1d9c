package report

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHTMLInHeadlessBrowser opens the HTML report in headless Chromium (when
// installed: `apt-get install chromium`) and checks that it renders the
// culprit hop and logs no console error or blocked load. Without a browser
// it skips, saying so.
func TestHTMLInHeadlessBrowser(t *testing.T) {
	var browser string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no headless browser (chromium) installed; the HTML structure is checked by TestHTML* without one")
	}
	var html bytes.Buffer
	if err := WriteHTML(&html, demoReport()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, html.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Flags as for any headless run on a closed network: no background
	// connections, a fresh profile.
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--enable-logging=stderr", "--v=0", "--dump-dom", "file://"+page)
	var dom, logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dom, &logs
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", browser, err, logs.String())
	}
	if !strings.Contains(dom.String(), `class="hop culprit"`) || !strings.Contains(dom.String(), `data-ttl="3"`) {
		t.Fatalf("rendered DOM lacks the culprit hop element (hop 3)")
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Refused to") || strings.Contains(line, "Uncaught") {
			t.Errorf("browser console: %s", line)
		}
	}
}
