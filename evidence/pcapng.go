package evidence

import (
	"bytes"
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/hopcheck/hopcheck/probe"
)

// Pcapng writes a flow capture as a pcapng file: one raw-IP interface, a
// section comment (title), and per packet its direction and the note of
// the same index, if any. Pure: the same capture gives the same bytes.
func Pcapng(c probe.FlowCapture, notes []string, title string) ([]byte, error) {
	var buf bytes.Buffer
	intf := pcapgo.NgInterface{Name: "hopcheck-flow", Description: "packets of one flow as hopcheck's flow observer captured them",
		LinkType: layers.LinkTypeRaw, SnapLength: uint32(probe.HistorySnapLen), TimestampResolution: 9}
	opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "hopcheck", Comment: title}}
	w, err := pcapgo.NewNgWriterInterface(&buf, intf, opts)
	if err != nil {
		return nil, fmt.Errorf("pcapng: %w", err)
	}
	for i, p := range c.Packets {
		ci := gopacket.CaptureInfo{Timestamp: p.At, CaptureLength: len(p.Data), Length: max(p.Length, len(p.Data))}
		dir := pcapgo.NgEpbFlagDirectionInbound
		if p.Out {
			dir = pcapgo.NgEpbFlagDirectionOutbound
		}
		po := pcapgo.NgPacketOptions{Flags: &pcapgo.NgEpbFlags{Direction: dir}}
		if i < len(notes) && notes[i] != "" {
			po.Comments = append(po.Comments, notes[i])
		}
		if c.Omitted > 0 && i == c.OmittedAfter {
			po.Comments = append(po.Comments, fmt.Sprintf("%d packets of this flow before this one are not kept (bounded capture: first %d and last %d)",
				c.Omitted, probe.HistoryFirst, probe.HistoryLast))
		}
		if err := w.WritePacketWithOptions(ci, p.Data, po); err != nil {
			return nil, fmt.Errorf("pcapng packet %d: %w", i+1, err)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("pcapng: %w", err)
	}
	return buf.Bytes(), nil
}
