package metrics

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The client library is a test dependency only: its parser checks what
// hopcheck writes, and its encoder is the reference the text must match
// byte for byte.

// parseText parses the text format with the client library's parser.
func parseText(t testing.TB, data []byte) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(bytes.NewReader(data))
}

// referenceText builds the same series with the client library and
// encodes them with expfmt.
func referenceText(t testing.TB, help string, labelValues [][2]string, values []float64, observations []float64) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "x_gauge", Help: help}, []string{"zone", "addr"})
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a_total", Help: "Counted."}, []string{"result"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "m_seconds", Help: "Durations.", Buckets: []float64{0.5, 1, 10}})
	one := prometheus.NewGauge(prometheus.GaugeOpts{Name: "b_single", Help: "One."})
	reg.MustRegister(g, c, h, one)
	for i, lv := range labelValues {
		g.WithLabelValues(lv[0], lv[1]).Set(values[i%len(values)])
		c.WithLabelValues(lv[1]).Add(math.Abs(values[i%len(values)]))
	}
	for _, o := range observations {
		h.Observe(o)
	}
	one.Set(values[0])
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("reference gather: %v", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatalf("reference encode: %v", err)
		}
	}
	return buf.String()
}

// ourText builds the series of referenceText with this package.
func ourText(t testing.TB, help string, labelValues [][2]string, values []float64, observations []float64) string {
	t.Helper()
	reg := NewRegistry()
	g := reg.GaugeVec("x_gauge", help, "zone", "addr")
	c := reg.CounterVec("a_total", "Counted.", "result")
	h := reg.Histogram("m_seconds", "Durations.", []float64{10, 0.5, 1})
	one := reg.Gauge("b_single", "One.")
	for i, lv := range labelValues {
		g.With(lv[0], lv[1]).Set(values[i%len(values)])
		c.With(lv[1]).Add(math.Abs(values[i%len(values)]))
	}
	for _, o := range observations {
		h.Observe(o)
	}
	one.Set(values[0])
	var buf bytes.Buffer
	if err := WriteText(&buf, reg); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestTextMatchesClientLibrary(t *testing.T) {
	for _, c := range []struct {
		name   string
		help   string
		labels [][2]string
		values []float64
		obs    []float64
	}{
		{"plain", "Plain help.", [][2]string{{"b", "198.18.0.2"}, {"a", "198.18.0.1"}, {"a", "10.0.0.1"}},
			[]float64{1, 0.0015, 1e-9}, []float64{0.2, 0.5, 0.7, 5, 100}},
		{"escapes", "Help with \\ and\nnewline \"quoted\".", [][2]string{{`q"uote`, "back\\slash"}, {"new\nline", ""}, {"", "ünï"}},
			[]float64{-1, 0, math.Inf(1)}, nil},
		{"big and small", "h", [][2]string{{"x", "y"}, {"x", "z"}, {"w", "y"}},
			[]float64{1e21, 123456789012345678, -0.000001234, math.Inf(-1), math.NaN()}, []float64{1, 10, 11, -3}},
		{"only zero", "h", [][2]string{{"x", "y"}}, []float64{0}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := referenceText(t, c.help, c.labels, c.values, c.obs)
			got := ourText(t, c.help, c.labels, c.values, c.obs)
			if got != want {
				t.Errorf("text differs from the client library's\n--- got\n%s\n--- want\n%s", got, want)
			}
			if _, err := parseText(t, []byte(got)); err != nil {
				t.Errorf("client parser: %v", err)
			}
		})
	}
}

