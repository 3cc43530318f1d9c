package probe

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Builders return wire bytes ready for a raw socket. They take values,
// never sockets or clocks, and copy the caller's payload.

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// BuildIPv4 returns a complete, checksummed IPv4 packet (no options)
// around payload. df sets the don't-fragment bit.
func BuildIPv4(src, dst netip.Addr, proto, ttl int, id uint16, df bool, payload []byte) ([]byte, error) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.Is4() || !dst.Is4() {
		return nil, fmt.Errorf("build ipv4: addresses %s -> %s are not both IPv4", src, dst)
	}
	if proto < 0 || proto > 255 {
		return nil, fmt.Errorf("build ipv4: protocol %d out of range 0-255", proto)
	}
	if ttl < 0 || ttl > 255 {
		return nil, fmt.Errorf("build ipv4: ttl %d out of range 0-255", ttl)
	}
	if n := ipv4MinHeaderLen + len(payload); n > 0xffff {
		return nil, fmt.Errorf("build ipv4: total length %d above 65535", n)
	}
	ip := &layers.IPv4{
		Version: 4, TTL: uint8(ttl), Id: id, Protocol: layers.IPProtocol(proto),
		SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice()),
	}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	buf := gopacket.NewSerializeBufferExpectedSize(ipv4MinHeaderLen, len(payload))
	if err := gopacket.SerializeLayers(buf, serializeOpts, ip, gopacket.Payload(payload)); err != nil {
		return nil, fmt.Errorf("build ipv4: %w", err)
	}
	return buf.Bytes(), nil
}

// SYNOptions are the TCP options of a SYN probe.
type SYNOptions struct {
	MSS           int  // 0 omits the option
	WindowScale   int  // shift count; -1 omits the option
	SACKPermitted bool //
	Timestamps    bool // TSecr is 0, as in any SYN
	TSVal         uint32
}

// DefaultSYNOptions returns the options of a Linux SYN on an Ethernet path
// (MSS 1460, window scale 7, SACK permitted, timestamps), so that probes
// look like what real connections send and middleboxes treat them alike.
func DefaultSYNOptions() SYNOptions {
	return SYNOptions{MSS: 1460, WindowScale: 7, SACKPermitted: true, Timestamps: true}
}

// tcpOptions lays out SYN options as Linux does (tcp_options_write), in
// 4-byte words: MSS; SACK-permitted+timestamps (or NOP,NOP,timestamps);
// NOP,NOP,SACK-permitted when there are no timestamps; NOP,window scale.
func (o SYNOptions) tcpOptions() ([]layers.TCPOption, error) {
	if o.MSS < 0 || o.MSS > 0xffff {
		return nil, fmt.Errorf("mss %d out of range 0-65535", o.MSS)
	}
	if o.WindowScale < -1 || o.WindowScale > 255 {
		return nil, fmt.Errorf("window scale %d out of range -1-255", o.WindowScale)
	}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	sack := layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted}
	opts := make([]layers.TCPOption, 0, 7)
	// One backing array for all option values: MSS 2, TSval+TSecr 8, WS 1.
	data := make([]byte, 11)
	mss, ts, ws := data[0:2], data[2:10], data[10:11]
	if o.MSS > 0 {
		binary.BigEndian.PutUint16(mss, uint16(o.MSS))
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: mss})
	}
	if o.Timestamps {
		if o.SACKPermitted {
			opts = append(opts, sack)
		} else {
			opts = append(opts, nop, nop)
		}
		binary.BigEndian.PutUint32(ts, o.TSVal) // TSecr stays 0
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: ts})
	} else if o.SACKPermitted {
		opts = append(opts, nop, nop, sack)
	}
	if o.WindowScale >= 0 {
		ws[0] = byte(o.WindowScale)
		opts = append(opts, nop, layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: ws})
	}
	return opts, nil
}

