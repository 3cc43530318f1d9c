// Package lab builds a network lab in Linux network namespaces: a chain
// client → N routers → server, connected by veth pairs, with per-router
// middlebox behaviour and a lab server in the server namespace. Lab tests
// run hopcheck inside the client namespace (Lab.Command) or dial from it
// (Lab.Dial) and assert on what they see; `hopcheck demo` uses the same
// scenarios.
//
// # Addressing
//
// Link k (k = 0..N) joins node k and node k+1 (node 0 = client, node N+1 =
// server) and carries 198.18.k.0/24 and 2001:db8:0:k::/64, left side .1/::1,
// right side .2/::2. Every node has static routes for every link (client and
// server: default routes into the chain; routers: per-link routes toward
// the left or right neighbour) and nothing else: lab addresses exist only
// inside the lab namespaces, and no namespace has a path to the root
// namespace or beyond. Router i answers (ICMP errors) from its client-facing
// address 198.18.(i-1).2 / 2001:db8:0:(i-1)::2.
//
// With Scenario.ECMPRouter = k, router k gets a twin (namespace -rkb, the
// same knobs) on two extra links, 198.19.(k-1).0/24 and 198.19.k.0/24
// (2001:db8:1:k-1::/64, 2001:db8:1:k::/64), from router k-1 (interface
// "toserverb") to the node after router k ("toclientb"). Router k-1 routes
// everything beyond router k over both (ECMP) with
// fib_multipath_hash_policy=1, so the 5-tuple picks the path; what the
// nodes beyond send back goes through router k. The twin answers from
// 198.19.(k-1).2 / 2001:db8:1:(k-1)::2.
//
// Namespaces are named <prefix><creator pid>x<4 hex>-c, -r1..-rN and -s.
// Inside each, the interfaces are "toclient" and "toserver". CleanupStale
// (also run by Build) removes labs whose creating process is gone.
//
// # Kernel behaviour the lab relies on
//
//   - ICMP errors: the kernel's own rate limits (icmp_ratelimit 1000 ms with
//     a burst of 6 per destination, icmp_msgs_per_sec/burst, ipv6
//     icmp.ratelimit) stay at their defaults on every node, as on real
//     routers: a client gets about 6 answers at once from a router, then
//     about 1 per second. Router.ICMPRateLimit adds an explicit nft limit
//     (rate N/s, burst N, shared by both families) in the router's output
//     hook, where locally generated ICMP errors pass.
//   - Idle timeouts: nf_conntrack_tcp_timeout_established is per namespace.
//     With nf_conntrack_tcp_loose=0 a packet of an expired flow finds no
//     entry and is "ct state invalid", which the router resets or drops.
//     Expiry is checked when the next packet is looked up, so it is exact:
//     idle T-20ms survives, T+20ms does not.
//   - Mid-stream resets: Router.ResetAfterBytes reads conntrack's per-flow
//     byte counters (ct bytes, accounting on). nft's reject answers only the
//     sender of a packet, so the client's next packet past the limit draws
//     the RST and marks the flow; the server's packets of a marked flow
//     draw one too.
//   - On-path injection: Router.InjectRST is no rule but a process
//     (`hopcheck lab-inject`, lab/inject.go) in the router's namespace:
//     a packet socket sees the forwarded flows, a raw socket sends the
//     RST toward the client with the server's next sequence number
//     (Linux resets only on an exact match) while the kernel forwards on.
//   - DAD is off (nodad, accept_dad=0) and the two ends of each veth get
//     distinct ifindexes: with equal ones (both 2 in fresh namespaces)
//     linkwatch reports carrier up to a second late, and IPv6 loses packets
//     until then. Build waits until every link runs and has its link-local
//     address.
//
// # Server
//
// Serve (run by the hidden `hopcheck lab-serve`) listens on both families:
// HTTPS (GET /v1/users/whoami.xml with x-access-token, /large, /peer), a
// TLS AMQP 0-9-1 header responder that answers Connection.Start, and a TCP
// echo. Server.MaxConns counts open connections across all ports and resets
// (SO_LINGER 0) those beyond it; Server.IdleClose closes idle connections on
// every port (HTTPS: after a response; a connection that never sent a
// request gets nginx's client_header_timeout, 60 s). StartNginx runs a real
// nginx as the HTTPS server instead (lab/nginx.go). The token reaches the server by file, never on a command line.
package lab
