package probe

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stampCmsg builds an SCM_TIMESTAMPNS control message (64-bit layout).
func stampCmsg(sec, nsec int64) []byte {
	b := make([]byte, unix.CmsgSpace(16))
	binary.NativeEndian.PutUint64(b[0:8], uint64(unix.CmsgLen(16)))
	binary.NativeEndian.PutUint32(b[8:12], unix.SOL_SOCKET)
	binary.NativeEndian.PutUint32(b[12:16], unix.SCM_TIMESTAMPNS)
	binary.NativeEndian.PutUint64(b[16:24], uint64(sec))
	binary.NativeEndian.PutUint64(b[24:32], uint64(nsec))
	return b
}

// ttlCmsg builds an IP_TTL control message, which comes before the stamp.
func ttlCmsg(ttl int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	binary.NativeEndian.PutUint64(b[0:8], uint64(unix.CmsgLen(4)))
	binary.NativeEndian.PutUint32(b[8:12], unix.IPPROTO_IP)
	binary.NativeEndian.PutUint32(b[12:16], unix.IP_TTL)
	binary.NativeEndian.PutUint32(b[16:20], uint32(ttl))
	return b
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
