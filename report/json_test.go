package report

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/diagnose"
	"github.com/hopcheck/hopcheck/tcpcheck"
	"github.com/hopcheck/hopcheck/trace"
)

// No golden file for JSON: its fields are the model's (diagnose, trace,
// tcpcheck), which grow; the tests check the properties the schema
// promises instead.

func TestWriteJSONRoundTrip(t *testing.T) {
	in := demoReport()
	var b bytes.Buffer
	if err := WriteJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "}\n") || !strings.HasPrefix(b.String(), "{\n  \"schema_version\": 1,") {
		t.Errorf("want indented JSON starting with schema_version and ending with a newline, got %.80q...", b.String())
	}
	var out diagnose.Report
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if !out.StartedAt.Equal(in.StartedAt) {
		t.Errorf("started_at %v, want %v", out.StartedAt, in.StartedAt)
	}
	out.StartedAt = in.StartedAt
	// Omitted empty lists come back nil: compare with every list empty.
	got := withEmptyLists(reflect.ValueOf(out)).Interface().(diagnose.Report)
	want := withEmptyLists(reflect.ValueOf(in)).Interface().(diagnose.Report)
	for i := range got.Targets {
		if !reflect.DeepEqual(got.Targets[i], want.Targets[i]) {
			t.Errorf("JSON round trip changed target %d:\n got %+v\nwant %+v", i, got.Targets[i], want.Targets[i])
		}
	}
	got.Targets, want.Targets = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JSON round trip changed the report:\n got %+v\nwant %+v", got, want)
	}
}

func TestWriteJSONNoNull(t *testing.T) {
	sparse := diagnose.Report{
		SchemaVersion: 1,
		Targets: []diagnose.TargetReport{{
			Target: "tcp://198.18.5.2:443", Address: "198.18.5.2",
			Traces: []trace.Trace{{Hops: []trace.Hop{{TTL: 1}}}},
			Tests:  map[string]tcpcheck.Result{"connect": {}},
			Localisation: &diagnose.Localisation{InFlow: &diagnose.InFlow{},
				Rewrites: []diagnose.HopRewrite{{Hop: 2}}},
		}},
		Findings: []diagnose.Finding{{}},
	}
	for name, r := range map[string]diagnose.Report{"demo": demoReport(), "zero": {}, "sparse": sparse} {
		var b bytes.Buffer
		if err := WriteJSON(&b, r); err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		for _, path := range nulls(doc, "") {
			t.Errorf("%s: %s is null, want [] or {} (or absent)", name, path)
		}
		top := doc.(map[string]any)
		for _, key := range []string{"targets", "findings"} {
			if _, ok := top[key].([]any); !ok {
				t.Errorf("%s: %s is %T, want a list", name, key, top[key])
			}
		}
	}
	// The caller's report is untouched.
	if sparse.Findings[0].Evidence != nil || sparse.Targets[0].Traces[0].Hops[0].Responders != nil {
		t.Error("WriteJSON modified its argument")
	}
}

// nulls lists the JSON paths whose value is null.
func nulls(v any, path string) []string {
	switch x := v.(type) {
	case nil:
		return []string{path}
	case map[string]any:
		var out []string
		for k, e := range x {
			out = append(out, nulls(e, path+"."+k)...)
		}
		return out
	case []any:
		var out []string
		for i, e := range x {
			out = append(out, nulls(e, path+"["+strconv.Itoa(i)+"]")...)
		}
		return out
	}
	return nil
}
