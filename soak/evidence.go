package soak

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/hopcheck/hopcheck/probe"
)

// Evidence writes, for the first PerKind failures of each kind and
// address, a pcap file (openable in Wireshark) of what the flow observer
// saw from the remote end of the failed flow: its SYN-ACK and every FIN
// and RST, with their TTL, IP ID and DF bit as received. The observer
// keeps decoded headers, not raw bytes: the packets are rebuilt from those
// headers (payloads are not kept), which is what attribution rests on.
type Evidence struct {
	Dir     string
	PerKind int

	mu    sync.Mutex
	count map[string]int      // address/kind -> files written
	files map[string][]string // address -> files
	err   error
}

// NewEvidence writes into dir (created if needed), perKind files per
// failure kind and address at most.
func NewEvidence(dir string, perKind int) (*Evidence, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence dir: %w", err)
	}
	return &Evidence{Dir: dir, PerKind: max(1, perKind), count: map[string]int{}, files: map[string][]string{}}, nil
}

// Files are the files written for an address so far.
func (e *Evidence) Files(addr string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.files[addr]...)
}

// Err is the first write error (writing evidence never fails a soak).
func (e *Evidence) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Write stores the flow record of a failure of kind toward remote.
func (e *Evidence) Write(addr, kind string, rec probe.FlowRecord, remote netip.AddrPort) {
	e.mu.Lock()
	key := addr + "/" + kind
	n := e.count[key]
	if n >= e.PerKind {
		e.mu.Unlock()
		return
	}
	e.count[key] = n + 1
	e.mu.Unlock()
	var segs []probe.Segment
	if rec.SynAck != nil {
		segs = append(segs, *rec.SynAck)
	}
	segs = append(segs, rec.FinRst...)
	if len(segs) == 0 {
		return
	}
	sort.SliceStable(segs, func(i, j int) bool { return segs[i].At.Before(segs[j].At) })
	data, err := PcapOf(segs)
	name := fmt.Sprintf("%s-%s-%d.pcap", strings.NewReplacer(":", "_", ".", "_").Replace(remote.Addr().String()), kind, n+1)
	path := filepath.Join(e.Dir, name)
	if err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("evidence %s: %w", path, err)
		}
		return
	}
	e.files[addr] = append(e.files[addr], path)
}

// PcapOf rebuilds segments as raw-IP packets in pcap format. Pure.
func PcapOf(segs []probe.Segment) ([]byte, error) {
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
		return nil, err
	}
	for _, s := range segs {
		pkt, err := packetOf(s)
		if err != nil {
			return nil, err
		}
		ci := gopacket.CaptureInfo{Timestamp: s.At, CaptureLength: len(pkt), Length: len(pkt)}
		if err := w.WritePacket(ci, pkt); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

func packetOf(s probe.Segment) ([]byte, error) {
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.Src.Port()), DstPort: layers.TCPPort(s.Dst.Port()), Seq: s.Seq, Ack: s.Ack,
		Window: s.Window, SYN: s.Flags.Has(probe.FlagSYN), ACK: s.Flags.Has(probe.FlagACK), RST: s.Flags.Has(probe.FlagRST),
		FIN: s.Flags.Has(probe.FlagFIN), PSH: s.Flags.Has(probe.FlagPSH)}
	ttl := s.TTL
	if ttl < 0 {
		ttl = 0
	}
	var net gopacket.NetworkLayer
	if s.Src.Addr().Is4() {
		ip := &layers.IPv4{Version: 4, TTL: uint8(ttl), Id: uint16(max(s.IPID, 0)), Protocol: layers.IPProtocolTCP,
			SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
		if s.DF {
			ip.Flags = layers.IPv4DontFragment
		}
		net = ip
	} else {
		net = &layers.IPv6{Version: 6, HopLimit: uint8(ttl), NextHeader: layers.IPProtocolTCP,
			SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
	}
	if err := tcp.SetNetworkLayerForChecksum(net); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, net.(gopacket.SerializableLayer), tcp); err != nil {
		return nil, fmt.Errorf("rebuild segment: %w", err)
	}
	return buf.Bytes(), nil
}
