package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The Prometheus text exposition format (version 0.0.4), written here
// rather than with client_golang: the client library, protobuf and procfs
// cost every hopcheck command about 1 ms of start-up (package init: a
// default registry with process collectors, protobuf's binary hash), more
// than a whole trace of a short path, and hopcheck needs only gauges,
// counters and one histogram. The output is byte for byte what the client
// library writes for the same series (tests check it with its encoder and
// parser): families sorted by name, label pairs by label name, series by
// label values.

// ContentType is the media type of the text format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Kind is a metric family's type.
type Kind string

// The kinds hopcheck writes.
const (
	KindGauge     Kind = "gauge"
	KindCounter   Kind = "counter"
	KindHistogram Kind = "histogram"
)

// Registry holds metric families; safe for concurrent use.
type Registry struct {
	mu   sync.Mutex
	fams map[string]*Family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{fams: map[string]*Family{}} }

// Family is one named metric with its series.
type Family struct {
	reg        *Registry
	name, help string
	kind       Kind
	labelNames []string
	buckets    []float64 // histogram upper bounds, ascending, without +Inf
	series     map[string]*Series
}

// Series is one labelled time series of a family.
type Series struct {
	fam    *Family
	values []string
	value  float64
	// histogram state: per-bucket (non-cumulative) counts, sum, count.
	counts []uint64
	sum    float64
	count  uint64
}

// family returns the family of that name, registering it when new.
// Names are constants of hopcheck; a name registered again with another
// kind or labels is a bug the tests catch, and it gets a family of its
// own that is never written, rather than a panic.
func (r *Registry) family(name, help string, kind Kind, buckets []float64, labels []string) *Family {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.fams[name]; ok && f.kind == kind && slices.Equal(f.labelNames, labels) {
		return f
	}
	f := &Family{reg: r, name: name, help: help, kind: kind, labelNames: labels, buckets: buckets, series: map[string]*Series{}}
	if _, taken := r.fams[name]; !taken {
		r.fams[name] = f
	}
	return f
}

// GaugeVec registers a gauge family with the given label names.
func (r *Registry) GaugeVec(name, help string, labels ...string) *Family {
	return r.family(name, help, KindGauge, nil, labels)
}

// CounterVec registers a counter family with the given label names.
func (r *Registry) CounterVec(name, help string, labels ...string) *Family {
	return r.family(name, help, KindCounter, nil, labels)
}

// Gauge registers an unlabelled gauge, present (at 0) from the start.
func (r *Registry) Gauge(name, help string) *Series {
	return r.GaugeVec(name, help).With()
}

// Histogram registers an unlabelled histogram with the given upper
// bounds (+Inf is implicit).
func (r *Registry) Histogram(name, help string, buckets []float64) *Series {
	b := slices.Clone(buckets)
	sort.Float64s(b)
	b = slices.DeleteFunc(b, func(x float64) bool { return math.IsInf(x, +1) })
	return r.family(name, help, KindHistogram, b, nil).With()
}

// With returns the series of the label values (created at 0 when new).
// Missing values are empty strings, extra ones are ignored.
func (f *Family) With(values ...string) *Series {
	vals := make([]string, len(f.labelNames))
	copy(vals, values)
	key := strings.Join(vals, "\xff")
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	s := f.series[key]
	if s == nil {
		s = &Series{fam: f, values: vals}
		if f.kind == KindHistogram {
			s.counts = make([]uint64, len(f.buckets)+1)
		}
		f.series[key] = s
	}
	return s
}

// Set sets a gauge.
func (s *Series) Set(v float64) {
	s.fam.reg.mu.Lock()
	s.value = v
	s.fam.reg.mu.Unlock()
}

// Add adds to a gauge or counter.
func (s *Series) Add(v float64) {
	s.fam.reg.mu.Lock()
	s.value += v
	s.fam.reg.mu.Unlock()
}

// Inc adds 1.
func (s *Series) Inc() { s.Add(1) }

// Dec subtracts 1.
func (s *Series) Dec() { s.Add(-1) }

