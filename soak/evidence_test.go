package soak

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hopcheck/hopcheck/evidence"
	"github.com/hopcheck/hopcheck/probe"
)

func TestEvidenceWritesBoundedCapturesAndIndex(t *testing.T) {
	local, remote := netip.MustParseAddrPort("198.18.0.1:40001"), netip.MustParseAddrPort("198.18.5.2:443")
	pkt := func(out bool, ttl int, flags probe.TCPFlags) []byte {
		src, dst := remote, local
		if out {
			src, dst = local, remote
		}
		seg, err := probe.BuildTCPSegment(src.Addr(), dst.Addr(), src.Port(), dst.Port(), 1, 1, flags, 500, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := probe.BuildIPv4(src.Addr(), dst.Addr(), 6, ttl, 1, true, seg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c := probe.FlowCapture{Local: local, Remote: remote, Packets: []probe.CapturedPacket{
		{At: t0, Out: true, Data: pkt(true, 64, probe.FlagSYN)},
		{At: t0.Add(time.Millisecond), Data: pkt(false, 61, probe.FlagSYN|probe.FlagACK)},
		{At: t0.Add(time.Minute), Data: pkt(false, 63, probe.FlagRST)},
	}}
	dir := t.TempDir()
	e, err := NewEvidence(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	e.Write("198.18.5.2", "reset", c)
	e.Write("198.18.5.2", "reset", c)                     // over PerKind: not written
	e.Write("198.18.5.2", "timeout", probe.FlowCapture{}) // nothing captured: not written
	files := e.Files("198.18.5.2")
	if len(files) != 1 || filepath.Base(files[0]) != "198_18_5_2-reset-1.pcapng" || e.Err() != nil {
		t.Fatalf("files %v, err %v", files, e.Err())
	}
	idx, err := evidence.ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Findings) != 1 || len(idx.Findings[0].Captures) != 1 || idx.Findings[0].Kind != "reset" ||
		idx.Findings[0].Captures[0].Frames.SynAck != 2 || len(idx.Findings[0].Captures[0].Frames.Resets) != 1 {
		t.Errorf("index %+v", idx)
	}
}