// BuildTCPSYN returns a TCP SYN header with opt, its checksum computed
// over the IPv4 or IPv6 pseudo-header of src and dst.
func BuildTCPSYN(src, dst netip.Addr, sport, dport uint16, seq uint32, window uint16, opt SYNOptions) ([]byte, error) {
	opts, err := opt.tcpOptions()
	if err != nil {
		return nil, fmt.Errorf("build tcp syn: %w", err)
	}
	b, err := buildTCP(src, dst, sport, dport, seq, 0, FlagSYN, window, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("build tcp syn: %w", err)
	}
	return b, nil
}

// BuildTCPSegment returns a TCP segment without options (e.g. an ACK or a
// data segment inside an established flow), checksummed like BuildTCPSYN.
// The ack field is written as given even when FlagACK is clear.
func BuildTCPSegment(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags TCPFlags, window uint16, payload []byte) ([]byte, error) {
	b, err := buildTCP(src, dst, sport, dport, seq, ack, flags, window, nil, payload)
	if err != nil {
		return nil, fmt.Errorf("build tcp segment: %w", err)
	}
	return b, nil
}

func buildTCP(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags TCPFlags, window uint16, opts []layers.TCPOption, payload []byte) ([]byte, error) {
	pseudo, err := pseudoLayer(src, dst, layers.IPProtocolTCP)
	if err != nil {
		return nil, err
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: window,
		FIN: flags.Has(FlagFIN), SYN: flags.Has(FlagSYN), RST: flags.Has(FlagRST), PSH: flags.Has(FlagPSH),
		ACK: flags.Has(FlagACK), URG: flags.Has(FlagURG), ECE: flags.Has(FlagECE), CWR: flags.Has(FlagCWR),
		Options: opts,
	}
	if err := tcp.SetNetworkLayerForChecksum(pseudo); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBufferExpectedSize(60, len(payload))
	if err := gopacket.SerializeLayers(buf, serializeOpts, tcp, gopacket.Payload(payload)); err != nil {
		return nil, err
	}
	if n := len(buf.Bytes()); n > 0xffff {
		return nil, fmt.Errorf("segment length %d above 65535", n)
	}
	return buf.Bytes(), nil
}

// pseudoLayer returns the network layer gopacket needs for a transport
// checksum: the pseudo-header of the family both addresses share.
func pseudoLayer(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.NetworkLayer, error) {
	family, err := addrFamily(src, dst)
	if err != nil {
		return nil, err
	}
	if family == 4 {
		return &layers.IPv4{Version: 4, Protocol: proto,
			SrcIP: net.IP(src.Unmap().AsSlice()), DstIP: net.IP(dst.Unmap().AsSlice())}, nil
	}
	return &layers.IPv6{Version: 6, NextHeader: proto,
		SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}, nil
}

// addrFamily reports 4 or 6 when src and dst are valid addresses of the
// same family (IPv4-mapped IPv6 counts as IPv4).
func addrFamily(src, dst netip.Addr) (int, error) {
	src, dst = src.Unmap(), dst.Unmap()
	switch {
	case src.Is4() && dst.Is4():
		return 4, nil
	case src.Is6() && dst.Is6():
		return 6, nil
	}
	return 0, fmt.Errorf("addresses %s -> %s are not of one IP family", src, dst)
}

