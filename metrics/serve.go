package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hopcheck/hopcheck/diagnose"
)

// ErrBadTarget marks a probe error caused by the request (unparsable or
// unresolvable target): HTTP 400.
var ErrBadTarget = errors.New("bad target")

// ProbeRequest is one validated /probe request.
type ProbeRequest struct {
	Target  string
	Profile diagnose.Profile
}

// ProbeFunc runs a bounded diagnosis (ctx carries the scrape deadline).
// Errors wrapping ErrBadTarget become HTTP 400, others 500.
type ProbeFunc func(ctx context.Context, req ProbeRequest) (diagnose.Report, error)

// Exporter is `hopcheck serve`: /metrics for itself, /probe for a
// diagnosis, in the style of blackbox_exporter.
type Exporter struct {
	probe ProbeFunc
	slots chan struct{}
	// DefaultTimeout bounds a probe without a scrape timeout header;
	// MaxTimeout bounds any probe.
	DefaultTimeout, MaxTimeout time.Duration
	// Offset is subtracted from the scrape timeout so that the answer
	// arrives before Prometheus gives up.
	Offset time.Duration

	reg      *Registry
	probes   *Family
	inFlight *Series
	duration *Series
}

// NewExporter runs at most maxConcurrent probes at once.
func NewExporter(probe ProbeFunc, maxConcurrent int) *Exporter {
	e := &Exporter{probe: probe, slots: make(chan struct{}, max(1, maxConcurrent)), DefaultTimeout: 2 * time.Minute,
		MaxTimeout: 10 * time.Minute, Offset: 500 * time.Millisecond, reg: NewRegistry()}
	e.probes = e.reg.CounterVec("hopcheck_serve_probes_total",
		"Probe requests by result (ok, findings, incomplete, bad-request, busy, error).", "result")
	e.inFlight = e.reg.Gauge("hopcheck_serve_probes_in_flight", "Probes running now.")
	e.duration = e.reg.Histogram("hopcheck_serve_probe_duration_seconds", "Wall time of probes.",
		[]float64{1, 5, 10, 30, 60, 120, 300, 600})
	return e
}

// serveText answers with the registries in the text format.
func serveText(w http.ResponseWriter, regs ...*Registry) {
	w.Header().Set("Content-Type", ContentType)
	_ = WriteText(w, regs...) // a write error means the scraper went away
}

// Handler serves /metrics and /probe.
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		serveText(w, e.reg, RuntimeRegistry())
	})
	mux.HandleFunc("/probe", e.serveProbe)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "hopcheck exporter: /metrics (the exporter itself), /probe?target=https://host&profile=quick[&idle_max=30s]")
	})
	return mux
}

// badRequest answers 400 with one line naming the bad value.
func (e *Exporter) badRequest(w http.ResponseWriter, format string, a ...any) {
	e.probes.With("bad-request").Inc()
	http.Error(w, oneLine(fmt.Sprintf(format, a...)), http.StatusBadRequest)
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// ParseProbeRequest validates the query of /probe. Pure.
func ParseProbeRequest(q map[string][]string) (ProbeRequest, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for k, v := range q {
		switch k {
		case "target", "profile", "idle_max":
			if len(v) > 1 {
				return ProbeRequest{}, fmt.Errorf("parameter %q given %d times", k, len(v))
			}
		default:
			return ProbeRequest{}, fmt.Errorf("unknown parameter %q (want target, profile, idle_max)", k)
		}
	}
	req := ProbeRequest{Target: get("target")}
	if req.Target == "" {
		return req, fmt.Errorf("missing parameter target (e.g. target=https://api.betradar.com)")
	}
	name := get("profile")
	if name == "" {
		name = "quick"
	}
	p, ok := diagnose.Profiles[name]
	if !ok {
		return req, fmt.Errorf("unknown profile %q (want quick, standard or full)", name)
	}
	if s := get("idle_max"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			return req, fmt.Errorf("idle_max %q must be a duration of at least 1s", s)
		}
		p.IdleMax = d
	}
	req.Profile = p
	return req, nil
}

// ScrapeTimeout is the probe's time bound: the scrape timeout header
// minus offset, else def; never above maxT. Pure.
func ScrapeTimeout(header string, def, maxT, offset time.Duration) (time.Duration, error) {
	t := def
	if header != "" {
		s, err := strconv.ParseFloat(header, 64)
		if err != nil || s <= 0 {
			return 0, fmt.Errorf("X-Prometheus-Scrape-Timeout-Seconds %q is not a positive number", header)
		}
		t = time.Duration(s*float64(time.Second)) - offset
		if t < time.Second {
			t = time.Second
		}
	}
	return min(t, maxT), nil
}

func (e *Exporter) serveProbe(w http.ResponseWriter, r *http.Request) {
	req, err := ParseProbeRequest(r.URL.Query())
	if err != nil {
		e.badRequest(w, "%v", err)
		return
	}
	timeout, err := ScrapeTimeout(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), e.DefaultTimeout, e.MaxTimeout, e.Offset)
	if err != nil {
		e.badRequest(w, "%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		e.probes.With("busy").Inc()
		http.Error(w, fmt.Sprintf("all %d probe slots busy until the scrape timeout", cap(e.slots)), http.StatusServiceUnavailable)
		return
	}
	defer func() { <-e.slots }()
	e.inFlight.Inc()
	defer e.inFlight.Dec()
	start := time.Now()
	rep, err := e.probe(ctx, req)
	took := time.Since(start)
	e.duration.Observe(took.Seconds())
	if err != nil {
		if errors.Is(err, ErrBadTarget) {
			e.badRequest(w, "%v", err)
			return
		}
		e.probes.With("error").Inc()
		http.Error(w, oneLine(err.Error()), http.StatusInternalServerError)
		return
	}
	reg := RunRegistry(rep, 0)
	success := reg.Gauge("hopcheck_probe_success", "1 when the probe finished and measured something (findings do not make it fail).")
	dur := reg.Gauge("hopcheck_probe_duration_seconds", "Wall time of the probe.")
	dur.Set(took.Seconds())
	switch {
	case Succeeded(rep) && len(rep.Findings) > 0:
		success.Set(1)
		e.probes.With("findings").Inc()
	case Succeeded(rep):
		success.Set(1)
		e.probes.With("ok").Inc()
	default:
		e.probes.With("incomplete").Inc()
	}
	serveText(w, reg)
}
