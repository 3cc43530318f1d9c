package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hopcheck/hopcheck/lab"
)

// parsePromText parses Prometheus text with the client library's parser
// (a test dependency; hopcheck writes the format itself).
func parsePromText(body string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(body))
}

// `hopcheck serve` runs inside the lab's client namespace, listening on
// the client's lab address, and is scraped from inside that namespace
// (lab.Dial): two concurrent /probe scrapes of the lab server return valid
// Prometheus text (checked with the client library's parser), a bad
// target is a 400 with one line, and /metrics serves the exporter's own.
func TestServeProbe(t *testing.T) {
	t.Parallel() // it mostly waits
	l := buildLab(t, lab.Scenario{Name: "serve", Routers: make([]lab.Router, 2)})
	listen := fmt.Sprintf("%s:9516", l.Client4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, l.ClientNS, binary, "serve", "--listen", listen, "--max-concurrent", "2", "--ca-file", l.CAFile,
		"--token-file", l.TokenFile())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("serve stderr:\n%s", stderr.String())
		}
	}()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.Dial(ctx, l.ClientNS, network, addr)
	}}}
	get := func(path string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+listen+path, nil)
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "90")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := get("/"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up: %s", stderr.String())
		}
	}
	target := fmt.Sprintf("https://%s", l.Server4)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := get("/probe?target=" + target + "&profile=quick&idle_max=5s")
			if code != 200 {
				t.Errorf("scrape %d: %d %s", i, code, body)
				return
			}
			fams, err := parsePromText(body)
			if err != nil {
				t.Errorf("scrape %d: not valid Prometheus text: %v\n%s", i, err, body)
				return
			}
			for _, name := range []string{"hopcheck_probe_success", "hopcheck_path_hops", "hopcheck_hop_rtt_seconds", "hopcheck_idle_timeout_seconds"} {
				if fams[name] == nil {
					t.Errorf("scrape %d: no %s", i, name)
				}
			}
			if f := fams["hopcheck_probe_success"]; f != nil && f.Metric[0].Gauge.GetValue() != 1 {
				t.Errorf("scrape %d: probe failed\n%s", i, body)
			}
			t.Logf("scrape %d: %d families, %d bytes", i, len(fams), len(body))
		}()
	}
	wg.Wait()
	t.Logf("two concurrent scrapes took %v", time.Since(start).Round(100*time.Millisecond))
	code, body := get("/probe?target=ftp://" + l.Server4.String())
	if code != 400 || strings.Count(body, "\n") != 1 || !strings.Contains(body, "ftp") {
		t.Errorf("bad target: %d %q", code, body)
	}
	code, body = get("/metrics")
	if _, err := parsePromText(body); code != 200 || err != nil || !strings.Contains(body, `hopcheck_serve_probes_total{result="bad-request"} 1`) {
		t.Errorf("/metrics %d %v\n%s", code, err, body)
	}
}