// BuildUDP returns a UDP header and payload whose checksum is exactly
// wantChecksum, the Paris-traceroute way of carrying a probe's identity in
// the 8 transport bytes every ICMP error quotes while the flow's 5-tuple
// stays constant.
//
// The last 2 bytes of payload are the compensation word: they are
// overwritten (in a copy) with the value that makes the ones' complement
// sum come out at wantChecksum, so payload needs at least 2 bytes and the
// identity it carries must sit before them (Ident.Payload reserves them).
// wantChecksum 0 is refused: it means "no checksum" in UDP. 0xffff is
// fine: a computed 0 is sent as 0xffff (RFC 768).
//
// The checksum covers the pseudo-header, so it only holds if the packet
// leaves with exactly src as its source address.
func BuildUDP(src, dst netip.Addr, sport, dport uint16, wantChecksum uint16, payload []byte) ([]byte, error) {
	if wantChecksum == 0 {
		return nil, fmt.Errorf("build udp: checksum 0 means no checksum; want 1-65535")
	}
	if len(payload) < 2 {
		return nil, fmt.Errorf("build udp: payload of %d bytes has no room for the 2-byte checksum compensation word", len(payload))
	}
	const udpHeaderLen = 8
	n := udpHeaderLen + len(payload)
	if n > 0xffff {
		return nil, fmt.Errorf("build udp: length %d above 65535", n)
	}
	pseudo, err := pseudoLayer(src, dst, layers.IPProtocolUDP)
	if err != nil {
		return nil, fmt.Errorf("build udp: %w", err)
	}
	seg := make([]byte, n)
	binary.BigEndian.PutUint16(seg[0:2], sport)
	binary.BigEndian.PutUint16(seg[2:4], dport)
	binary.BigEndian.PutUint16(seg[4:6], uint16(n))
	copy(seg[udpHeaderLen:], payload)
	seg[n-2], seg[n-1] = 0, 0
	sum := sum16(seg, PseudoHeaderSum(src, dst, protoUDP, n))
	putCompensation(seg, n-2, compensation(sum, wantChecksum))

	// Serialize with gopacket computing the checksum itself: it must land
	// on wantChecksum, which cross-checks the compensation arithmetic.
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(pseudo); err != nil {
		return nil, fmt.Errorf("build udp: %w", err)
	}
	buf := gopacket.NewSerializeBufferExpectedSize(udpHeaderLen, len(payload))
	if err := gopacket.SerializeLayers(buf, serializeOpts, udp, gopacket.Payload(seg[udpHeaderLen:])); err != nil {
		return nil, fmt.Errorf("build udp: %w", err)
	}
	out := buf.Bytes()
	if got := binary.BigEndian.Uint16(out[6:8]); got != wantChecksum {
		return nil, fmt.Errorf("build udp: checksum came out %#04x, want %#04x", got, wantChecksum)
	}
	return out, nil
}

// BuildICMPEcho returns an ICMP echo request (family 4: type 8) or ICMPv6
// echo request (family 6: type 128, checksum over the IPv6 pseudo-header of
// src and dst; for family 4 src and dst are not used) whose checksum is
// exactly wantChecksum, so that every probe of a Paris flow looks alike to
// ECMP hashing while seq changes. As in BuildUDP, the last 2 bytes of
// payload are the compensation word. wantChecksum 0xffff is refused: a
// standard checksum computation never yields it (it yields 0 instead), so
// a kernel or middlebox recomputing the checksum would change it.
func BuildICMPEcho(family int, src, dst netip.Addr, id, seq uint16, wantChecksum uint16, payload []byte) ([]byte, error) {
	if wantChecksum == 0xffff {
		return nil, fmt.Errorf("build icmp echo: checksum 0xffff is never computed; want 0-65534")
	}
	if len(payload) < 2 {
		return nil, fmt.Errorf("build icmp echo: payload of %d bytes has no room for the 2-byte checksum compensation word", len(payload))
	}
	n := icmpHeaderLen + len(payload)
	if n > 0xffff {
		return nil, fmt.Errorf("build icmp echo: length %d above 65535", n)
	}
	msg := make([]byte, n)
	var initial uint32
	var echo []gopacket.SerializableLayer
	switch family {
	case 4:
		msg[0] = byte(layers.ICMPv4TypeEchoRequest)
		echo = []gopacket.SerializableLayer{&layers.ICMPv4{
			TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}}
	case 6:
		if f, err := addrFamily(src, dst); err != nil || f != 6 {
			return nil, fmt.Errorf("build icmpv6 echo: addresses %s -> %s are not both IPv6", src, dst)
		}
		msg[0] = byte(layers.ICMPv6TypeEchoRequest)
		initial = PseudoHeaderSum(src, dst, protoICMPv6, n)
		icmp6 := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		if err := icmp6.SetNetworkLayerForChecksum(&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}); err != nil {
			return nil, fmt.Errorf("build icmpv6 echo: %w", err)
		}
		echo = []gopacket.SerializableLayer{icmp6, &layers.ICMPv6Echo{Identifier: id, SeqNumber: seq}}
	default:
		return nil, fmt.Errorf("build icmp echo: family %d is neither 4 nor 6", family)
	}
	binary.BigEndian.PutUint16(msg[4:6], id)
	binary.BigEndian.PutUint16(msg[6:8], seq)
	copy(msg[icmpHeaderLen:], payload)
	msg[n-2], msg[n-1] = 0, 0
	putCompensation(msg, n-2, compensation(sum16(msg, initial), wantChecksum))

	buf := gopacket.NewSerializeBufferExpectedSize(icmpHeaderLen, len(payload))
	if err := gopacket.SerializeLayers(buf, serializeOpts, append(echo, gopacket.Payload(msg[icmpHeaderLen:]))...); err != nil {
		return nil, fmt.Errorf("build icmp echo: %w", err)
	}
	out := buf.Bytes()
	if got := binary.BigEndian.Uint16(out[2:4]); got != wantChecksum {
		return nil, fmt.Errorf("build icmp echo: checksum came out %#04x, want %#04x", got, wantChecksum)
	}
	return out, nil
}

