package tcpcheck

import (
	"math"
	"slices"
	"time"
)

// Ladder is the state of the idle-timeout search: the longest idle time
// known to survive (Lo) and the shortest known to fail (Hi, 0 while no
// failure has been seen). Planning is pure: the runner feeds it events
// and asks it for each connection's next target idle age.
//
// How it stays within about 1.3 T of wall time (T the timeout) with a
// dozen connections: before the first failure, the oldest connections
// take the next rungs (geometric by rungRatio), and every connection
// that survives a reuse starts again at age 0 and takes a rung further
// up. So while the climb goes on, connections of every age exist; when
// a reuse at rung r fails, some of them are already between r/rungRatio
// and r, and they are reused at once: the bracket shrinks to the
// precision goal without waiting for new connections to age. A box that
// ends idle flows with a FIN or RST when their state expires is seen at
// T plus one round trip (Failed and Survived of the same moment).
type Ladder struct {
	Rungs []time.Duration // geometric rungs up to the maximum
	Max   time.Duration
	Lo    time.Duration
	Hi    time.Duration // 0: no failure yet
	// Pending is the smallest idle age of the reuses still unanswered
	// after an answer was due (0: none). It is a probable failure — a
	// silent drop is certain only when the retransmissions give up, a
	// second or more later — so the plan refines below it at once, while
	// the connections whose ages lie below it are still there.
	Pending time.Duration
}

// Ladder tuning.
const (
	firstRung = 2 * time.Second
	fineStep  = 500 * time.Millisecond
	fineUntil = 5 * time.Second
	rungRatio = 1.2
	// The precision goal: the estimate (the middle of the bracket) within
	// ±5 % of the timeout or ±0.3 s, whichever is larger, with a little
	// room for the jitter of measured ages.
	goalRelative = 0.048
	goalAbsolute = 280 * time.Millisecond
	minSpacing   = 50 * time.Millisecond // targets closer than this to an edge or an age add nothing
	sentinelFrom = 4                     // slots needed before one is kept as the sentinel
	// MaxIdleConns is the most connections one idle test opens in all
	// (ladder, keepalive check, IP_MINTTL check, redials included).
	MaxIdleConns = 16
)

// NewLadder plans the rungs from 2 s (or max, if smaller) up to max,
// which is always the last rung (see nextRung).
func NewLadder(max time.Duration) *Ladder {
	l := &Ladder{Max: max}
	for r := firstRung; r < max; r = nextRung(r) {
		l.Rungs = append(l.Rungs, r.Round(10*time.Millisecond))
	}
	l.Rungs = append(l.Rungs, max)
	return l
}

// nextRung is the rung after r: steps of fineStep while they meet the
// precision goal themselves (below 5 s; the goal is ±0.28 s below about 6 s),
// then geometric by rungRatio.
func nextRung(r time.Duration) time.Duration {
	if r < fineUntil {
		return r + fineStep
	}
	return time.Duration(math.Round(float64(r) * rungRatio))
}

// Survived records that a connection answered after idling age.
func (l *Ladder) Survived(age time.Duration) {
	if age > l.Lo && (l.Hi == 0 || age < l.Hi) {
		l.Lo = age
	}
}

// Failed records that a connection failed after idling age (or was
// closed or reset while idle at that age).
func (l *Ladder) Failed(age time.Duration) {
	if l.Hi == 0 || age < l.Hi {
		l.Hi = age
	}
	if l.Lo >= l.Hi {
		// Inconsistent evidence (e.g. a timeout that varies): keep the
		// failure, which is what clients will meet.
		l.Lo = 0
	}
}

// goal is the largest half-width of the bracket that meets the precision
// goal for any timeout inside it.
func (l *Ladder) goal() time.Duration {
	return max(goalAbsolute, time.Duration(goalRelative*float64(l.Lo)))
}

// Done reports whether the search is over: the bracket's half-width is
// within the precision goal, or the maximum idle time survived.
func (l *Ladder) Done() bool {
	if l.Hi == 0 {
		return l.Lo >= l.Max
	}
	return (l.Hi-l.Lo)/2 <= l.goal()
}

