package tcpcheck

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

func TestIdleAdvice(t *testing.T) {
	for _, c := range []struct {
		t         time.Duration
		behaviour string
		want      []string
	}{
		{350 * time.Second, "reset", []string{"about 350s", "IdleConnTimeout = 175 s", "PooledConnectionIdleTimeout = 175 s", "evictIdleConnections(175 s)", "AMQP heartbeat 175 s"}},
		{10 * time.Second, "drop", []string{"dropped silently", "TCP keepalive time 5 s"}},
		{6 * time.Second, "close", []string{"closed after about 6s"}},
		{time.Second, "reset", []string{"IdleConnTimeout = 1 s"}},
	} {
		got := IdleAdvice(c.t, c.behaviour)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("IdleAdvice(%v, %s) = %q, missing %q", c.t, c.behaviour, got, w)
			}
		}
	}
}

func TestMajorityAndBehaviour(t *testing.T) {
	if majority(nil) != nil {
		t.Error("majority of nothing")
	}
	a := majority([]probe.Attribution{{Origin: probe.OriginServer, Hop: 4}, {Origin: probe.OriginMiddlebox, Hop: 2}, {Origin: probe.OriginMiddlebox, Hop: 2}})
	if a.Origin != probe.OriginMiddlebox || a.Hop != 2 {
		t.Errorf("majority %+v", a)
	}
	if b := majorityBehaviour([]idleFailure{{behaviour: "drop"}, {behaviour: "reset"}, {behaviour: "drop"}}); b != "drop" {
		t.Errorf("behaviour %s", b)
	}
	for o, want := range map[Outcome]string{OutcomeTimeout: "drop", OutcomeClosed: "close", OutcomeReset: "reset"} {
		if behaviourOf(o) != want {
			t.Errorf("behaviourOf(%s)", o)
		}
	}
}

func TestWriteReport(t *testing.T) {
	r := Report{SchemaVersion: SchemaVersion, Test: "idle", Evidence: "packets", Results: []Result{{Target: "https://x", Address: "198.18.0.2",
		Port: 443, App: AppHTTPS, Counts: map[Outcome]int{OutcomeOK: 3, OutcomeReset: 1}, ServerTTL: 59, ServerHop: 6,
		Idle: &IdleResult{TimeoutS: 9.5, BracketS: [2]float64{9, 10}, MaxS: 30, Behaviour: "reset", Width: 12, Verified: "survived"}}},
		Findings: []Finding{{Kind: KindIdleReset, Target: "https://x", Address: "198.18.0.2", Hop: 3, HopAddress: "198.18.2.2",
			Origin: probe.OriginMiddlebox, Confidence: "high", Method: "fingerprint", Evidence: []string{"e1"}, Advice: "a", IdleTimeoutS: 9.5, IdleBracketS: []float64{9, 10}}}}
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var back Report
	dec := json.NewDecoder(&js)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil || back.Findings[0].HopAddress != "198.18.2.2" || back.Results[0].Idle.TimeoutS != 9.5 || back.Findings[0].Method != "fingerprint" {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	var empty bytes.Buffer
	if err := WriteJSON(&empty, Report{}); err != nil || !strings.Contains(empty.String(), `"findings": []`) {
		t.Errorf("empty findings: %s", empty.String())
	}
	var txt bytes.Buffer
	if err := WriteText(&txt, r); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"idle timeout 9.5s", "FINDING idle-reset", "middlebox at hop 3 (198.18.2.2), confidence high (by fingerprint)", "reset 1", "server at hop 6"} {
		if !strings.Contains(txt.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, txt.String())
		}
	}
}

func TestPhaseStats(t *testing.T) {
	if NewStats(nil) != nil {
		t.Error("stats of nothing")
	}
	st := NewStats([]float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10})
	if st.N != 10 || st.P50 != 5 || st.P95 != 10 || st.Max != 10 {
		t.Errorf("stats %+v", st)
	}
	recs := []ConnRecord{
		{Phases: PhasesMs{TCP: 1, TLS: 3, FirstByte: 2}, Outcome: OutcomeOK},
		{Phases: PhasesMs{TCP: 5}, Outcome: OutcomeRefused, Phase: PhaseTCP},
		{Phases: PhasesMs{TCP: 2, TLS: 900}, Outcome: OutcomeTimeout, Phase: PhaseTLS},
	}
	ps := phaseStats(recs)
	if ps["tcp"].N != 2 || ps["tls"].N != 1 || ps["tls"].Max != 3 || ps["first_byte"].N != 1 {
		t.Errorf("phase stats %+v", ps)
	}
}

// The text report says the run-wide warnings, each once, after the
// findings (as run's text report does); none, no warning line.
func TestWriteTextWarnings(t *testing.T) {
	r := Report{Test: "idle", Evidence: "socket", Results: []Result{{Target: "https://x", Address: "198.18.0.2", Port: 443, App: AppHTTPS}},
		Findings: []Finding{{Kind: KindIdleReset, Target: "https://x", Address: "198.18.0.2", Origin: probe.OriginUnknown, Confidence: "low"}},
		Warnings: []string{"--evidence /tmp/ev: packet captures are unavailable", "a second caveat"}}
	for _, tc := range []struct {
		name     string
		warnings []string
	}{
		{"two warnings", r.Warnings},
		{"none", nil},
	} {
		r := r
		r.Warnings = tc.warnings
		var b bytes.Buffer
		if err := WriteText(&b, r); err != nil {
			t.Fatal(err)
		}
		txt := b.String()
		if n := strings.Count(txt, "warning: "); n != len(tc.warnings) {
			t.Errorf("%s: %d warning lines, want %d:\n%s", tc.name, n, len(tc.warnings), txt)
		}
		for _, w := range tc.warnings {
			if strings.Count(txt, "\nwarning: "+w+"\n") != 1 {
				t.Errorf("%s: text lacks %q once:\n%s", tc.name, w, txt)
			}
			if strings.Index(txt, w) < strings.Index(txt, "FINDING") {
				t.Errorf("%s: %q before the findings:\n%s", tc.name, w, txt)
			}
		}
	}
}

// An idle timeout enforced by the box that answered the SYN may be a
// TCP-terminating load balancer's: its settings are named, for that
// origin only, once; in-flow evidence of a middlebox removes them again.
func TestProxyIdleAdvice(t *testing.T) {
	base := IdleAdvice(6*time.Second, "close")
	for _, c := range []struct {
		name   string
		advice string
		origin probe.Origin
		want   []string
		absent []string
	}{
		{"server", base, probe.OriginServer, []string{base, "load balancer", "about 6s", "HAProxy timeout client / timeout server", "NLB TCP idle timeout (350 s)"}, nil},
		{"middlebox", base, probe.OriginMiddlebox, []string{base}, []string{"HAProxy"}},
		{"unknown", base, probe.OriginUnknown, []string{base}, []string{"HAProxy"}},
		{"once", WithProxyAdvice(base, probe.OriginServer, 6), probe.OriginServer, []string{"HAProxy"}, nil},
	} {
		got := WithProxyAdvice(c.advice, c.origin, 6)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.name, got, w)
			}
		}
		for _, w := range c.absent {
			if strings.Contains(got, w) {
				t.Errorf("%s: %q has %q", c.name, got, w)
			}
		}
		if n := strings.Count(got, proxyAdvicePrefix); n > 1 {
			t.Errorf("%s: the load balancer advice %d times", c.name, n)
		}
		if back := WithoutProxyAdvice(got); back != c.advice && c.name != "once" {
			t.Errorf("%s: WithoutProxyAdvice = %q, want %q", c.name, back, c.advice)
		}
	}
}
