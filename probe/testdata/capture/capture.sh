#!/bin/sh
# Rebuilds the real-Linux packets frozen as fixtures in probe/decode_test.go:
# client -- router (MTU 1280 towards the server) -- server, in network
# namespaces named hc<pid>{c,r,s}, removed on exit. Needs root and tcpdump.
# Prints the captured IP packets (client side) as hex. Usage, from the repo:
#   sudo sh probe/testdata/capture/capture.sh > /tmp/capture.txt
set -eu
cd "$(dirname "$0")/../../.."
go build -o /tmp/hc-capture ./probe/testdata/capture

ns=hc$$
c=${ns}c r=${ns}r s=${ns}s
pcap=/tmp/$ns.pcap
cleanup() {
	[ -n "${listener:-}" ] && kill "$listener" 2>/dev/null || true
	[ -n "${dumper:-}" ] && kill "$dumper" 2>/dev/null || true
	for n in $c $r $s; do ip netns del "$n" 2>/dev/null || true; done
	rm -f "$pcap"
}
trap cleanup EXIT INT TERM

for n in $c $r $s; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add c0 netns $c type veth peer name r0 netns $r
ip link add r1 netns $r type veth peer name s0 netns $s
ip -n $r link set r1 mtu 1280
ip -n $s link set s0 mtu 1280

ip -n $c addr add 198.18.1.2/24 dev c0
ip -n $c addr add 2001:db8:1::2/64 dev c0 nodad
ip -n $r addr add 198.18.1.1/24 dev r0
ip -n $r addr add 2001:db8:1::1/64 dev r0 nodad
ip -n $r addr add 198.18.2.1/24 dev r1
ip -n $r addr add 2001:db8:2::1/64 dev r1 nodad
ip -n $s addr add 198.18.2.2/24 dev s0
ip -n $s addr add 2001:db8:2::2/64 dev s0 nodad
for l in "$c c0" "$r r0" "$r r1" "$s s0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n $c route add default via 198.18.1.1
ip -n $c -6 route add default via 2001:db8:1::1
ip -n $s route add default via 198.18.2.1
ip -n $s -6 route add default via 2001:db8:2::1
for n in $r $s; do
	ip netns exec "$n" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
done
ip netns exec $r sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

ip netns exec $s /tmp/hc-capture listen & listener=$!
ip netns exec $c tcpdump -q -i c0 -s 0 -U -w "$pcap" 'icmp or icmp6 or tcp or udp or ip proto 253 or ip6' 2>/dev/null & dumper=$!
sleep 1
ip netns exec $c /tmp/hc-capture send
sleep 1
kill "$dumper"; wait "$dumper" 2>/dev/null || true; dumper=
/tmp/hc-capture dump "$pcap"
