package localise

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
	"github.com/hopcheck/hopcheck/internal/tri"
	"github.com/hopcheck/hopcheck/probe"
)

// synBytes builds a SYN probe header as ProbeRewrites does.
func synBytes(t testing.TB, src, dst netip.Addr, sport uint16, seq uint32, o probe.SYNOptions) []byte {
	t.Helper()
	b, err := probe.BuildTCPSYN(src, dst, sport, 443, seq, 64240, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quoteOf is the quote a router would return of an IPv4 probe carrying
// tcp, with the quoted TTL and TOS given, cut to n transport bytes (0:
// all).
func quoteOf(t testing.TB, src, dst netip.Addr, ipid uint16, ttl int, tos uint8, tcp []byte, n int) *probe.Quoted {
	t.Helper()
	if dst.Is6() {
		q, err := probe.ReferenceQuote(src, dst, ipProtoTCP, 0, true, tcp)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	pkt, err := probe.BuildIPv4(src, dst, ipProtoTCP, ttl, ipid, true, tcp)
	if err != nil {
		t.Fatal(err)
	}
	pkt[1] = tos
	if n > 0 {
		pkt = pkt[:20+n]
	}
	return teQuote(t, pkt)
}

func TestCompareQuote(t *testing.T) {
	opts := probe.DefaultSYNOptions()
	opts.TSVal = 77
	sent := synBytes(t, client4, server4, 40000, 0x5eed0001, opts)
	ref := quoteOf(t, client4, server4, 9, 1, 0, sent, 0)
	clamped, noSACK, noTS := opts, opts, opts
	clamped.MSS = 1200
	noSACK.SACKPermitted = false
	noTS.Timestamps = false
	checksumOnly := slices.Clone(sent)
	checksumOnly[16] ^= 0xff

	// A real Linux router's quote of a probe.BuildTCPSYN probe (capture.sh):
	// nothing changed on the way.
	te, err := probe.DecodeICMPv4(ipv4Payload(t, packetfx.TE4SYNProbe))
	if err != nil {
		t.Fatal(err)
	}
	fixtureRef, err := probe.ReferenceQuote(client4, server4, ipProtoTCP, 7, false, packetfx.SYN4Probe[20:])
	if err != nil {
		t.Fatal(err)
	}

	sent6 := synBytes(t, client6, server6, 40000, 0x5eed0001, opts)
	ref6 := quoteOf(t, client6, server6, 0, 1, 0, sent6, 0)

	for _, c := range []struct {
		name      string
		ref, seen *probe.Quoted
		depth     QuoteDepth
		want      string
	}{
		{"untouched", ref, quoteOf(t, client4, server4, 9, 1, 0, sent, 0), QuoteFull, ""},
		{"quoted TTL 0 is normal", ref, quoteOf(t, client4, server4, 9, 0, 0, sent, 0), QuoteFull, ""},
		{"real router quote", fixtureRef, te.Quoted, QuoteFull, ""},
		{"mss clamped", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 40000, 0x5eed0001, clamped), 0),
			QuoteFull, "[mss 1460→1200]"},
		{"sack replaced by nops", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 40000, 0x5eed0001, noSACK), 0),
			QuoteFull, "[sack-permitted yes→no tcp-options mss,sackok,ts,nop,ws→mss,nop,nop,ts,nop,ws]"},
		{"timestamps stripped", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 40000, 0x5eed0001, noTS), 0),
			QuoteFull, "[timestamps yes→no tcp-options mss,sackok,ts,nop,ws→mss,nop,nop,sackok,nop,ws ip-length 60→52]"},
		{"seq shuffled", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 40000, 0x12345678, opts), 0),
			QuoteFull, fmt.Sprintf("[seq %d→%d]", 0x5eed0001, 0x12345678)},
		{"source translated", ref, quoteOf(t, router4, server4, 9, 1, 0, synBytes(t, router4, server4, 1024, 0x5eed0001, opts), 0),
			QuoteFull, "[src address 198.18.1.2→198.18.1.1 src port 40000→1024]"},
		{"8-byte quote", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 40000, 0x5eed0001, clamped), 8),
			QuotePartial, ""},
		{"4-byte quote with a port change", ref, quoteOf(t, client4, server4, 9, 1, 0, synBytes(t, client4, server4, 1024, 0x5eed0001, opts), 4),
			QuotePartial, "[src port 40000→1024]"},
		{"ttl raised", ref, quoteOf(t, client4, server4, 9, 5, 0, sent, 0), QuoteFull, "[ttl 1→5]"},
		{"dscp set and ip id rewritten", ref, quoteOf(t, client4, server4, 1234, 1, 0x28, sent, 0), QuoteFull, "[ip-id 9→1234 tos 0x00→0x28]"},
		{"checksum alone", ref, quoteOf(t, client4, server4, 9, 1, 0, checksumOnly, 0), QuoteFull,
			fmt.Sprintf("[tcp-checksum 0x%04x→0x%04x]", binary.BigEndian.Uint16(sent[16:]), binary.BigEndian.Uint16(checksumOnly[16:]))},
		{"v6 mss clamped", ref6, quoteOf(t, client6, server6, 0, 1, 0, synBytes(t, client6, server6, 40000, 0x5eed0001, clamped), 0),
			QuoteFull, "[mss 1460→1200]"},
		{"v6 untouched", ref6, quoteOf(t, client6, server6, 0, 1, 0, sent6, 0), QuoteFull, ""},
		{"family mismatch", ref, ref6, QuoteNone, ""},
		{"no quote", ref, nil, QuoteNone, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			depth, pairs := compareQuote(c.ref, c.seen)
			if depth != c.depth {
				t.Errorf("depth %s, want %s", depth, c.depth)
			}
			if got := changesText(changesOf(pairs)); got != c.want {
				t.Errorf("changes %s, want %s", got, c.want)
			}
			for _, p := range pairs {
				if !slices.Contains(fieldOrder, p.Field) {
					t.Errorf("field %s not in fieldOrder", p.Field)
				}
			}
		})
	}
}