// Checksum returns the Internet checksum (RFC 1071) of data: the ones'
// complement of the ones' complement sum of its 16-bit words, starting
// from initial (e.g. PseudoHeaderSum). Over a packet that carries its own
// checksum it returns 0 when that checksum is right.
func Checksum(data []byte, initial uint32) uint16 {
	return ^sum16(data, initial)
}

// PseudoHeaderSum returns the unfolded ones' complement sum of the IPv4
// (RFC 768) or IPv6 (RFC 8200 section 8.1) pseudo-header for a transport
// packet of length bytes, for use as Checksum's initial value. The family
// is that of src (IPv4-mapped addresses count as IPv4); invalid addresses
// contribute nothing.
func PseudoHeaderSum(src, dst netip.Addr, proto, length int) uint32 {
	var s uint64
	if src.Unmap().Is4() {
		a, b := src.Unmap().As4(), dst.Unmap().As4()
		s = uint64(sum16(a[:], 0)) + uint64(sum16(b[:], 0)) + uint64(proto&0xff) + uint64(length&0xffff)
	} else if src.Is6() {
		a, b := src.As16(), dst.As16()
		s = uint64(sum16(a[:], 0)) + uint64(sum16(b[:], 0)) + uint64(proto&0xff) +
			uint64(uint32(length)>>16) + uint64(length&0xffff)
	}
	return uint32(fold(s))
}

// sum16 returns the folded ones' complement sum of data's big-endian
// 16-bit words (an odd last byte is padded with zero) plus initial.
func sum16(data []byte, initial uint32) uint16 {
	s := uint64(initial)
	for len(data) >= 2 {
		s += uint64(data[0])<<8 | uint64(data[1])
		data = data[2:]
	}
	if len(data) == 1 {
		s += uint64(data[0]) << 8
	}
	return fold(s)
}

// fold reduces s to 16 bits with end-around carry. The result is 0 only
// when s is 0.
func fold(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// compensation returns the word that, added to a message whose folded sum
// (checksum field and compensation word zero) is sum, makes the standard
// checksum of the message want: the sum must become ^want, so the word is
// ^want - sum in ones' complement arithmetic, i.e. ^want + ^sum.
func compensation(sum, want uint16) uint16 {
	return fold(uint64(^want) + uint64(^sum))
}

// putCompensation stores word w at offset off of b so that it adds w to
// the ones' complement sum of b. At an odd offset its bytes fall into two
// neighbouring words as low byte and high byte, so they go in swapped.
func putCompensation(b []byte, off int, w uint16) {
	if off%2 == 0 {
		binary.BigEndian.PutUint16(b[off:], w)
	} else {
		binary.LittleEndian.PutUint16(b[off:], w)
	}
}
