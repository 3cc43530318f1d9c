package probe

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestInitialTTLAndSenderHop(t *testing.T) {
	for _, c := range []struct{ ttl, init, hop int }{
		{-1, 0, 0}, {0, 0, 0}, {1, 64, 64}, {59, 64, 6}, {62, 64, 3}, {64, 64, 1},
		{65, 128, 64}, {120, 128, 9}, {128, 128, 1}, {129, 255, 127}, {250, 255, 6}, {255, 255, 1}, {256, 0, 0},
	} {
		if got := InitialTTL(c.ttl); got != c.init {
			t.Errorf("InitialTTL(%d) = %d, want %d", c.ttl, got, c.init)
		}
		if got := SenderHop(c.ttl); got != c.hop {
			t.Errorf("SenderHop(%d) = %d, want %d", c.ttl, got, c.hop)
		}
	}
}

func TestAttribute(t *testing.T) {
	for _, c := range []struct {
		name   string
		rstTTL int
		server Fingerprint
		want   Origin
		hop    int
	}{
		{"server RST, 5 routers", 59, Fingerprint{TTL: 59}, OriginServer, 6},
		{"router 3 of 5", 62, Fingerprint{TTL: 59}, OriginMiddlebox, 3},
		{"router 2 of 4", 63, Fingerprint{TTL: 60}, OriginMiddlebox, 2},
		{"box with initial TTL 255 at the server's distance", 250, Fingerprint{TTL: 59}, OriginMiddlebox, 6},
		{"farther than the server", 57, Fingerprint{TTL: 59}, OriginUnknown, 8},
		{"no server fingerprint", 62, Fingerprint{}, OriginUnknown, 3},
		{"no TTL", -1, Fingerprint{TTL: 59}, OriginUnknown, 0},
		{"windows server", 120, Fingerprint{TTL: 120}, OriginServer, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := Attribute(Segment{TTL: c.rstTTL, Flags: FlagRST}, c.server)
			if a.Origin != c.want || a.Hop != c.hop || a.Reason == "" {
				t.Errorf("Attribute = %+v, want origin %s hop %d", a, c.want, c.hop)
			}
		})
	}
}

// segment4 builds an IPv4 packet with a TCP header (no options).
func segment4(ttl int, id uint16, flags TCPFlags, payload int) []byte {
	b := make([]byte, 40+payload)
	b[0] = 0x45
	total := len(b)
	b[2], b[3] = byte(total>>8), byte(total)
	b[4], b[5] = byte(id>>8), byte(id)
	b[6] = 0x40 // DF
	b[8] = byte(ttl)
	b[9] = 6
	copy(b[12:16], []byte{198, 18, 0, 10})
	copy(b[16:20], []byte{198, 18, 0, 1})
	tcp := b[20:]
	tcp[0], tcp[1] = 0x01, 0xbb // 443
	tcp[2], tcp[3] = 0xc3, 0x50 // 50000
	tcp[4], tcp[7] = 0x01, 0x02 // seq 0x01000002
	tcp[12] = 5 << 4
	tcp[13] = byte(flags)
	tcp[14], tcp[15] = 0xff, 0xff
	return b
}

func TestDecodeObservedIPv4(t *testing.T) {
	at := time.Unix(100, 0)
	for _, c := range []struct {
		name    string
		pkt     []byte
		wantErr error
		check   func(t *testing.T, s Segment)
	}{
		{"rst", segment4(62, 0, FlagRST|FlagACK, 0), nil, func(t *testing.T, s Segment) {
			if s.TTL != 62 || s.IPID != 0 || !s.DF || !s.Flags.Has(FlagRST) || s.Seq != 0x01000002 {
				t.Errorf("got %+v", s)
			}
			if s.Src != netip.MustParseAddrPort("198.18.0.10:443") || s.Dst != netip.MustParseAddrPort("198.18.0.1:50000") {
				t.Errorf("endpoints %v -> %v", s.Src, s.Dst)
			}
			if !s.At.Equal(at) {
				t.Errorf("at %v", s.At)
			}
		}},
		{"data", segment4(59, 77, FlagACK|FlagPSH, 10), nil, func(t *testing.T, s Segment) {
			if s.PayloadLen != 10 || s.IPID != 77 {
				t.Errorf("got %+v", s)
			}
		}},
		{"truncated", segment4(59, 1, FlagACK, 0)[:30], ErrTruncated, nil},
		{"not tcp", func() []byte { b := segment4(59, 1, FlagACK, 0); b[9] = 17; return b }(), ErrMalformed, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := DecodeObservedIPv4(c.pkt, at)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

func TestFlowRecord(t *testing.T) {
	var r FlowRecord
	r.add(Segment{TTL: 60, Flags: FlagSYN | FlagACK, Seq: 99, Ack: 4000})
	if !r.Seen || r.LastAck != 4000 || r.NextSeq != 100 {
		t.Errorf("after SYN-ACK: ack %d next %d", r.LastAck, r.NextSeq)
	}
	r.add(Segment{TTL: 60, Flags: FlagACK, Seq: 100, Ack: 4100, PayloadLen: 100})
	r.add(Segment{TTL: 60, Flags: FlagACK | FlagPSH, Seq: 200, Ack: 5000, PayloadLen: 100})
	r.add(Segment{TTL: 63, Flags: FlagRST | FlagACK, Seq: 7, Ack: 9}) // a RST moves nothing
	if r.SynAck == nil || r.Data != 2 || len(r.DataTTLs) != 1 || len(r.FinRst) != 1 {
		t.Fatalf("record %+v", r)
	}
	if r.LastAck != 5000 || r.NextSeq != 300 {
		t.Errorf("in-flow numbers ack %d next %d", r.LastAck, r.NextSeq)
	}
	if f := r.Fingerprint(); f.TTL != 60 {
		t.Errorf("fingerprint %+v", f)
	}
	c := r.clone()
	r.add(Segment{TTL: 60, Flags: FlagSYN | FlagACK}) // port reused: new connection
	if len(r.FinRst) != 0 || len(c.FinRst) != 1 {
		t.Errorf("reuse: %+v, clone %+v", r, c)
	}
}

func FuzzDecodeObservedIPv4(f *testing.F) {
	f.Add(segment4(62, 0, FlagRST, 0))
	f.Add(segment4(59, 7, FlagACK, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeObservedIPv4(b, time.Time{})
	})
}