// fieldsOf is a compact way to write one hop's compared fields:
// "mss=1460>1200 seq=5>9" (sent>seen; a bare value is unchanged).
func fieldsOf(s string) []fieldPair {
	var out []fieldPair
	for _, f := range strings.Fields(s) {
		name, v, _ := strings.Cut(f, "=")
		sent, seen, changed := strings.Cut(v, ">")
		if !changed {
			seen = sent
		}
		out = append(out, fieldPair{Field: RewriteField(name), Sent: sent, Seen: seen})
	}
	return out
}

func TestAttributeRewrites(t *testing.T) {
	for _, c := range []struct {
		name string
		hops map[int]string // TTL -> fields; a missing TTL had no usable quote
		want []string
	}{
		{"clamp at hop 2", map[int]string{1: "mss=1460", 2: "mss=1460", 3: "mss=1460>1200", 4: "mss=1460>1200"},
			[]string{"mss 1460→1200 at hop 2 (seen at 3)"}},
		{"silent hop after the clamp", map[int]string{1: "mss=1460", 2: "mss=1460", 4: "mss=1460>1200"},
			[]string{"mss 1460→1200 at hop 2-3 (seen at 4)"}},
		{"8-byte quote after the clamp", map[int]string{1: "mss=1460 seq=1", 2: "mss=1460 seq=2", 3: "seq=3", 4: "mss=1460>1200 seq=4"},
			[]string{"mss 1460→1200 at hop 2-3 (seen at 4)"}},
		{"seq shuffled at hop 1, every probe differently", map[int]string{1: "seq=11", 2: "seq=12>991", 3: "seq=13>5"},
			[]string{"seq 12→991 at hop 1 (seen at 2)"}},
		{"changed and restored", map[int]string{1: "mss=1460", 2: "mss=1460>1400", 3: "mss=1460"},
			[]string{"mss 1460→1400 at hop 1 (seen at 2)", "mss 1400→1460 at hop 2 (seen at 3)"}},
		{"two boxes clamp", map[int]string{1: "mss=1460>1400", 2: "mss=1460>1400", 3: "mss=1460>1300"},
			[]string{"mss 1460→1400 at hop 0 (seen at 1)", "mss 1400→1300 at hop 2 (seen at 3)"}},
		{"nothing changed", map[int]string{1: "mss=1460 src-port=40000", 2: "mss=1460 src-port=40000"}, nil},
		{"no quotes", map[int]string{}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var hops []hopFields
			for ttl := 1; ttl <= 8; ttl++ {
				if s, ok := c.hops[ttl]; ok {
					hops = append(hops, hopFields{TTL: ttl, Fields: fieldsOf(s)})
				}
			}
			var got []string
			for _, r := range attributeRewrites(hops) {
				got = append(got, fmt.Sprintf("%s (seen at %d)", r, r.SeenAt))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("rewrites %q, want %q", got, c.want)
			}
		})
	}
}

