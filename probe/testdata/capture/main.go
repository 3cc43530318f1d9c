// Command capture provokes real Linux ICMP/TCP answers inside a namespace
// lab to freeze them as decoder fixtures (see capture.sh, which builds the
// lab and runs this). It lives under testdata so that `go build ./...` and
// `go vet ./...` skip it; run it with `go run ./probe/testdata/capture`.
//
//	capture send    # in the client namespace: sends the probes
//	capture listen  # in the server namespace: a TCP listener on :80
//	capture dump F  # prints the IP packets of pcap file F as hex
//
// Lab addresses only (198.18.0.0/15, 2001:db8::/32); never run send in the
// root namespace.
package main

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/hopcheck/hopcheck/probe"
)

var (
	client4 = netip.MustParseAddr("198.18.1.2")
	server4 = netip.MustParseAddr("198.18.2.2")
	client6 = netip.MustParseAddr("2001:db8:1::2")
	server6 = netip.MustParseAddr("2001:db8:2::2")
	ident   = probe.Ident{Nonce: 0x5eed1e55}
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: capture send|listen|dump FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "send":
		err = send()
	case "listen":
		err = listen()
	case "dump":
		if len(os.Args) != 3 {
			err = fmt.Errorf("dump needs a pcap file")
			break
		}
		err = dump(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

func listen() error {
	l, err := net.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}

// step is one probe; they run in order with a pause so answers stay apart.
type step struct {
	name string
	run  func() error
}

func send() error {
	syn := func(dst netip.Addr, dport, index uint16) func() ([]byte, error) {
		src := client4
		if dst.Is6() {
			src = client6
		}
		return func() ([]byte, error) {
			o := probe.DefaultSYNOptions()
			o.TSVal = 0x01020304
			return probe.BuildTCPSYN(src, dst, 40000+index, dport, ident.TCPSeq(index), 64240, o)
		}
	}
	udp := func(dst netip.Addr, dport, index uint16, size int) func() ([]byte, error) {
		src := client4
		if dst.Is6() {
			src = client6
		}
		return func() ([]byte, error) {
			return probe.BuildUDP(src, dst, 40000, dport, ident.UDPChecksum(index), ident.Payload(index, size))
		}
	}
	echo := func(dst netip.Addr, index uint16) func() ([]byte, error) {
		fam, src := 4, client4
		if dst.Is6() {
			fam, src = 6, client6
		}
		return func() ([]byte, error) {
			return probe.BuildICMPEcho(fam, src, dst, ident.ICMPID(), index, ident.FlowChecksum(0), ident.Payload(index, 16))
		}
	}
	steps := []step{
		{"kernel SYN v4 ttl 1", func() error { return kernelSYN(server4, 1) }},
		{"kernel SYN v6 hop 1", func() error { return kernelSYN(server6, 1) }},
		{"raw SYN v4 ttl 1 index 7", func() error { return raw4(6, 1, 7, false, syn(server4, 80, 7)) }},
		{"raw SYN v6 hop 1 index 7", func() error { return raw6(6, 1, syn(server6, 80, 7)) }},
		{"raw UDP v4 ttl 1 index 8", func() error { return raw4(17, 1, 8, false, udp(server4, 33434, 8, 16)) }},
		{"raw UDP v6 hop 1 index 9", func() error { return raw6(17, 1, udp(server6, 33434, 9, 16)) }},
		{"raw echo v4 ttl 1 index 10", func() error { return raw4(1, 1, 10, false, echo(server4, 10)) }},
		{"raw echo v6 hop 1 index 11", func() error { return raw6(58, 1, echo(server6, 11)) }},
		{"raw UDP v4 port unreachable index 12", func() error { return raw4(17, 64, 12, false, udp(server4, 33434, 12, 16)) }},
		{"raw UDP v6 port unreachable index 13", func() error { return raw6(17, 64, udp(server6, 33434, 13, 16)) }},
		{"raw echo v4 reply index 14", func() error { return raw4(1, 64, 14, false, echo(server4, 14)) }},
		{"raw echo v6 reply index 15", func() error { return raw6(58, 64, echo(server6, 15)) }},
		{"raw UDP v4 1400 DF index 16 (frag needed)", func() error { return raw4(17, 64, 16, true, udp(server4, 33434, 16, 1372)) }},
		{"raw UDP v6 1400 index 17 (packet too big)", func() error { return raw6(17, 64, udp(server6, 33434, 17, 1352)) }},
		{"raw SYN v4 closed port index 18 (RST)", func() error { return raw4(6, 64, 18, false, syn(server4, 81, 18)) }},
		{"raw SYN v6 closed port index 18 (RST)", func() error { return raw6(6, 64, syn(server6, 81, 18)) }},
		{"raw SYN v4 open port index 19 (SYN-ACK)", func() error { return raw4(6, 64, 19, false, syn(server4, 80, 19)) }},
		{"raw SYN v6 open port index 19 (SYN-ACK)", func() error { return raw6(6, 64, syn(server6, 80, 19)) }},
		{"v4 protocol 253 (protocol unreachable)", func() error {
			return raw4(253, 64, 20, false, func() ([]byte, error) { return []byte("hopcheck"), nil })
		}},
		{"v6 next header 253 (parameter problem)", func() error {
			return raw6(253, 64, func() ([]byte, error) { return []byte("hopcheck"), nil })
		}},
		{"v4 bad timestamp option (parameter problem)", badOption},
	}
	for _, s := range steps {
		fmt.Fprintln(os.Stderr, "send:", s.name)
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	return nil
}

// kernelSYN lets the kernel send a genuine Linux SYN with a small TTL.
func kernelSYN(dst netip.Addr, ttl int) error {
	family, level, opt := unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: 80, Addr: dst.As16()}
	if dst.Is4() {
		family, level, opt = unix.AF_INET, unix.IPPROTO_IP, unix.IP_TTL
		sa = &unix.SockaddrInet4{Port: 80, Addr: dst.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, level, opt, ttl); err != nil {
		return err
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return err
	}
	time.Sleep(200 * time.Millisecond) // before any retransmission
	return nil
}

func raw4(proto, ttl int, id uint16, df bool, transport func() ([]byte, error)) error {
	t, err := transport()
	if err != nil {
		return err
	}
	pkt, err := probe.BuildIPv4(client4, server4, proto, ttl, id, df, t)
	if err != nil {
		return err
	}
	return sendRaw4(pkt)
}

func sendRaw4(pkt []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: server4.As4()})
}

func raw6(proto, hops int, transport func() ([]byte, error)) error {
	t, err := transport()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops); err != nil {
		return err
	}
	// Let a 1400-byte probe leave unfragmented so the router must answer.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE); err != nil {
		return err
	}
	return unix.Sendto(fd, t, 0, &unix.SockaddrInet6{Addr: server6.As16()})
}

