package probe

import (
	"testing"
	"time"
)

// WaitSynAck returns as soon as the reader records the SYN-ACK, and gives
// up after the wait when none comes.
func TestWaitSynAck(t *testing.T) {
	o := &Observer{flows: map[uint16]*FlowRecord{}}
	go func() {
		time.Sleep(20 * time.Millisecond)
		r := &FlowRecord{}
		r.add(Segment{TTL: 61, Flags: FlagSYN | FlagACK, Seq: 1, Ack: 2})
		o.mu.Lock()
		o.flows[40000] = r
		o.mu.Unlock()
	}()
	start := time.Now()
	if r := o.WaitSynAck(40000, 5*time.Second); r.SynAck == nil || r.Fingerprint().TTL != 61 {
		t.Fatalf("late SYN-ACK not seen: %+v", r)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("waited %v for a SYN-ACK recorded after 20 ms", waited)
	}
	start = time.Now()
	if r := o.WaitSynAck(40001, 30*time.Millisecond); r.SynAck != nil {
		t.Fatalf("SYN-ACK for a port never seen: %+v", r)
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Errorf("gave up after %v, before the 30 ms wait", waited)
	}
}