func TestFinishRewrites(t *testing.T) {
	rows := []ttlRewrite{
		{TTL: 1, fields: fieldsOf("mss=1460>1400")},
		{TTL: 2, fields: fieldsOf("mss=1460>1400")},
		{TTL: 3, fields: fieldsOf("mss=1460>1200")},
		{TTL: 4, Answer: AnswerDestination},
	}
	finishRewrites(rows)
	if got := changesText(rows[2].Changes); got != "[mss 1460→1200]" {
		t.Errorf("ttl 3 changes %s", got)
	}
	// Hop 0 (this host) has no row: its rewrite is listed where seen.
	if len(rows[0].Rewrites) != 1 || rows[0].Rewrites[0].Hop != 0 || rows[0].Rewrites[0].String() != "mss 1460→1400 at hop 0" {
		t.Errorf("ttl 1 rewrites %v", rows[0].Rewrites)
	}
	if len(rows[1].Rewrites) != 1 || rows[1].Rewrites[0].String() != "mss 1400→1200 at hop 2" {
		t.Errorf("ttl 2 rewrites %v", rows[1].Rewrites)
	}
	if len(rows[2].Rewrites)+len(rows[3].Rewrites) != 0 || rows[3].Changes != nil {
		t.Errorf("rows 3-4: %+v %+v", rows[2], rows[3])
	}
}

func TestNATVerdict(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.9")
	for _, c := range []struct {
		name       string
		sent, seen string
		dst        netip.Addr
		want       tri.State
		changes    string
	}{
		{"same endpoint", "198.18.0.1:40000", "198.18.0.1:40000", server4, tri.No, ""},
		{"v4-mapped view of the same endpoint", "198.18.0.1:40000", "[::ffff:198.18.0.1]:40000", server4, tri.No, ""},
		{"address translated", "198.18.0.1:40000", "198.18.1.1:40000", server4, tri.Yes, "[src address 198.18.0.1→198.18.1.1]"},
		{"address and port", "198.18.0.1:40000", "198.18.1.1:1024", server4, tri.Yes, "[src address 198.18.0.1→198.18.1.1 src port 40000→1024]"},
		{"port only", "198.18.0.1:40000", "198.18.0.1:1024", server4, tri.Yes, "[src port 40000→1024]"},
		{"no view, private to public", "192.168.1.10:40000", "", public, tri.Yes, ""},
		{"no view, CGN to public", "100.64.3.4:40000", "", public, tri.Yes, ""},
		{"no view, ULA to public", "[fd00::1]:40000", "", netip.MustParseAddr("2001:4860::1"), tri.Yes, ""},
		{"no view, private to private", "192.168.1.10:40000", "", netip.MustParseAddr("10.0.0.1"), tri.NotTested, ""},
		{"no view, lab addresses", "198.18.0.1:40000", "", server4, tri.NotTested, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var seen netip.AddrPort
			if c.seen != "" {
				seen = netip.MustParseAddrPort(c.seen)
			}
			r := NATVerdict(netip.MustParseAddrPort(c.sent), seen, c.dst)
			if r.Translated != c.want || listText(r.Changes) != c.changes {
				t.Errorf("%+v, want %s %s", r, c.want, c.changes)
			}
			if (r.Translated == tri.NotTested) != (r.Evidence == "") {
				t.Errorf("evidence %q with %s", r.Evidence, r.Translated)
			}
		})
	}
}

// answersOf writes in-flow answers compactly, one token per TTL from 1:
// "T" time-exceeded from r<ttl>, "A60" the server's ACK received with TTL
// 60, "R62" a RST received with TTL 62 ("R": TTL unknown), "U2" an ICMP
// unreachable from r2, "-" nothing.
func answersOf(s string) []InFlowAnswer {
	var out []InFlowAnswer
	for i, tok := range strings.Fields(s) {
		ttl := i + 1
		a := InFlowAnswer{TTL: ttl, Kind: InFlowNone, ReplyTTL: -1}
		n, _ := strconv.Atoi(tok[1:])
		switch tok[0] {
		case 'T':
			a.Kind, a.From, a.ReplyTTL = InFlowTimeExceeded, routerAddr(ttl).String(), 65-ttl
		case 'A':
			a.Kind, a.From, a.ReplyTTL, a.SenderHop = InFlowACK, server4.String(), n, probe.SenderHop(n)
		case 'R':
			a.Kind, a.From = InFlowRST, server4.String()
			if n > 0 {
				a.ReplyTTL, a.SenderHop = n, probe.SenderHop(n)
			}
		case 'U':
			a.Kind, a.From = InFlowUnreachable, routerAddr(n).String()
		}
		out = append(out, a)
	}
	return out
}

