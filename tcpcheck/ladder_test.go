package tcpcheck

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestNewLadder(t *testing.T) {
	l := NewLadder(10 * time.Second)
	want := []time.Duration{2 * time.Second, 2500 * time.Millisecond, 3 * time.Second, 3500 * time.Millisecond, 4 * time.Second,
		4500 * time.Millisecond, 5 * time.Second, 6 * time.Second, 7200 * time.Millisecond, 8640 * time.Millisecond, 10 * time.Second}
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
	ms := time.Millisecond
	for _, c := range []struct {
		lo, hi time.Duration
		want   bool
	}{
		{0, 0, false}, {30 * s, 0, true},
		{5 * s, 5500 * ms, true}, {5 * s, 5600 * ms, false}, // ±0.28 s below 6 s
		{100 * s, 109 * s, true}, {100 * s, 110 * s, false}, // ±4.8 % of the lower edge
		{0, 500 * ms, true}, {0, 2 * s, false},
	} {
		l := &Ladder{Max: 30 * s, Lo: c.lo, Hi: c.hi}
		if got := l.Done(); got != c.want {
			t.Errorf("Done(%v,%v) = %v", c.lo, c.hi, got)
		}
	}
}

func TestLadderPlanClimbGivesRungsToTheOldest(t *testing.T) {
	l := NewLadder(30 * time.Second)
	s := time.Second
	slots := make([]Slot, 4)
	got := l.Plan(slots)
	// Slot 0 is the sentinel: it waits for the maximum.
	if got[0] != l.Max || got[1] != l.Rungs[0] || got[2] != l.Rungs[1] || got[3] != l.Rungs[2] {
		t.Fatalf("first plan %v", got)
	}
	// Slot 1 survived its rung and is fresh again: it takes the next free
	// rung, the others keep theirs.
	l.Survived(l.Rungs[0])
	slots = []Slot{{Age: 2 * s}, {Age: 0}, {Age: 2 * s, Target: got[2]}, {Age: 2 * s, Target: got[3]}}
	got2 := l.Plan(slots)
	if got2[0] != l.Max || got2[2] != got[2] || got2[3] != got[3] || got2[1] != l.Rungs[3] {
		t.Errorf("second plan %v, rungs %v", got2, l.Rungs)
	}
	// A reuse at 3.5 s is unanswered past its due time (Pending): the
	// slots below it refine at once (the one inside the bracket now, the
	// young one in the middle of the wider gap), the older ones wait.
	l.Pending = 3500 * time.Millisecond
	got3 := l.Plan([]Slot{{Age: 3600 * time.Millisecond}, {Age: 1 * s}, {Age: 3 * s, Target: 4 * s}})
	if got3[0] != 0 || got3[2] != 3*s+minSpacing || got3[1] != 2525*time.Millisecond {
		t.Errorf("plan below a pending reuse %v", got3)
	}
}

func TestLadderPlanFewSlotsAllClimb(t *testing.T) {
	l := NewLadder(30 * time.Second)
	got := l.Plan(make([]Slot, 3))
	if got[0] != l.Rungs[0] || got[1] != l.Rungs[1] || got[2] != l.Rungs[2] {
		t.Errorf("plan %v: with 3 slots none waits as the sentinel", got)
	}
}