// Observe records a histogram observation.
func (s *Series) Observe(v float64) {
	s.fam.reg.mu.Lock()
	defer s.fam.reg.mu.Unlock()
	i := sort.SearchFloat64s(s.fam.buckets, v) // first bound >= v: le is inclusive
	s.counts[i]++
	s.sum += v
	s.count++
}

// WriteText writes the families of every registry in the text format,
// sorted by name; families without series are left out, as the client
// library does. It copies the values under the registries' locks and
// writes after, so a slow reader never holds up the counters.
func WriteText(w io.Writer, regs ...*Registry) error {
	var snaps []familySnapshot
	for _, r := range regs {
		snaps = append(snaps, r.snapshot()...)
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].name < snaps[j].name })
	bw := bufio.NewWriter(w)
	for _, f := range snaps {
		f.write(bw)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write metrics: %w", err)
	}
	return nil
}

// familySnapshot is a family's text, ready to write: label pairs sorted
// by name, rows sorted by label values.
type familySnapshot struct {
	name, help string
	kind       Kind
	buckets    []float64
	rows       []seriesSnapshot
}

type seriesSnapshot struct {
	pairs  []labelPair
	value  float64
	counts []uint64
	sum    float64
	count  uint64
}

func (r *Registry) snapshot() []familySnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []familySnapshot
	for _, f := range r.fams {
		if len(f.series) == 0 {
			continue
		}
		order := make([]int, len(f.labelNames))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return f.labelNames[order[a]] < f.labelNames[order[b]] })
		fs := familySnapshot{name: f.name, help: f.help, kind: f.kind, buckets: f.buckets}
		for _, s := range f.series {
			pairs := make([]labelPair, len(order))
			for i, k := range order {
				pairs[i] = labelPair{f.labelNames[k], s.values[k]}
			}
			fs.rows = append(fs.rows, seriesSnapshot{pairs: pairs, value: s.value, counts: slices.Clone(s.counts), sum: s.sum, count: s.count})
		}
		sort.Slice(fs.rows, func(a, b int) bool {
			for i := range fs.rows[a].pairs {
				if va, vb := fs.rows[a].pairs[i].value, fs.rows[b].pairs[i].value; va != vb {
					return va < vb
				}
			}
			return false
		})
		out = append(out, fs)
	}
	return out
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// labelPair is one name="value" of a series.
type labelPair struct{ name, value string }

func (f familySnapshot) write(w *bufio.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n", f.name, helpEscaper.Replace(f.help))
	fmt.Fprintf(w, "# TYPE %s %s\n", f.name, f.kind)
	for _, r := range f.rows {
		if f.kind != KindHistogram {
			writeSample(w, f.name, r.pairs, r.value)
			continue
		}
		cum := uint64(0)
		for i, ub := range f.buckets {
			cum += r.counts[i]
			writeSample(w, f.name+"_bucket", append(slices.Clip(r.pairs), labelPair{"le", formatFloat(ub)}), float64(cum))
		}
		writeSample(w, f.name+"_bucket", append(slices.Clip(r.pairs), labelPair{"le", "+Inf"}), float64(r.count))
		writeSample(w, f.name+"_sum", r.pairs, r.sum)
		writeSample(w, f.name+"_count", r.pairs, float64(r.count))
	}
}

func writeSample(w *bufio.Writer, name string, pairs []labelPair, v float64) {
	w.WriteString(name)
	if len(pairs) > 0 {
		w.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(p.name)
			w.WriteString(`="`)
			valueEscaper.WriteString(w, p.value)
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

// formatFloat writes a sample value as the text format does (Go's
// shortest 'g' form, +Inf/-Inf/NaN).
func formatFloat(f float64) string {
	switch {
	case f == 0:
		return "0" // -0 too
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// SampleValue returns the value of the first sample of the unlabelled
// metric name in text-format data (ok false when absent or unparsable).
// It reads what WriteText wrote, for values carried from one file to the
// next.
func SampleValue(data []byte, name string) (float64, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, found := strings.CutPrefix(line, name)
		if !found || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		return v, err == nil
	}
	return 0, false
}
