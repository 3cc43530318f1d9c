package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/probe"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./trace -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./trace -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// buildTrace aggregates observations into a trace as the engine does.
func buildTrace(target Target, privilege string, queries, flows int, obs []Observation) Trace {
	t := Trace{Target: target, Privilege: privilege, Queries: queries, Flows: flows, Rounds: 1, DurationS: 1.25}
	t.Hops, t.Reached, t.ReachedTTL = Aggregate(obs, AggregateOptions{Queries: queries * flows, MaxHops: 30})
	return t
}

// onFlows spreads responses over flows 0, 1, ... in one round.
func onFlows(ttl int, rs ...*probe.Response) []Observation {
	out := make([]Observation, len(rs))
	for i, r := range rs {
		out[i] = Observation{TTL: ttl, Flow: i % 2, Round: i / 2, Response: r}
	}
	return out
}

// symmetric rewrites every reply's TTL to what a symmetric return path
// gives (the sender's initial TTL minus the hops before it), so that the
// fixtures show asymmetry only where a test puts it on purpose.
func symmetric(obs []Observation) []Observation {
	for _, o := range obs {
		if o.Response == nil || o.Response.ReplyTTL <= 0 {
			continue
		}
		initial := 255
		for _, i := range []int{64, 128} {
			if o.Response.ReplyTTL <= i {
				initial = i
				break
			}
		}
		o.Response.ReplyTTL = initial - o.TTL + 1
	}
	return obs
}

func sampleReport() Report {
	// 198.18.3.2 is an MPLS P router: RFC 4950 labels in each reply.
	mpls := func(ms float64) *probe.Response {
		r := te("198.18.3.2", ms)
		r.MPLS = []probe.MPLSLabel{{Label: 16005, TC: 0, S: false, TTL: 1}, {Label: 24001, TC: 0, S: true, TTL: 1}}
		return r
	}
	tcp := buildTrace(Target{Host: "api.example.com", Address: "198.19.0.10", Port: 443, Protocol: "tcp"}, "raw", 3, 2,
		symmetric(concat(
			onFlows(1, te("198.18.1.1", 0.41), te("198.18.1.1", 0.52), te("198.18.1.1", 0.38),
				te("198.18.1.1", 0.45), te("198.18.1.1", 0.4), te("198.18.1.1", 0.6)),
			onFlows(2, nil, nil, nil, nil, nil, nil),
			onFlows(3, te("198.18.3.1", 3.0), mpls(3.1), te("198.18.3.1", 3.4), mpls(2.9),
				te("198.18.3.1", 3.2), mpls(3.3)),
			onFlows(4, te("203.0.113.7", 10.5), nil, te("203.0.113.7", 11.5), nil, nil, te("203.0.113.7", 12.25)),
			onFlows(5, synAck("198.19.0.10", 12.0), synAck("198.19.0.10", 12.5), synAck("198.19.0.10", 13.0),
				synAck("198.19.0.10", 12.2), synAck("198.19.0.10", 12.4), synAck("198.19.0.10", 14.1)),
		)))
	tcp.Hops[0].Responders[0].Hostname = "gw.lab.example"
	tcp.Hops[3].Responders[0].Hostname = "edge1.transit.example"
	tcp.Hops[3].Responders[0].ASN = "AS64500"
	tcp.Hops[4].Responders[0].Hostname = "api.example.com"

	udp := buildTrace(Target{Host: "2001:db8::10", Address: "2001:db8::10", Port: 33434, Protocol: "udp"}, "unprivileged", 3, 1,
		symmetric(concat(
			at(1, te("2001:db8:1::1", 0.5), te("2001:db8:1::1", 0.7), te("2001:db8:1::1", 0.6)),
			at(2, unreach("2001:db8:2::1", 1, 1.5), unreach("2001:db8:2::1", 1, 1.6), nil),
		)))
	udp.Error = "trace interrupted: context canceled"

	return Report{
		SchemaVersion: SchemaVersion,
		Tool:          "hopcheck dev",
		StartedAt:     time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC),
		DurationS:     2.5,
		Traces:        []Trace{tcp, udp},
		Warnings:      []string{"unprivileged: no MPLS labels or quoted headers for udp"},
		Incomplete:    true,
	}
}