// Estimate is the idle timeout: the middle of the bracket (0 when none
// was found).
func (l *Ladder) Estimate() time.Duration {
	if l.Hi == 0 {
		return 0
	}
	return (l.Lo + l.Hi) / 2
}

// Slot is one idle connection as the planner sees it.
type Slot struct {
	Age    time.Duration // idle so far
	Target time.Duration // planned idle age at which to reuse it; 0 none
}

// Retire is the target of a connection too old to tell anything more: the
// runner closes it and, while its connection budget lasts, opens a fresh
// one.
const Retire time.Duration = -1

// Plan returns the target idle age of every slot (same order); a slot
// with nothing useful to do gets 0.
//
// Before the first failure, the oldest slot waits (the sentinel) and the
// rungs above Lo go in ascending order to the oldest other slot that can
// still reach each. After it (or below a Pending reuse), slots already past
// the bracket are retired; slots inside it are reused at once (or keep
// their target inside it) unless another test lies within half the goal;
// younger slots aim at the middle of the widest gap still wider than the
// goal that they can reach.
func (l *Ladder) Plan(slots []Slot) []time.Duration {
	out := make([]time.Duration, len(slots))
	if l.Done() {
		return out
	}
	order := make([]int, len(slots))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(slots[b].Age - slots[a].Age) })
	if l.Pending > l.Lo && (l.Hi == 0 || l.Pending < l.Hi) {
		return l.refine(slots, order, l.Pending, true)
	}
	if l.Hi == 0 {
		// The oldest connection is the sentinel: never reused during the
		// climb, it is the one that sees a box's FIN or RST at expiry at T
		// plus one round trip.
		// It tests the maximum only. With fewer than sentinelFrom slots all
		// climb.
		climbers := order
		if len(order) >= sentinelFrom {
			climbers = order[1:]
			if slots[order[0]].Age+minSpacing <= l.Max {
				out[order[0]] = l.Max
			}
		}
		for _, r := range l.Rungs {
			if r <= l.Lo {
				continue
			}
			for _, i := range climbers {
				if out[i] == 0 && slots[i].Age+minSpacing <= r {
					out[i] = r
					break
				}
			}
		}
		return out
	}
	return l.refine(slots, order, l.Hi, false)
}

// refine plans the slots within (Lo, hi); speculative: hi is only
// Pending, so slots past it wait instead of being retired.
func (l *Ladder) refine(slots []Slot, order []int, hi time.Duration, speculative bool) []time.Duration {
	out := make([]time.Duration, len(slots))
	goal := l.goal()
	tests := []time.Duration{l.Lo, hi}
	far := func(p time.Duration) bool {
		for _, t := range tests {
			if (p - t).Abs() < goal/2 {
				return false
			}
		}
		return true
	}
	for _, i := range order {
		s := slots[i]
		switch {
		case s.Age+minSpacing >= hi && speculative:
			// wait for the answer
		case s.Age+minSpacing >= hi:
			out[i] = Retire
		case s.Target > s.Age && s.Target > l.Lo && s.Target < hi && far(s.Target):
			out[i] = s.Target
		case s.Age > l.Lo && far(s.Age+minSpacing):
			out[i] = s.Age + minSpacing
		}
		if out[i] > 0 {
			tests = append(tests, out[i])
		}
	}
	for _, i := range order {
		if out[i] != 0 {
			continue
		}
		earliest := slots[i].Age + minSpacing
		slices.Sort(tests)
		var best, bestWidth time.Duration
		for g := 1; g < len(tests); g++ {
			x, y := tests[g-1], tests[g]
			if y-x <= goal {
				continue // a gap this narrow meets the goal
			}
			p := max((x+y)/2, earliest)
			if p >= y-goal/4 {
				continue
			}
			if y-x > bestWidth {
				best, bestWidth = p, y-x
			}
		}
		if best > 0 {
			out[i] = best
			tests = append(tests, best)
		}
	}
	return out
}
