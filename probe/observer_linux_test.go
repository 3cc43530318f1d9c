package probe

import (
	"errors"
	"io"
	"net"
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

// The capture socket sees both directions of a loopback connection once
// each (loopback shows every packet as outgoing and incoming). Loopback
// only; needs CAP_NET_RAW.
func TestObserverCapturesLoopbackFlowOnce(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello"))
			time.Sleep(200 * time.Millisecond)
			c.Close()
		}
	}()
	remote := ln.Addr().(*net.TCPAddr).AddrPort()
	o, err := NewObserver(remote)
	if errors.Is(err, ErrNoRawAccess) {
		t.Skip("needs CAP_NET_RAW")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.CaptureErr() != nil {
		t.Fatalf("capture socket: %v", o.CaptureErr())
	}
	c, err := net.Dial("tcp4", remote.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	o.WaitFinRst(port, time.Time{}, 2*time.Second)
	time.Sleep(100 * time.Millisecond)
	cap := o.Capture(port)
	syns, synAcks, data := 0, 0, 0
	for _, p := range cap.Packets {
		info, err := DecodeCaptured(p.Data)
		if err != nil || info.TCP == nil {
			t.Fatalf("packet %+v: %v", p, err)
		}
		switch {
		case info.TCP.Flags == FlagSYN && p.Out:
			syns++
		case info.TCP.Flags.Has(FlagSYN|FlagACK) && !p.Out:
			synAcks++
		case info.TCP.PayloadLen == 5 && !p.Out:
			data++
		}
	}
	if syns != 1 || synAcks != 1 || data != 1 || cap.Local.Port() != port || cap.Remote != remote {
		t.Errorf("capture of %s > %s: %d SYN, %d SYN-ACK, %d data segments (want 1 each) in %d packets", cap.Local, cap.Remote, syns, synAcks, data, len(cap.Packets))
	}
}
