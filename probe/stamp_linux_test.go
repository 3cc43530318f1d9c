package probe

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stampCmsg builds an SCM_TIMESTAMPNS control message (64-bit layout;
// cmsg is in errqueue_test.go).
func stampCmsg(sec, nsec int64) []byte {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts[0:8], uint64(sec))
	binary.NativeEndian.PutUint64(ts[8:16], uint64(nsec))
	return cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, ts)
}

// ttlCmsg builds an IP_TTL control message, which comes before the stamp.
func ttlCmsg(ttl int) []byte {
	return cmsg(unix.IPPROTO_IP, unix.IP_TTL, binary.NativeEndian.AppendUint32(nil, uint32(ttl)))
}

func TestCmsgStamp(t *testing.T) {
	now := time.Unix(1700000000, 500)
	fallback := now
	cases := []struct {
		name string
		oob  []byte
		want time.Time
	}{
		{"none", nil, fallback},
		{"stamp", stampCmsg(1700000000, 100), time.Unix(1700000000, 100)},
		{"after another message", append(ttlCmsg(61), stampCmsg(1699999999, 7)...), time.Unix(1699999999, 7)},
		{"from the future", stampCmsg(1700000001, 0), fallback},
		{"too old", stampCmsg(1699990000, 0), fallback},
		{"zero", stampCmsg(0, 0), fallback},
		{"truncated", stampCmsg(1700000000, 100)[:20], fallback},
		{"bad length", func() []byte { b := stampCmsg(1700000000, 100); b[0] = 200; return b }(), fallback},
	}
	for _, c := range cases {
		if got := cmsgStamp(c.oob, fallback); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzCmsgStamp(f *testing.F) {
	dir := filepath.Join("testdata", "fuzz", "FuzzCmsgStamp")
	if os.Getenv("HOPCHECK_WRITE_SEEDS") != "" {
		_ = os.MkdirAll(dir, 0o755)
		for i, b := range [][]byte{stampCmsg(1700000000, 100), append(ttlCmsg(61), stampCmsg(1700000000, 7)...)} {
			_ = os.WriteFile(filepath.Join(dir, "seed-"+string(rune('a'+i))), []byte("go test fuzz v1\n[]byte("+quoteBytes(b)+")\n"), 0o644)
		}
	}
	f.Add(stampCmsg(1700000000, 100))
	f.Add(append(ttlCmsg(61), stampCmsg(1700000000, 7)...))
	fallback := time.Unix(1700000000, 500)
	f.Fuzz(func(t *testing.T, oob []byte) {
		got := cmsgStamp(oob, fallback)
		if got.After(fallback) || fallback.Sub(got) > time.Minute {
			t.Fatalf("implausible stamp %v accepted", got)
		}
	})
}

func quoteBytes(b []byte) string {
	const hex = "0123456789abcdef"
	out := []byte{'"'}
	for _, c := range b {
		out = append(out, '\\', 'x', hex[c>>4], hex[c&15])
	}
	return string(append(out, '"'))
}

// txStampOOB builds what a MSG_ERRQUEUE read of a transmit stamp carries:
// SCM_TIMESTAMPING (three timespecs, software first), then IP_RECVERR with
// origin TIMESTAMPING, ee_info (SCM_TSTAMP_*) and ee_data (the OPT_ID).
func txStampOOB(sec, nsec int64, level, typ int32, origin byte, info, id uint32) []byte {
	ts := make([]byte, 48)
	binary.NativeEndian.PutUint64(ts[0:8], uint64(sec))
	binary.NativeEndian.PutUint64(ts[8:16], uint64(nsec))
	ee := make([]byte, 16)
	binary.NativeEndian.PutUint32(ee[0:4], uint32(unix.ENOMSG))
	ee[4] = origin
	binary.NativeEndian.PutUint32(ee[8:12], info)
	binary.NativeEndian.PutUint32(ee[12:16], id)
	return append(cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMPING, ts), cmsg(level, typ, ee)...)
}

func TestDecodeTxStamp(t *testing.T) {
	cases := []struct {
		name  string
		oob   []byte
		ok    bool
		id    uint32
		sched bool
	}{
		{"sched stamp of send 7", txStampOOB(1700000000, 42, unix.SOL_IP, unix.IP_RECVERR, soEEOriginTimestamping, unix.SCM_TSTAMP_SCHED, 7), true, 7, true},
		{"driver stamp, ipv6", txStampOOB(1700000000, 42, unix.SOL_IPV6, unix.IPV6_RECVERR, soEEOriginTimestamping, unix.SCM_TSTAMP_SND, 3), true, 3, false},
		{"an ICMP error is no stamp", txStampOOB(1700000000, 42, unix.SOL_IP, unix.IP_RECVERR, 2, 0, 0), false, 0, false},
		{"no time", txStampOOB(0, 0, unix.SOL_IP, unix.IP_RECVERR, soEEOriginTimestamping, 0, 1), false, 0, false},
		{"truncated", txStampOOB(1700000000, 42, unix.SOL_IP, unix.IP_RECVERR, soEEOriginTimestamping, 0, 1)[:40], false, 0, false},
		{"empty", nil, false, 0, false},
	}
	for _, c := range cases {
		st, ok := decodeTxStamp(c.oob)
		if ok != c.ok || (ok && (st.id != c.id || st.sched != c.sched || !st.at.Equal(time.Unix(1700000000, 42)))) {
			t.Errorf("%s: %+v %v, want ok=%v id=%d sched=%v", c.name, st, ok, c.ok, c.id, c.sched)
		}
	}
}

func FuzzDecodeTxStamp(f *testing.F) {
	seeds := [][]byte{txStampOOB(1700000000, 42, unix.SOL_IP, unix.IP_RECVERR, soEEOriginTimestamping, unix.SCM_TSTAMP_SCHED, 7),
		txStampOOB(1700000000, 42, unix.SOL_IPV6, unix.IPV6_RECVERR, soEEOriginTimestamping, unix.SCM_TSTAMP_SND, 3)}
	if os.Getenv("HOPCHECK_WRITE_SEEDS") != "" {
		dir := filepath.Join("testdata", "fuzz", "FuzzDecodeTxStamp")
		_ = os.MkdirAll(dir, 0o755)
		for i, b := range seeds {
			_ = os.WriteFile(filepath.Join(dir, "seed-"+string(rune('a'+i))), []byte("go test fuzz v1\n[]byte("+quoteBytes(b)+")\n"), 0o644)
		}
	}
	for _, b := range seeds {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, oob []byte) {
		if st, ok := decodeTxStamp(oob); ok && st.at.Unix() <= 0 {
			t.Fatalf("stamp %v accepted", st.at)
		}
	})
}
