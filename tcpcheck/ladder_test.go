package tcpcheck

import (
	"math"
	"testing"
	"time"
)

func TestNewLadder(t *testing.T) {
	l := NewLadder(30 * time.Second)
	want := []time.Duration{2 * time.Second, 3 * time.Second, 4500 * time.Millisecond, 6750 * time.Millisecond,
		10130 * time.Millisecond, 15190 * time.Millisecond, 22780 * time.Millisecond, 30 * time.Second}
	if len(l.Rungs) != len(want) {
		t.Fatalf("rungs %v, want %v", l.Rungs, want)
	}
	for i := range want {
		if d := l.Rungs[i] - want[i]; d < -20*time.Millisecond || d > 20*time.Millisecond {
			t.Errorf("rung %d = %v, want %v", i, l.Rungs[i], want[i])
		}
	}
	if r := NewLadder(time.Second).Rungs; len(r) != 1 || r[0] != time.Second {
		t.Errorf("1s ladder %v", r)
	}
}

func TestLadderDone(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		lo, hi time.Duration
		want   bool
	}{
		{0, 0, false}, {30 * s, 0, true}, {8 * s, 10 * s, true}, {7 * s, 10 * s, false},
		{100 * s, 109 * s, true}, {100 * s, 115 * s, false},
	} {
		l := &Ladder{Max: 30 * s, Lo: c.lo, Hi: c.hi}
		if got := l.Done(); got != c.want {
			t.Errorf("Done(%v,%v) = %v", c.lo, c.hi, got)
		}
	}
}

func TestLadderPlanCoarseKeepsTargetsAndTakesNextRungs(t *testing.T) {
	l := NewLadder(30 * time.Second)
	slots := make([]Slot, 3)
	got := l.Plan(slots)
	if got[0] != l.Rungs[0] || got[1] != l.Rungs[1] || got[2] != l.Rungs[2] {
		t.Fatalf("first plan %v", got)
	}
	// Slot 0 survived its rung and is fresh again; the others keep theirs.
	l.Survived(l.Rungs[0])
	slots = []Slot{{Age: 0}, {Age: 2 * time.Second, Target: got[1]}, {Age: 2 * time.Second, Target: got[2]}}
	got2 := l.Plan(slots)
	if got2[1] != got[1] || got2[2] != got[2] || got2[0] != l.Rungs[3] {
		t.Errorf("second plan %v", got2)
	}
}

func TestLadderPlanRefineSpreadsAndRetires(t *testing.T) {
	s := time.Second
	l := &Ladder{Max: 30 * s, Lo: 6 * s, Hi: 10 * s}
	slots := []Slot{{Age: 11 * s}, {Age: 8 * s}, {Age: 0}, {Age: 3 * s}}
	got := l.Plan(slots)
	if got[0] != Retire {
		t.Errorf("old slot not retired: %v", got)
	}
	// Three usable slots over (6, 10) at 7, 8, 9 s: the 8 s old one takes
	// 9 s, the younger ones the lower points.
	if got[1] != 9*s || got[3] != 7*s || got[2] != 8*s {
		t.Errorf("refine plan %v", got)
	}
}

// simulate runs the planner against a path whose idle timeout is T (a
// connection idle ≥ T fails at reuse, detected at once) with width
// connections, and returns the bracket and the wall time.
func simulate(t *testing.T, T time.Duration, width int, max time.Duration) (lo, hi, wall time.Duration) {
	t.Helper()
	l := NewLadder(max)
	type conn struct{ fresh, target time.Duration }
	conns := make([]conn, width)
	now := time.Duration(0)
	for steps := 0; !l.Done(); steps++ {
		if steps > 10000 {
			t.Fatalf("no convergence: %+v", l)
		}
		slots := make([]Slot, width)
		for i, c := range conns {
			slots[i] = Slot{Age: now - c.fresh, Target: c.target}
		}
		plan := l.Plan(slots)
		next := time.Duration(math.MaxInt64)
		for i := range conns {
			switch plan[i] {
			case Retire:
				conns[i] = conn{fresh: now}
				conns[i].target = 0
			default:
				conns[i].target = plan[i]
			}
		}
		for i := range conns {
			if conns[i].target > 0 {
				if at := conns[i].fresh + conns[i].target; at < next {
					next = at
				}
			}
		}
		if next == time.Duration(math.MaxInt64) {
			// Nothing planned: all retired; replan at the same time.
			continue
		}
		now = next
		for i := range conns {
			c := conns[i]
			if c.target > 0 && c.fresh+c.target == now {
				if c.target >= T {
					l.Failed(c.target)
				} else {
					l.Survived(c.target)
				}
				conns[i] = conn{fresh: now}
			}
		}
	}
	return l.Lo, l.Hi, now
}

func TestLadderSimulated(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		T, max  time.Duration
		width   int
		maxWall float64 // × T
	}{
		{10 * s, 30 * s, 12, 1.6},
		{8 * s, 30 * s, 12, 1.6},
		{6 * s, 30 * s, 12, 1.8},
		{350 * s, 900 * s, 12, 1.6},
		{60 * s, 900 * s, 4, 3},
	} {
		lo, hi, wall := simulate(t, c.T, c.width, c.max)
		if !(lo < c.T && c.T <= hi) {
			t.Errorf("T=%v: bracket (%v, %v] misses it", c.T, lo, hi)
		}
		mid := (lo + hi) / 2
		if d := (mid - c.T).Abs(); d > time.Second && float64(d) > 0.05*float64(c.T) {
			t.Errorf("T=%v: estimate %v off by %v", c.T, mid, d)
		}
		if float64(wall) > c.maxWall*float64(c.T) {
			t.Errorf("T=%v width %d: wall %v > %.1f×T", c.T, c.width, wall, c.maxWall)
		}
		t.Logf("T=%v width %d: bracket (%v, %v], wall %v (%.2f×T)", c.T, c.width, lo, hi, wall, float64(wall)/float64(c.T))
	}
	// Nothing fails up to the maximum.
	lo, hi, _ := simulate(t, time.Hour, 12, 30*s)
	if lo != 30*s || hi != 0 {
		t.Errorf("no timeout: bracket (%v, %v]", lo, hi)
	}
}