// protocolsReport has three protocols toward one address (TCP to 443 is
// rejected at hop 4 while ICMP and UDP reach hop 5) and one TCP trace
// toward another address of the same name.
func protocolsReport() Report {
	const dst = "198.19.0.10"
	path := func(ttl int, mk func(string, float64) *probe.Response, last string) []Observation {
		var obs []Observation
		for h := 1; h < ttl; h++ {
			addr := "198.18." + string(rune('0'+h)) + ".1"
			if h == 2 {
				obs = append(obs, at(h, nil, nil, nil)...)
				continue
			}
			obs = append(obs, at(h, te(addr, float64(h)), te(addr, float64(h)+0.5), te(addr, float64(h)+0.25))...)
		}
		return symmetric(append(obs, at(ttl, mk(last, 5), mk(last, 5.5), mk(last, 6))...))
	}
	icmp := buildTrace(Target{Host: "api.example.com", Address: dst, Protocol: "icmp"}, "raw", 3, 1,
		path(5, echo, dst))
	udp := buildTrace(Target{Host: "api.example.com", Address: dst, Port: 33434, Protocol: "udp"}, "raw", 3, 1,
		path(5, func(a string, ms float64) *probe.Response { return unreach(a, 3, ms) }, dst))
	// A firewall at hop 4 rejects TCP to 443 (ICMP admin prohibited).
	tcpObs := path(3, te, "198.18.3.1")
	tcpObs = append(tcpObs, symmetric(at(4, unreach("198.18.4.1", 13, 4), unreach("198.18.4.1", 13, 4.5), nil))...)
	tcpObs = append(tcpObs, at(5, nil, nil, nil)...)
	tcp := buildTrace(Target{Host: "api.example.com", Address: dst, Port: 443, Protocol: "tcp"}, "raw", 3, 1, tcpObs)
	other := buildTrace(Target{Host: "api.example.com", Address: "198.19.0.11", Port: 443, Protocol: "tcp"}, "raw", 3, 1,
		path(3, synAck, "198.19.0.11"))
	return Report{SchemaVersion: SchemaVersion, Tool: "hopcheck dev", Traces: []Trace{icmp, other, udp, tcp}}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sampleReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "text.golden", b.Bytes())
	for i, c := range b.String() {
		if c > 0x7e || (c < 0x20 && c != '\n') {
			t.Fatalf("non-ASCII or control character %q at byte %d", c, i)
		}
	}
}

func TestWriteTextColor(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sampleReport(), TextOptions{Color: true}); err != nil {
		t.Fatal(err)
	}
	golden(t, "text-color.golden", b.Bytes())
	// Without the escapes it is the plain rendering: colour never shifts columns.
	plain := strings.NewReplacer(ansiRed, "", ansiYellow, "", ansiGreen, "", ansiDim, "", ansiReset, "").Replace(b.String())
	var want bytes.Buffer
	_ = WriteText(&want, sampleReport(), TextOptions{})
	if plain != want.String() {
		t.Errorf("colour changes the layout:\n%s\nvs\n%s", plain, want.String())
	}
}

func TestWriteTextSideBySide(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, protocolsReport(), TextOptions{SideBySide: true}); err != nil {
		t.Fatal(err)
	}
	golden(t, "text-side-by-side.golden", b.Bytes())
	if !strings.Contains(b.String(), "tcp/443 stops after hop 4 while icmp and udp/33434 go on to hop 5\n") {
		t.Errorf("side-by-side view does not say where TCP stops:\n%s", b.String())
	}
	// Without SideBySide the same report is one table per trace.
	b.Reset()
	if err := WriteText(&b, protocolsReport(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "hopcheck trace to "); n != 4 {
		t.Errorf("%d tables without SideBySide, want 4", n)
	}
}

func TestWriteTextEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, Report{}, TextOptions{}); err != nil || b.String() != "no traces\n" {
		t.Errorf("empty report: %q, %v", b.String(), err)
	}
	b.Reset()
	failed := Report{Traces: []Trace{{Target: Target{Host: "h.example", Address: "198.19.0.1", Port: 443, Protocol: "tcp"},
		Privilege: "raw", Queries: 3, Rounds: 2, Error: "open raw socket: operation not permitted"}}}
	if err := WriteText(&b, failed, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "hopcheck trace to h.example (198.19.0.1) tcp/443, privilege raw, 3 queries x 2 rounds\n" +
		"error: open raw socket: operation not permitted\n" +
		"destination not reached\n"
	if b.String() != want {
		t.Errorf("failed trace:\n got %q\nwant %q", b.String(), want)
	}
}