// badOption sends a UDP packet whose IPv4 header carries a timestamp
// option of impossible length 2; the router answers parameter problem.
func badOption() error {
	t, err := probe.BuildUDP(client4, server4, 40000, 33434, ident.UDPChecksum(21), ident.Payload(21, 16))
	if err != nil {
		return err
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 21, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IP(client4.AsSlice()), DstIP: net.IP(server4.AsSlice()),
		Options: []layers.IPv4Option{{OptionType: 0x44, OptionLength: 2}, {OptionType: 1}, {OptionType: 1}}}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, gopacket.Payload(t)); err != nil {
		return err
	}
	return sendRaw4(buf.Bytes())
}

func dump(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return err
	}
	src := gopacket.NewPacketSource(r, r.LinkType())
	for pkt := range src.Packets() {
		var ip []byte
		var desc string
		if l := pkt.Layer(layers.LayerTypeIPv4); l != nil {
			v4 := l.(*layers.IPv4)
			ip = append(v4.Contents, v4.Payload...)
			desc = fmt.Sprintf("%s > %s proto %d", v4.SrcIP, v4.DstIP, v4.Protocol)
		} else if l := pkt.Layer(layers.LayerTypeIPv6); l != nil {
			v6 := l.(*layers.IPv6)
			if v6.NextHeader == layers.IPProtocolICMPv6 && len(v6.Payload) > 0 && v6.Payload[0] >= 133 && v6.Payload[0] <= 137 {
				continue // neighbour discovery
			}
			ip = append(v6.Contents, v6.Payload...)
			desc = fmt.Sprintf("%s > %s next %d", v6.SrcIP, v6.DstIP, v6.NextHeader)
		} else {
			continue
		}
		fmt.Printf("# %s len %d\n%s\n", desc, len(ip), hex.EncodeToString(ip))
	}
	return nil
}