func routerAddr(hop int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(hop - 1), 2}) }

func TestExplainStateLoss(t *testing.T) {
	for _, c := range []struct {
		name             string
		healthy, expired string
		behaviour        LossBehaviour
		hop, upTo        int
	}{
		{"linux box at hop 3 of 5 resets", "T T T T T A59", "T T T R62", LossReset, 3, 3},
		{"reset, RST TTL unknown: Linux assumed, range says so", "T T T T T A59", "T T T R", LossReset, 3, 4},
		{"box resetting before its TTL check", "T T T T T A59", "T T R62", LossReset, 3, 3},
		{"reset box silent to ICMP", "T T T T T A59", "T T - R62", LossReset, 3, 3},
		{"RST TTL inconsistent with the position", "T T T T T A59", "T T T R59", LossReset, 3, 4},
		{"reset at hop 1", "T T A62", "R64", LossReset, 1, 1},
		{"box at hop 2 of 4 drops", "T T T T A60", "T T - - -", LossDrop, 2, 2},
		{"drop, silent router 3 widens the range", "T T - T A60", "T T - - -", LossDrop, 2, 3},
		{"drop at the last router or the server", "T T T T A60", "T T T T -", LossDrop, 4, 5},
		{"nothing at all comes back", "T T A62", "- - -", LossDrop, 1, 1},
		{"server resets (or a NAT remapped the port)", "T T T A61", "T T T R61", LossServerReset, 4, 4},
		{"a box at the server's distance with another initial TTL", "T T T A61", "T T T R252", LossReset, 4, 4},
		{"ICMP reject from router 2", "T T T A61", "T T U2", LossReject, 2, 2},
		{"flow alive", "T T T A61", "T T T A61", LossNone, 0, 0},
		{"flow alive, one router silent now", "T T T A61", "T - T A61", LossNone, 0, 0},
		{"destination silent in both runs", "T T -", "T T -", LossNone, 0, 0},
		{"healthy run already reset", "T T R62", "T T R62", LossUndetermined, 0, 0},
		{"no expired run", "T T A62", "", LossUndetermined, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := ExplainStateLoss(answersOf(c.healthy), answersOf(c.expired))
			if l.Behaviour != c.behaviour || l.Hop != c.hop || l.UpTo != c.upTo {
				t.Errorf("%+v, want %q at hop %d-%d", l, c.behaviour, c.hop, c.upTo)
			}
			if l.Reason == "" {
				t.Error("no reason")
			}
			if hop, b := LocateStateLoss(answersOf(c.healthy), answersOf(c.expired)); hop != l.Hop || b != l.Behaviour {
				t.Errorf("LocateStateLoss = %d %q", hop, b)
			}
		})
	}
}

