package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hopcheck/hopcheck/internal/packetfx"
)

// tcpInfoBytes lays out a struct tcp_info of n bytes (host order).
func tcpInfoBytes(n int, i TCPInfo) []byte {
	b := make([]byte, max(n, tcpInfoRcvWndEnd))
	ne := binary.NativeEndian
	b[0] = i.State
	b[offTCPInfoWScale] = i.SndWScale | i.RcvWScale<<4
	ne.PutUint32(b[offTCPInfoUnacked:], i.Unacked)
	ne.PutUint64(b[offTCPInfoBytesAcked:], i.BytesAcked)
	ne.PutUint64(b[offTCPInfoBytesRecv:], i.BytesReceived)
	ne.PutUint32(b[offTCPInfoNotSent:], i.NotSent)
	ne.PutUint64(b[offTCPInfoBytesSent:], i.BytesSent)
	ne.PutUint64(b[offTCPInfoBytesRetr:], i.BytesRetrans)
	ne.PutUint32(b[offTCPInfoRcvWnd:], i.RcvWnd)
	return b[:n]
}

func TestDecodeTCPInfo(t *testing.T) {
	want := TCPInfo{State: 1, SndWScale: 7, RcvWScale: 10, Unacked: 2, BytesAcked: 11, BytesReceived: 20,
		BytesSent: 10, BytesRetrans: 1, NotSent: 3, RcvWnd: 65536}
	if got, err := DecodeTCPInfo(tcpInfoBytes(248, want)); err != nil || got != want {
		t.Errorf("6.2+ layout: %+v %v", got, err)
	}
	old := want
	old.RcvWnd = 0
	if got, err := DecodeTCPInfo(tcpInfoBytes(224, want)); err != nil || got != old {
		t.Errorf("4.19 layout: %+v %v", got, err)
	}
	if _, err := DecodeTCPInfo(tcpInfoBytes(200, want)); !errors.Is(err, ErrTruncated) {
		t.Errorf("short: %v", err)
	}
}

func FuzzDecodeTCPInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		info, err := DecodeTCPInfo(in)
		if (err != nil) != (len(in) < tcpInfoMinLen) {
			t.Fatalf("%d bytes: %v", len(in), err)
		}
		if err != nil {
			return
		}
		if info.SndWScale > 15 || info.RcvWScale > 15 {
			t.Fatalf("window scales %d %d", info.SndWScale, info.RcvWScale)
		}
	})
}

// TestWriteTCPFuzzSeeds writes the seed corpora of the TCP option and
// tcp_info fuzz targets (HOPCHECK_WRITE_SEEDS=1 go test ./probe -run TestWriteTCPFuzzSeeds).
func TestWriteTCPFuzzSeeds(t *testing.T) {
	if testing.Short() || os.Getenv("HOPCHECK_WRITE_SEEDS") == "" {
		t.Skip("set HOPCHECK_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	q := func(b []byte) string { return fmt.Sprintf("[]byte(%s)", strconv.Quote(string(b))) }
	for file, b := range map[string][]byte{
		"linux-syn": packetfx.SYN4Probe[40:60], "sack-nops": fx("020405b40101080a010203040000000001030307"),
		"eol": fx("0101000204"), "truncated": fx("080a0102"), "zero-length": fx("0800"),
	} {
		writeSeed(t, "FuzzDecodeTCPOptionKinds", file, q(b))
	}
	info := TCPInfo{State: 1, RcvWScale: 7, BytesAcked: 11, BytesReceived: 20, BytesSent: 10, RcvWnd: 65536}
	writeSeed(t, "FuzzDecodeTCPInfo", "linux-6.18", q(tcpInfoBytes(248, info)))
	writeSeed(t, "FuzzDecodeTCPInfo", "linux-4.19", q(tcpInfoBytes(224, info)))
	writeSeed(t, "FuzzDecodeTCPInfo", "short", q(tcpInfoBytes(100, info)))
}

func TestTCPFuzzSeedsPresent(t *testing.T) {
	for _, name := range []string{"FuzzDecodeTCPOptionKinds", "FuzzDecodeTCPInfo"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", name, "seed-*"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: no seed corpus (%v)", name, err)
		}
	}
}
