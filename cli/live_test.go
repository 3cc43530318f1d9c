package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/trace"
)

func liveTrace(address string, rounds, sent int) trace.Trace {
	return trace.Trace{Target: trace.Target{Host: "h", Address: address, Port: 443, Protocol: "tcp"}, Rounds: rounds, Queries: 1, Flows: 1,
		Hops: []trace.Hop{{TTL: 1, Sent: sent, Received: sent, Responders: []trace.Responder{{Address: "198.18.0.1", Received: sent}}}}}
}

func TestLiveViewRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	v := newLiveView(&out, 2, 3, trace.TextOptions{})
	v.rows = func() int { return 0 }
	v.update(0, liveTrace("198.18.1.2", 1, 1))
	first := out.String()
	if strings.Contains(first, "\x1b[") || !strings.HasPrefix(first, "round 1/3") || !strings.Contains(first, "198.18.1.2") {
		t.Fatalf("first frame %q", first)
	}
	firstLines := strings.Count(first, "\n")
	out.Reset()
	v.update(1, liveTrace("198.18.9.2", 1, 1))
	v.update(0, liveTrace("198.18.1.2", 2, 2))
	second := out.String()
	// The second update erases exactly the first frame; the third the second.
	if !strings.HasPrefix(second, eraseLines(firstLines)) {
		t.Fatalf("second frame does not erase the %d lines of the first: %q", firstLines, second)
	}
	frames := strings.Split(second, "\x1b[J")
	last := frames[len(frames)-1]
	if !strings.HasPrefix(last, "round 1/3") || !strings.Contains(last, "198.18.1.2") || !strings.Contains(last, "198.18.9.2") {
		t.Errorf("last frame should show both traces, the slower at round 1: %q", last)
	}
	out.Reset()
	v.clear()
	if out.String() != eraseLines(strings.Count(last, "\n")) {
		t.Errorf("clear wrote %q", out.String())
	}
}

func TestLiveViewTooTallPrintsLines(t *testing.T) {
	var out bytes.Buffer
	v := newLiveView(&out, 1, 3, trace.TextOptions{})
	v.rows = func() int { return 3 }
	v.update(0, liveTrace("198.18.1.2", 1, 1))
	v.update(0, liveTrace("198.18.1.2", 2, 2))
	if got, want := out.String(), "  round 1/3: tcp 198.18.1.2\n  round 2/3: tcp 198.18.1.2\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEraseLines(t *testing.T) {
	if eraseLines(0) != "" || eraseLines(5) != "\x1b[5F\x1b[J" {
		t.Errorf("eraseLines: %q %q", eraseLines(0), eraseLines(5))
	}
}