func TestFlowStateFromInfo(t *testing.T) {
	local, remote := netip.MustParseAddrPort("127.0.0.1:43238"), netip.MustParseAddrPort("127.0.0.1:38973")
	// Captured on loopback: we sent 10 bytes, the server 20.
	synAck := probe.Segment{Src: remote, Dst: local, Flags: probe.FlagSYN | probe.FlagACK, Seq: 1508333303, Ack: 1004498530}
	idle := probe.TCPInfo{State: probe.TCPStateEstablished, RcvWScale: 7, BytesAcked: 11, BytesReceived: 20, BytesSent: 10, RcvWnd: 65536}
	want := FlowState{Local: local, Remote: remote, Seq: 1004498540, Ack: 1508333324, Window: 512}
	with := func(f func(*probe.TCPInfo)) probe.TCPInfo { i := idle; f(&i); return i }
	wrapped := synAck
	wrapped.Seq, wrapped.Ack = 0xfffffff0, 0xfffffffa
	for _, c := range []struct {
		name   string
		synAck probe.Segment
		info   probe.TCPInfo
		want   FlowState
		err    string
	}{
		{"linux: the SYN counted as acked", synAck, idle, want, ""},
		{"a kernel not counting the SYN", synAck, with(func(i *probe.TCPInfo) { i.BytesAcked = 10 }), want, ""},
		{"retransmissions", synAck, with(func(i *probe.TCPInfo) { i.BytesSent, i.BytesRetrans = 15, 5 }), want, ""},
		{"sequence numbers wrap", wrapped, idle, FlowState{Local: local, Remote: remote, Seq: 4, Ack: 0x5, Window: 512}, ""},
		{"no window reported", synAck, with(func(i *probe.TCPInfo) { i.RcvWnd = 0 }), FlowState{Local: local, Remote: remote, Seq: 1004498540, Ack: 1508333324}, ""},
		{"huge window unscaled", synAck, with(func(i *probe.TCPInfo) { i.RcvWScale = 0 }), FlowState{Local: local, Remote: remote, Seq: 1004498540, Ack: 1508333324, Window: 0xffff}, ""},
		{"data in flight", synAck, with(func(i *probe.TCPInfo) { i.Unacked = 1 }), FlowState{}, "not idle"},
		{"data not sent", synAck, with(func(i *probe.TCPInfo) { i.NotSent = 5 }), FlowState{}, "not idle"},
		{"closing", synAck, with(func(i *probe.TCPInfo) { i.State = 8 }), FlowState{}, "not established"},
		{"counters disagree", synAck, with(func(i *probe.TCPInfo) { i.BytesAcked = 30 }), FlowState{}, "disagree"},
		{"not a SYN-ACK", probe.Segment{Src: remote, Dst: local, Flags: probe.FlagACK}, idle, FlowState{}, "not a SYN-ACK"},
		{"another connection's SYN-ACK", probe.Segment{Src: remote, Dst: netip.MustParseAddrPort("127.0.0.1:1"), Flags: probe.FlagSYN | probe.FlagACK}, idle, FlowState{}, "SYN-ACK is of"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := flowStateFromInfo(local, remote, c.synAck, c.info)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("%+v %v, want %+v", got, err, c.want)
			}
		})
	}
}

func FuzzCompareQuote(f *testing.F) {
	opts := probe.DefaultSYNOptions()
	opts.TSVal = 77
	f.Fuzz(func(t *testing.T, v6 bool, in []byte) {
		src, dst, decode := client4, server4, probe.DecodeICMPv4
		if v6 {
			src, dst, decode = client6, server6, probe.DecodeICMPv6
		}
		ref, err := probe.ReferenceQuote(src, dst, ipProtoTCP, 9, true, synBytes(t, src, dst, 40000, 0x5eed0001, opts))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := decode(in)
		depth, pairs := compareQuote(ref, m.Quoted)
		if m.Quoted == nil && (depth != QuoteNone || pairs != nil) {
			t.Fatalf("no quote, depth %s pairs %v", depth, pairs)
		}
		seen := map[RewriteField]bool{}
		for _, p := range pairs {
			if seen[p.Field] || !slices.Contains(fieldOrder, p.Field) {
				t.Fatalf("field %s repeated or unknown", p.Field)
			}
			seen[p.Field] = true
		}
		if depth == QuoteFull && !seen[FieldMSS] || depth == QuotePartial && !seen[FieldSrcPort] {
			t.Fatalf("depth %s without its fields: %v", depth, pairs)
		}
		rows := []ttlRewrite{{TTL: 1, fields: pairs}, {TTL: 2, fields: pairs}}
		finishRewrites(rows)
	})
}

