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
type Ladder struct {
	Rungs []time.Duration // coarse geometric rungs up to the maximum
	Max   time.Duration
	Lo    time.Duration
	Hi    time.Duration // 0: no failure yet
}

// Ladder tuning.
const (
	firstRung  = 2 * time.Second
	rungRatio  = 1.5
	minSpacing = 50 * time.Millisecond // targets closer than this to an edge or an age add nothing
)

// NewLadder plans the coarse rungs: geometric from 2 s (or max, if
// smaller) by 1.5 up to max, which is always the last rung.
func NewLadder(max time.Duration) *Ladder {
	l := &Ladder{Max: max}
	for r := firstRung; r < max; r = time.Duration(math.Round(float64(r) * rungRatio)) {
		l.Rungs = append(l.Rungs, r.Round(10*time.Millisecond))
	}
	l.Rungs = append(l.Rungs, max)
	return l
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

// Done reports whether the search is over: the bracket is within ±5 % or
// ±1 s of its middle, or the maximum idle time survived.
func (l *Ladder) Done() bool {
	if l.Hi == 0 {
		return l.Lo >= l.Max
	}
	half := (l.Hi - l.Lo) / 2
	mid := (l.Hi + l.Lo) / 2
	return half <= time.Second || float64(half) <= 0.05*float64(mid)
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
// runner closes it and opens a fresh one.
const Retire time.Duration = -1

// Plan returns the target idle age of every slot (same order). Before the
// first failure, valid targets are kept and free slots take the next
// coarse rungs above what is known; after it, the slots spread evenly
// over the bracket (oldest first, each to the nearest point it can
// still reach), and slots
// already past the bracket are retired. A slot with nothing useful to do
// gets 0.
func (l *Ladder) Plan(slots []Slot) []time.Duration {
	out := make([]time.Duration, len(slots))
	if l.Done() {
		return out
	}
	if l.Hi == 0 {
		used := map[time.Duration]bool{}
		for i, s := range slots {
			if s.Target > l.Lo && s.Target > s.Age {
				out[i] = s.Target
				used[s.Target] = true
			}
		}
		for i, s := range slots {
			if out[i] != 0 {
				continue
			}
			for _, r := range l.Rungs {
				if r > l.Lo && r > s.Age+minSpacing && !used[r] {
					out[i], used[r] = r, true
					break
				}
			}
		}
		return out
	}
	var usable []int
	for i, s := range slots {
		if s.Age+minSpacing >= l.Hi {
			out[i] = Retire
			continue
		}
		usable = append(usable, i)
	}
	slices.SortStableFunc(usable, func(a, b int) int { return int(slots[b].Age - slots[a].Age) })
	// Grid points evenly over the bracket; each connection, oldest first,
	// takes the nearest free point it can still reach, so that connections
	// already idle for longer than Lo are reused soon.
	k := len(usable)
	step := (l.Hi - l.Lo) / time.Duration(k+1)
	taken := make([]bool, k)
	var targets []time.Duration
	for _, i := range usable {
		age := slots[i].Age
		for g := 0; g < k; g++ {
			p := l.Lo + step*time.Duration(g+1)
			if !taken[g] && p >= age+minSpacing {
				taken[g], out[i] = true, p
				break
			}
		}
		if out[i] == 0 {
			p := age + minSpacing
			near := false
			for _, t := range targets {
				near = near || (p-t).Abs() < step/2
			}
			if p > l.Lo && p < l.Hi && !near {
				out[i] = p
			}
		}
		if out[i] != 0 {
			targets = append(targets, out[i])
		}
	}
	return out
}