func TestWriteTextHopWithoutResponders(t *testing.T) {
	r := Report{Traces: []Trace{{Target: Target{Address: "198.19.0.1", Protocol: "icmp"}, Queries: 1, Rounds: 1,
		Hops: []Hop{{TTL: 1, Sent: 1, Received: 1, RTTms: RTTStats{Last: 1, Min: 1, Avg: 1, Max: 1}}}}}}
	var b bytes.Buffer
	if err := WriteText(&b, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  1  ?  ") {
		t.Errorf("hop without responders not shown:\n%s", b.String())
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrors(t *testing.T) {
	if err := WriteText(failingWriter{}, sampleReport(), TextOptions{}); err == nil {
		t.Error("WriteText: no error from a failing writer")
	}
	if err := WriteJSON(failingWriter{}, sampleReport()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteJSON: err = %v", err)
	}
}

func TestWriteJSON(t *testing.T) {
	r := sampleReport()
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json.golden", b.Bytes())
	if !bytes.HasSuffix(b.Bytes(), []byte("}\n")) {
		t.Error("no trailing newline")
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	// Round trip: only nil lists became empty ones.
	if !reflect.DeepEqual(withEmptyLists(back), withEmptyLists(r)) {
		t.Errorf("round trip changed the report")
	}
	if r.Traces[0].Hops[1].Responders == nil || r.Traces[0].Hops[0].Responders[0].MPLS == nil {
		t.Error("fixture lost its empty lists")
	}
}

func TestWriteJSONEmptyLists(t *testing.T) {
	r := Report{SchemaVersion: SchemaVersion, Traces: []Trace{{Hops: []Hop{{Responders: []Responder{{Address: "198.18.0.1"}}}}}}}
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"mpls": []`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %s in\n%s", want, b.String())
		}
	}
	if r.Traces[0].Hops[0].Responders[0].MPLS != nil {
		t.Error("WriteJSON modified the caller's report")
	}
	b.Reset()
	_ = WriteJSON(&b, Report{})
	if !strings.Contains(b.String(), `"traces": []`) {
		t.Errorf("nil traces not written as []:\n%s", b.String())
	}
}

// TestWriteTextAsymm: a hop whose reply comes back over more or fewer
// routers than lie before it carries tracepath's "asymm N (+d)" note, as in
// the run report's hop table, before its own note; symmetric hops and hops
// of unknown return distance carry none.
func TestWriteTextAsymm(t *testing.T) {
	replyTTL := func(r *probe.Response, ttl int) *probe.Response { r.ReplyTTL = ttl; return r }
	obs := concat(
		at(1, replyTTL(te("198.18.1.1", 0.5), 255), replyTTL(te("198.18.1.1", 0.6), 255), replyTTL(te("198.18.1.1", 0.4), 255)),
		// Hop 2 answers from 4 routers away: the return path is 2 longer.
		at(2, replyTTL(te("198.18.2.1", 1.5), 252), replyTTL(te("198.18.2.1", 1.6), 252), replyTTL(te("198.18.2.1", 1.4), 252)),
		// Hop 3 comes back over 2 routers, one fewer, and drops a reply.
		at(3, replyTTL(te("198.18.3.1", 2.5), 254), nil, replyTTL(te("198.18.3.1", 2.4), 254)),
		at(4, replyTTL(echo("198.19.0.20", 3.5), 61), replyTTL(echo("198.19.0.20", 3.6), 61), replyTTL(echo("198.19.0.20", 3.4), 61)),
	)
	tr := buildTrace(Target{Host: "mq.example.com", Address: "198.19.0.20", Protocol: "icmp"}, "raw", 3, 1, obs)
	r := Report{SchemaVersion: SchemaVersion, Tool: "hopcheck dev", Traces: []Trace{tr}}
	var b bytes.Buffer
	if err := WriteText(&b, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "text-asymm.golden", b.Bytes())
	text := b.String()
	for _, want := range []string{"asymm 4 (+2)\n", "asymm 2 (-1)\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
	}
	if n := strings.Count(text, "asymm"); n != 2 {
		t.Errorf("%d asymm notes, want 2 (hops 1 and 4 are symmetric):\n%s", n, text)
	}
	// The JSON carries the same numbers (docs/schema-trace.md).
	b.Reset()
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	var got [][2]int
	for _, h := range back.Traces[0].Hops {
		got = append(got, [2]int{h.ReturnHops, h.Asymm})
	}
	if want := [][2]int{{1, 0}, {4, 2}, {2, -1}, {4, 0}}; !reflect.DeepEqual(got, want) {
		t.Errorf("JSON return_hops/asymm by hop = %v, want %v", got, want)
	}
}

func TestHopNote(t *testing.T) {
	asym := Hop{TTL: 3, Received: 2, ReturnHops: 5, Asymm: 2}
	noted := asym
	noted.Note = "!X administratively prohibited"
	for _, tc := range []struct {
		h    Hop
		want string
	}{
		{asym, "asymm 5 (+2)"},
		{noted, "asymm 5 (+2); !X administratively prohibited"},
		{Hop{TTL: 3, Received: 2, ReturnHops: 3, Note: "ECMP: 2 responders"}, "ECMP: 2 responders"},
		{Hop{TTL: 3, Note: "no reply"}, "no reply"},
	} {
		if got := hopNote(tc.h); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.h, got, tc.want)
		}
	}
	// The side-by-side view still finds the unreachable marker after the note.
	if c := compactResponder(Hop{Received: 2, Responders: []Responder{{Address: "198.18.4.1"}}, Note: noted.Note}); c.Text != "198.18.4.1 !X" {
		t.Errorf("compact responder %q", c.Text)
	}
}