// FuzzExplainStateLoss feeds arbitrary runs (one byte per TTL: kind,
// reply TTL) and checks that the verdict stays within the runs.
func FuzzExplainStateLoss(f *testing.F) {
	kinds := []InFlowKind{InFlowTimeExceeded, InFlowRST, InFlowACK, InFlowUnreachable, InFlowNone}
	run := func(b []byte) []InFlowAnswer {
		var out []InFlowAnswer
		for i, x := range b {
			ttl := i + 1
			a := InFlowAnswer{TTL: ttl, Kind: kinds[int(x)%len(kinds)], ReplyTTL: int(x)}
			switch a.Kind {
			case InFlowTimeExceeded, InFlowUnreachable:
				a.From = routerAddr(int(x)%8 + 1).String()
			case InFlowRST, InFlowACK:
				a.From, a.SenderHop = server4.String(), probe.SenderHop(int(x))
			}
			out = append(out, a)
		}
		return out
	}
	f.Fuzz(func(t *testing.T, healthy, expired []byte) {
		l := ExplainStateLoss(run(healthy), run(expired))
		switch l.Behaviour {
		case LossNone, LossUndetermined:
			if l.Hop != 0 || l.UpTo != 0 {
				t.Fatalf("%+v", l)
			}
		case LossReset, LossReject, LossDrop, LossServerReset:
			if l.Hop < 1 || l.UpTo < l.Hop || l.UpTo > max(len(healthy), len(expired)) {
				t.Fatalf("%+v for %d/%d TTLs", l, len(healthy), len(expired))
			}
		default:
			t.Fatalf("behaviour %q", l.Behaviour)
		}
		if l.Reason == "" {
			t.Fatal("no reason")
		}
	})
}

// TestWriteLocaliseFuzzSeeds writes the seed corpora of the localisation
// fuzz targets (HOPCHECK_WRITE_SEEDS=1 go test ./localise -run TestWriteLocaliseFuzzSeeds).
func TestWriteLocaliseFuzzSeeds(t *testing.T) {
	if testing.Short() || !writeSeeds() {
		t.Skip("set HOPCHECK_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	q := func(b []byte) string { return fmt.Sprintf("[]byte(%s)", strconv.Quote(string(b))) }
	for file, v := range map[string]string{
		"te-syn-probe-v4":  "bool(false)\n" + q(ipv4Payload(t, packetfx.TE4SYNProbe)),
		"te-kernel-syn-v4": "bool(false)\n" + q(ipv4Payload(t, packetfx.TE4KernelSYN)),
		"te-syn-probe-v6":  "bool(true)\n" + q(ipv6Payload(packetfx.TE6SYNProbe)),
		"te-udp-v4":        "bool(false)\n" + q(ipv4Payload(t, packetfx.TE4UDPProbe)),
		"short":            "bool(false)\n" + q(fx("0b00")),
	} {
		writeSeed(t, "FuzzCompareQuote", file, v)
	}
	for file, v := range map[string][2][]byte{
		"reset":  {{0, 0, 0, 0, 0, 62}, {0, 0, 0, 1}}, // kinds by value mod 5: 0 te, 1 rst, 2 ack
		"drop":   {{0, 0, 0, 0, 2}, {0, 0, 4, 4, 4}},
		"server": {{0, 0, 0, 2}, {0, 0, 0, 1}},
		"empty":  {{}, {}},
	} {
		writeSeed(t, "FuzzExplainStateLoss", file, q(v[0])+"\n"+q(v[1]))
	}
}

func writeSeeds() bool { return os.Getenv("HOPCHECK_WRITE_SEEDS") != "" }

func TestLocaliseFuzzSeedsPresent(t *testing.T) {
	for _, name := range []string{"FuzzCompareQuote", "FuzzExplainStateLoss"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", name, "seed-*"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: no seed corpus (%v)", name, err)
		}
	}
}

func TestRewriteFieldLabel(t *testing.T) {
	for _, f := range fieldOrder {
		want := string(f)
		switch f {
		case FieldSrcAddr, FieldDstAddr, FieldSrcPort, FieldDstPort:
			want = strings.NewReplacer("src-", "src ", "dst-", "dst ", "addr", "address").Replace(string(f))
			if !f.Translation() {
				t.Errorf("%s: not a translation field", f)
			}
		default:
			if f.Translation() {
				t.Errorf("%s: a translation field", f)
			}
		}
		if f.Label() != want {
			t.Errorf("%s: label %q, want %q", f, f.Label(), want)
		}
	}
}