func TestLadderPlanRefine(t *testing.T) {
	s := time.Second
	ms := time.Millisecond
	for _, c := range []struct {
		name   string
		lo, hi time.Duration
		slots  []Slot
		want   []time.Duration
	}{
		{"past the bracket retires; inside is reused at once; young ones aim at the widest gap",
			100 * s, 120 * s, []Slot{{Age: 125 * s}, {Age: 110 * s}, {Age: 50 * s}, {Age: 10 * s}},
			[]time.Duration{Retire, 110*s + minSpacing, 105*s + minSpacing/2, 115*s + minSpacing/2}},
		{"a target inside the bracket is kept",
			100 * s, 120 * s, []Slot{{Age: 104 * s, Target: 112 * s}, {Age: 20 * s}},
			[]time.Duration{112 * s, 106 * s}},
		{"slots inside the bracket but near another test wait",
			100 * s, 120 * s, []Slot{{Age: 110 * s}, {Age: 110*s + 500*ms}},
			[]time.Duration{115*s + 275*ms, 110*s + 550*ms}},
		{"nothing to do in gaps that meet the goal",
			10 * s, 11 * s, []Slot{{Age: 3 * s}},
			[]time.Duration{10500 * ms}},
	} {
		l := &Ladder{Max: 900 * s, Lo: c.lo, Hi: c.hi}
		got := l.Plan(c.slots)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: plan %v, want %v", c.name, got, c.want)
		}
	}
}

// ladderSim is the idle runner in miniature: width slots, a budget of
// connections in all, a path whose idle timeout is T. A reuse after
// idling ≥ T fails: a reset is seen one round trip later, a drop after
// the retransmissions give up (dropDetect). With atExpiry the box ends
// idle flows itself at T (FIN/RST at expiry).
type ladderSim struct {
	T          time.Duration
	drop       bool
	atExpiry   bool
	width      int
	budget     int
	max        time.Duration
	rtt        time.Duration
	dialTime   time.Duration
	dropDetect time.Duration
	suspect    time.Duration // an unanswered reuse is pending after this
}

type simResult struct {
	lo, hi, wall time.Duration
	conns        int
}

func (sm ladderSim) run(t *testing.T) simResult {
	t.Helper()
	l := NewLadder(sm.max)
	type slot struct {
		fresh, target time.Duration
		busyUntil     time.Duration // a reuse in flight until then
		result        int           // of the reuse in flight: 1 survived, -1 failed
		age           time.Duration // tested by the reuse in flight
		open          bool
	}
	slots := make([]*slot, sm.width)
	conns := 0
	for i := range slots {
		slots[i] = &slot{fresh: sm.dialTime, open: true}
		conns++
	}
	now := time.Duration(0)
	redial := func(s *slot) {
		*s = slot{}
		if conns < sm.budget {
			conns++
			*s = slot{fresh: now + sm.dialTime, open: true}
		}
	}
	replan := func() {
		var idx []int
		var in []Slot
		for i, s := range slots {
			if s.open && s.busyUntil == 0 && now >= s.fresh {
				idx = append(idx, i)
				in = append(in, Slot{Age: now - s.fresh, Target: s.target})
			}
		}
		l.Pending = 0
		for _, s := range slots {
			if s.open && s.busyUntil > 0 && sm.suspect > 0 && now >= s.fresh+s.age+sm.suspect && s.age > l.Lo && (l.Pending == 0 || s.age < l.Pending) {
				l.Pending = s.age
			}
		}
		plan := l.Plan(in)
		for j, i := range idx {
			if plan[j] == Retire {
				redial(slots[i])
				continue
			}
			slots[i].target = plan[j]
		}
	}
	for steps := 0; !l.Done(); steps++ {
		if steps > 100000 {
			t.Fatalf("T=%v: no convergence: %+v", sm.T, l)
		}
		replan()
		next := time.Duration(math.MaxInt64)
		for _, s := range slots {
			switch {
			case !s.open:
			case s.busyUntil > 0:
				next = min(next, s.busyUntil)
				if sm.suspect > 0 && s.fresh+s.age+sm.suspect > now {
					next = min(next, s.fresh+s.age+sm.suspect)
				}
			case now < s.fresh:
				next = min(next, s.fresh)
			default:
				if s.target > 0 {
					next = min(next, s.fresh+s.target)
				}
				if sm.atExpiry {
					next = min(next, s.fresh+sm.T+sm.rtt)
				}
			}
		}
		if next == time.Duration(math.MaxInt64) {
			t.Fatalf("T=%v: stuck at %v with %+v", sm.T, now, l)
		}
		now = next
		for _, s := range slots {
			switch {
			case !s.open:
			case s.busyUntil > 0 && s.busyUntil == now:
				if s.result > 0 {
					l.Survived(s.age)
					*s = slot{fresh: now, open: true}
				} else {
					l.Failed(s.age)
					redial(s)
				}
			case s.busyUntil == 0 && now >= s.fresh && sm.atExpiry && s.fresh+sm.T+sm.rtt == now:
				age := now - s.fresh
				l.Failed(age)
				l.Survived(age - minSpacing)
				redial(s)
			case s.busyUntil == 0 && now >= s.fresh && s.target > 0 && s.fresh+s.target == now:
				s.age = s.target
				s.result, s.busyUntil = 1, now+sm.rtt
				if s.age >= sm.T {
					s.result = -1
					if sm.drop {
						s.busyUntil = now + sm.dropDetect
					}
				}
			}
		}
	}
	return simResult{lo: l.Lo, hi: l.Hi, wall: now, conns: conns}
}

