package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/hopcheck/hopcheck/trace"
)

// liveView redraws the traces so far after every round on a terminal, the
// way mtr does: the previous frame is erased (cursor up, clear to the end
// of the screen) and the tables are written again. When the frame would
// not fit the terminal (erasing cannot reach above its top), it prints one
// line per round instead.
type liveView struct {
	w      io.Writer
	rounds int
	rows   func() int // terminal height; 0 unknown
	opt    trace.TextOptions

	mu     sync.Mutex
	traces []trace.Trace // by job; a zero Target until its first round
	lines  int           // lines of the frame now on screen
}

func newLiveView(w io.Writer, jobs, rounds int, opt trace.TextOptions) *liveView {
	return &liveView{w: w, rounds: rounds, rows: func() int { return terminalRows(w) }, opt: opt, traces: make([]trace.Trace, jobs)}
}

// update takes job i's trace after a round and redraws.
func (v *liveView) update(i int, t trace.Trace) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.traces[i] = t
	var shown []trace.Trace
	round := v.rounds
	for _, t := range v.traces {
		if t.Target.Address != "" {
			shown = append(shown, t)
			round = min(round, t.Rounds)
		}
	}
	var frame bytes.Buffer
	fmt.Fprintf(&frame, "round %d/%d (Ctrl-C stops and writes the report)\n", round, v.rounds)
	_ = trace.WriteText(&frame, trace.Report{Traces: shown}, v.opt)
	n := strings.Count(frame.String(), "\n")
	if rows := v.rows(); rows > 0 && n >= rows {
		// Too tall to redraw in place: progress lines only.
		v.clearLocked()
		fmt.Fprintf(v.w, "  round %d/%d: %s %s\n", t.Rounds, v.rounds, t.Target.Protocol, t.Target.Address)
		return
	}
	io.WriteString(v.w, eraseLines(v.lines)+frame.String())
	v.lines = n
}

// clear erases the frame (the final report follows on stdout).
func (v *liveView) clear() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearLocked()
}

func (v *liveView) clearLocked() {
	io.WriteString(v.w, eraseLines(v.lines))
	v.lines = 0
}

// eraseLines moves the cursor to the start of the line n lines up and
// clears from there to the end of the screen (ECMA-48 CPL and ED).
func eraseLines(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf("\x1b[%dF\x1b[J", n)
}

// terminalRows is the height of the terminal behind w, 0 when unknown.
func terminalRows(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Row)
}