// TestRandomTextMatchesClientLibrary: random label values (quotes,
// backslashes, newlines, non-ASCII), help texts and values encode as the
// client library encodes them. A seeded loop rather than a fuzz target:
// the client library's map iteration makes coverage-guided fuzzing stall
// on inputs it cannot reproduce.
func TestRandomTextMatchesClientLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "z", "0", "9", ".", ":", " ", `"`, `\`, "\n", "\n", "ü", "{", "}", "=", ",", "#"}
	str := func() string {
		var sb strings.Builder
		for range rng.IntN(6) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	specials := []float64{0, 1, -1, math.Inf(1), math.Inf(-1), math.NaN(), 1e21, 1e-7, 123456789, 0.1 + 0.2}
	num := func() float64 {
		if rng.IntN(3) == 0 {
			return specials[rng.IntN(len(specials))]
		}
		return (rng.Float64() - 0.3) * math.Pow(10, float64(rng.IntN(30)-15))
	}
	for i := range 2000 {
		seen := map[[2]string]bool{}
		var labels [][2]string
		for range 1 + rng.IntN(5) {
			lv := [2]string{str(), str()}
			if !seen[lv] {
				seen[lv] = true
				labels = append(labels, lv)
			}
		}
		// The counter is labelled by the second value alone: keep those
		// distinct too, one series each in both libraries.
		second := map[string]bool{}
		labels = slices.DeleteFunc(labels, func(lv [2]string) bool { d := second[lv[1]]; second[lv[1]] = true; return d })
		values := []float64{num(), num(), num()}
		var obs []float64
		for range rng.IntN(6) {
			if o := num(); !math.IsNaN(o) {
				obs = append(obs, o)
			}
		}
		help := str()
		want := referenceText(t, help, labels, values, obs)
		if got := ourText(t, help, labels, values, obs); got != want {
			t.Fatalf("case %d: text differs\n--- got\n%s\n--- want\n%s", i, got, want)
		}
	}
}

func TestSampleValue(t *testing.T) {
	text := "# HELP hopcheck_last_success_timestamp_seconds When.\n" +
		"# TYPE hopcheck_last_success_timestamp_seconds gauge\n" +
		"hopcheck_last_success_timestamp_seconds_other 5\n" +
		"hopcheck_last_success_timestamp_seconds 1.7725356e+09\n"
	for _, c := range []struct {
		data string
		want float64
		ok   bool
	}{
		{text, 1.7725356e+09, true},
		{"hopcheck_last_success_timestamp_seconds +Inf 1700000000000\n", math.Inf(1), true},
		{"hopcheck_last_success_timestamp_seconds_other 5\n", 0, false},
		{"hopcheck_last_success_timestamp_seconds abc\n", 0, false},
		{"", 0, false},
	} {
		got, ok := SampleValue([]byte(c.data), LastSuccessName)
		if got != c.want || ok != c.ok {
			t.Errorf("%q: %v %v, want %v %v", c.data, got, ok, c.want, c.ok)
		}
	}
}

// Registering a name again returns the same family; with another kind it
// is a family of its own that is never written.
func TestRegistryNames(t *testing.T) {
	r := NewRegistry()
	r.GaugeVec("g", "h", "l").With("1").Set(2)
	r.GaugeVec("g", "h", "l").With("1").Inc()
	r.CounterVec("g", "h").With().Set(9)
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if want := "# HELP g h\n# TYPE g gauge\ng{l=\"1\"} 3\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as /proc writes it.
	stat := "4242 (hop check) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 123456 1300000000 4500 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := parseProcStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if s.utime != 250 || s.stime != 75 || s.startTicks != 123456 || s.vsize != 1300000000 || s.rssPages != 4500 {
		t.Errorf("parsed %+v", s)
	}
	for _, bad := range []string{"", "12 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 ab 75 0 0 20 0 9 0 1 2 3 4 5"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	boot, err := parseBootTime([]byte("cpu  1 2 3\nintr 5\nbtime 1796600000\nprocesses 9\n"))
	if err != nil || boot != 1796600000 {
		t.Errorf("btime %v %v", boot, err)
	}
	if _, err := parseBootTime([]byte("cpu 1\n")); err == nil {
		t.Error("no btime: no error")
	}
}

// The exporter's /metrics carries the process and Go families under the
// client library's names, parsable by its parser.
func TestRuntimeRegistry(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteText(&buf, RuntimeRegistry()); err != nil {
		t.Fatal(err)
	}
	fams, err := parseText(t, buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
		"process_open_fds", "process_max_fds", "process_virtual_memory_bytes", "go_goroutines", "go_threads", "go_info",
		"go_memstats_alloc_bytes", "go_memstats_sys_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s in\n%s", name, buf.String())
		}
	}
	if f := fams["process_resident_memory_bytes"]; f != nil && f.Metric[0].Gauge.GetValue() < 1<<20 {
		t.Errorf("resident memory %v bytes: implausible", f.Metric[0].Gauge.GetValue())
	}
	if f := fams["process_start_time_seconds"]; f != nil {
		if v := f.Metric[0].Gauge.GetValue(); v < 1.6e9 || v > 4e9 {
			t.Errorf("start time %v: implausible", v)
		}
	}
}
