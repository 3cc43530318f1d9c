package diagnose

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/hopcheck/hopcheck/probe"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

func TestWriteEvidenceWritesReadablePcapPerFailedConnection(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	idle := tcpcheck.Result{Address: "198.18.5.2", Connections: []tcpcheck.ConnRecord{
		{ID: 1, LocalPort: 40001, Outcome: tcpcheck.OutcomeOK},
		{ID: 2, LocalPort: 40002, Outcome: "reset", Packets: []tcpcheck.PacketRec{{Flags: "RST", AtS: 12.5, TTL: 62, IPID: 0, DF: true, Seq: 1234}}},
		{ID: 3, LocalPort: 40003, Outcome: "reset"}, // no packets captured: no file
	}}
	rep := Report{StartedAt: start, Targets: []TargetReport{{Target: "https://lab", Address: "198.18.5.2", Port: 443,
		Tests: map[string]tcpcheck.Result{"idle": idle}}},
		Findings: []Finding{{Finding: tcpcheck.Finding{Kind: tcpcheck.KindIdleReset, Target: "https://lab", Address: "198.18.5.2"}},
			{Finding: tcpcheck.Finding{Kind: KindPathLoss, Target: "https://lab", Address: "198.18.5.2"}}}}
	dir := t.TempDir()
	files, err := WriteEvidence(dir, &rep, func(netip.Addr) netip.Addr { return netip.MustParseAddr("198.18.0.1") })
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || !strings.HasSuffix(files[0], "198_18_5_2-443-idle-reset-conn2.pcap") {
		t.Fatalf("files %v, want one for connection 2", files)
	}
	if ev := rep.Findings[0].Evidence; len(ev) != 1 || !strings.Contains(ev[0], files[0]) {
		t.Fatalf("finding evidence %q should name the pcap", ev)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := r.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(12500 * time.Millisecond); !ci.Timestamp.Equal(want) {
		t.Errorf("timestamp %v, want %v", ci.Timestamp, want)
	}
	pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("not an IPv4 TCP packet: %v", pkt)
	}
	if ip.TTL != 62 || ip.SrcIP.String() != "198.18.5.2" || ip.DstIP.String() != "198.18.0.1" || ip.Flags&layers.IPv4DontFragment == 0 {
		t.Errorf("IP header %+v", ip)
	}
	if !tcp.RST || tcp.SrcPort != 443 || tcp.DstPort != 40002 || tcp.Seq != 1234 {
		t.Errorf("TCP header %+v", tcp)
	}
}

func TestFlagsOf(t *testing.T) {
	if f := flagsOf("RST+ACK"); !f.Has(probe.FlagRST|probe.FlagACK) || f.Has(probe.FlagFIN) {
		t.Fatalf("RST+ACK -> %v", f)
	}
	if f := flagsOf("FIN+PSH+ACK"); !f.Has(probe.FlagFIN | probe.FlagPSH | probe.FlagACK) {
		t.Fatalf("FIN+PSH+ACK -> %v", f)
	}
}

func TestTestOfKind(t *testing.T) {
	for kind, want := range map[string]string{tcpcheck.KindMidstreamReset: "data", tcpcheck.KindMidstreamClose: "data",
		tcpcheck.KindDataStall: "data", tcpcheck.KindIdleClose: "idle", KindPathLoss: ""} {
		if got := testOfKind(kind); got != want {
			t.Errorf("testOfKind(%s) = %q, want %q", kind, got, want)
		}
	}
}