func TestInFlowAnswerOf(t *testing.T) {
	local, remote := netip.AddrPortFrom(client4, 40000), netip.AddrPortFrom(server4, 443)
	local6, remote6 := netip.AddrPortFrom(client6, 40000), netip.AddrPortFrom(server6, 443)
	flow := FlowState{Local: local, Remote: remote, Seq: 1000, Ack: 5000}
	const base = 0xfff0 // wraps: TTL 20 is IP ID 0x0004
	te := func(l, r netip.AddrPort, ttl int) probe.PathEvent {
		n := 1
		if l.Addr().Is6() {
			n = ttl
		}
		seg, err := probe.BuildTCPSegment(l.Addr(), r.Addr(), l.Port(), r.Port(), flow.Seq-uint32(n), flow.Ack, probe.FlagACK, 1024, make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		q, err := probe.ReferenceQuote(l.Addr(), r.Addr(), ipProtoTCP, base+uint16(ttl), true, seg)
		if err != nil {
			t.Fatal(err)
		}
		return probe.PathEvent{From: routerAddr(ttl), ReplyTTL: 65 - ttl, ICMP: &probe.ICMPMessage{Kind: probe.KindTimeExceeded, Quoted: q}}
	}
	tcp := func(flags probe.TCPFlags, ack uint32, payload, replyTTL int) probe.PathEvent {
		return probe.PathEvent{From: server4, ReplyTTL: replyTTL, TCP: &probe.TCPSegment{SrcPort: 443, DstPort: 40000, Flags: flags, Ack: ack, PayloadLen: payload}}
	}
	otherPort := te(netip.AddrPortFrom(client4, 40001), remote, 3)
	unreach := te(local, remote, 2)
	unreach.ICMP.Kind = probe.KindDestUnreachable
	for _, c := range []struct {
		name        string
		ev          probe.PathEvent
		l, r        netip.AddrPort
		ttl         int
		ok          bool
		kind        InFlowKind
		answerTTL   int
		senderHop   int
		replyTTLNow int
	}{
		{"time-exceeded for the probe in flight", te(local, remote, 3), local, remote, 3, true, InFlowTimeExceeded, 3, 0, 62},
		{"a late one for an earlier TTL", te(local, remote, 2), local, remote, 3, true, InFlowTimeExceeded, 2, 0, 63},
		{"IP ID wrapped", te(local, remote, 20), local, remote, 20, true, InFlowTimeExceeded, 20, 0, 45},
		{"not sent yet", te(local, remote, 4), local, remote, 3, false, "", 0, 0, 0},
		{"another connection", otherPort, local, remote, 3, false, "", 0, 0, 0},
		{"unreachable", unreach, local, remote, 3, true, InFlowUnreachable, 2, 0, 63},
		{"v6 by payload length", te(local6, remote6, 4), local6, remote6, 5, true, InFlowTimeExceeded, 4, 0, 61},
		{"RST from a box", tcp(probe.FlagRST, 0, 0, 62), local, remote, 4, true, InFlowRST, 4, 3, 62},
		{"the server's duplicate ACK", tcp(probe.FlagACK, 1000, 0, 60), local, remote, 5, true, InFlowACK, 5, 5, 60},
		{"an ACK of something else", tcp(probe.FlagACK, 999, 0, 60), local, remote, 5, false, "", 0, 0, 0},
		{"the flow's own data", tcp(probe.FlagACK|probe.FlagPSH, 1000, 100, 60), local, remote, 5, false, "", 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, ok := inFlowAnswerOf(c.ev, c.l, c.r, flow, c.ttl, base, c.l.Addr().Is6())
			if ok != c.ok || a.Kind != c.kind || a.TTL != c.answerTTL || a.SenderHop != c.senderHop || (ok && a.ReplyTTL != c.replyTTLNow) {
				t.Errorf("%+v %v, want %v %s ttl %d sender hop %d reply ttl %d", a, ok, c.ok, c.kind, c.answerTTL, c.senderHop, c.replyTTLNow)
			}
		})
	}
}

// teQuote is the quote of pkt as a router's time-exceeded carries it,
// decoded as the probes decode one.
func teQuote(t testing.TB, pkt []byte) *probe.Quoted {
	t.Helper()
	msg := append([]byte{11, 0, 0, 0, 0, 0, 0, 0}, pkt...)
	sum := probe.Checksum(msg, 0)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	m, err := probe.DecodeICMPv4(msg)
	if err != nil || m.Quoted == nil {
		t.Fatalf("time-exceeded quoting %x: %v", pkt, err)
	}
	return m.Quoted
}

func writeSeed(t *testing.T, fuzzName, file, values string) {
	t.Helper()
	if err := packetfx.WriteSeed(fuzzName, file, values); err != nil {
		t.Fatal(err)
	}
}

// listText writes a list of changes as the tests compare them.
func listText(cs []string) string {
	if len(cs) == 0 {
		return ""
	}
	return "[" + strings.Join(cs, " ") + "]"
}

func changesText(cs []FieldChange) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return listText(s)
}