// The goals of the idle ladder over timeouts from 2.5 s to 15 min: the
// estimate within ±5 % or ±0.3 s, wall time at most 1.5 T (drops: plus
// the time to see the loss), at most MaxIdleConns connections, with the
// CLI's default width (12, one of them the keepalive check).
func TestLadderGoals(t *testing.T) {
	ms := time.Millisecond
	var Ts []time.Duration
	for T := 2500 * ms; T < 900*time.Second; T = T * 103 / 100 {
		Ts = append(Ts, T)
	}
	for _, mode := range []string{"reset", "drop", "at-expiry"} {
		worstWall, worstErr, worstConns := 0.0, 0.0, 0
		for _, T := range Ts {
			sm := ladderSim{T: T, drop: mode == "drop", atExpiry: mode == "at-expiry", width: 11, budget: MaxIdleConns - 1,
				max: 900 * time.Second, rtt: 2 * ms, dialTime: 20 * ms, dropDetect: 1400 * ms, suspect: 300 * ms}
			r := sm.run(t)
			est := (r.lo + r.hi) / 2
			if !(r.lo < T && T <= r.hi) {
				t.Errorf("%s T=%v: bracket (%v, %v] misses it", mode, T, r.lo, r.hi)
			}
			errS := (est - T).Abs()
			if errS > 300*ms && float64(errS) > 0.05*float64(T) {
				t.Errorf("%s T=%v: estimate %v off by %v", mode, T, est, errS)
			}
			allowed := 1.5 * float64(T)
			if mode == "drop" {
				allowed += float64(sm.dropDetect)
			}
			if mode == "at-expiry" {
				allowed = float64(T + 2*sm.rtt + sm.dialTime)
			}
			if float64(r.wall) > allowed {
				t.Errorf("%s T=%v: wall %v = %.2f T", mode, T, r.wall, float64(r.wall)/float64(T))
			}
			if r.conns > MaxIdleConns-1 {
				t.Errorf("%s T=%v: %d connections", mode, T, r.conns)
			}
			wall := r.wall
			if mode == "drop" {
				wall -= sm.dropDetect
			}
			worstWall = max(worstWall, float64(wall)/float64(T))
			worstErr = max(worstErr, float64(errS)/float64(T))
			worstConns = max(worstConns, r.conns)
		}
		t.Logf("%s: %d timeouts, worst wall %.2f T (drops: after the loss was seen), worst error %.1f %%, at most %d connections", mode, len(Ts), worstWall, 100*worstErr, worstConns)
	}
	// Nothing fails up to the maximum.
	r := ladderSim{T: time.Hour, width: 12, budget: 15, max: 30 * time.Second, rtt: 2 * ms, dialTime: 20 * ms}.run(t)
	if r.lo != 30*time.Second || r.hi != 0 || r.wall > 31*time.Second {
		t.Errorf("no timeout: bracket (%v, %v] after %v", r.lo, r.hi, r.wall)
	}
}
