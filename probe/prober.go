package probe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Prober sends TTL-limited probes toward one destination with one protocol
// and delivers the responses matched to them. Implementations are chosen
// once by NewProber according to the privilege tier.
type Prober interface {
	// Privilege is the tier this prober runs with.
	Privilege() Privilege
	// Send transmits p (p.Protocol, p.Dst and p.DstPort must equal the
	// prober's) and sets p.ID and p.SentAt.
	Send(p *Probe) error
	// Responses delivers responses matched to probes sent by this prober.
	// It is closed by Close.
	Responses() <-chan Response
	// Close releases sockets; pending probes are forgotten.
	Close() error
}

// Config selects what a prober probes and how.
type Config struct {
	Protocol Protocol
	Dst      netip.Addr
	DstPort  uint16 // TCP/UDP
	// Flows is the number of Paris flows (distinct 5-tuples) to prepare.
	Flows int
	// MaxWait bounds how long an unprivileged TCP probe socket stays open
	// waiting for an answer (default 5 s).
	MaxWait time.Duration
	// Privilege is "auto" (raw if permitted, else unprivileged), "raw" or
	// "unprivileged".
	Privilege string
}

// accepts checks that a probe belongs to a prober of this configuration.
func (c Config) accepts(pr *Probe) error {
	if pr.Protocol != c.Protocol || pr.Dst.Unmap() != c.Dst {
		return fmt.Errorf("send: probe %s/%s does not belong to this prober (%s/%s)", pr.Protocol, pr.Dst, c.Protocol, c.Dst)
	}
	if pr.TTL < 1 || pr.TTL > 255 {
		return fmt.Errorf("send: ttl %d out of range 1-255", pr.TTL)
	}
	return nil
}

// ErrNoRawAccess means raw sockets were required but CAP_NET_RAW is missing.
var ErrNoRawAccess = errors.New("raw sockets need CAP_NET_RAW (run as root, or: sudo setcap cap_net_raw+ep $(command -v hopcheck))")

// ErrUnsupported means the tier cannot probe with that protocol here.
var ErrUnsupported = errors.New("not supported with this privilege tier")

// NewProber opens the sockets for cfg. With Privilege "auto" it uses raw
// sockets when the process may, else the unprivileged methods.
func NewProber(ctx context.Context, cfg Config) (Prober, error) {
	if !cfg.Dst.IsValid() {
		return nil, fmt.Errorf("new prober: no destination address")
	}
	cfg.Dst = cfg.Dst.Unmap()
	if cfg.Flows < 1 {
		cfg.Flows = 1
	}
	if _, ok := ParseProtocol(string(cfg.Protocol)); !ok {
		return nil, fmt.Errorf("new prober: unknown protocol %q", cfg.Protocol)
	}
	ident, err := NewIdent(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new prober: %w", err)
	}
	switch cfg.Privilege {
	case "", "auto":
		if HasRawAccess() {
			return newRawProber(ctx, cfg, ident)
		}
		return newUnprivProber(ctx, cfg, ident)
	case string(PrivilegeRaw):
		if !HasRawAccess() {
			return nil, ErrNoRawAccess
		}
		return newRawProber(ctx, cfg, ident)
	case string(PrivilegeUnprivileged):
		return newUnprivProber(ctx, cfg, ident)
	}
	return nil, fmt.Errorf("new prober: unknown privilege %q (want auto, raw or unprivileged)", cfg.Privilege)
}

// SourceFor returns the local address the kernel would use toward dst,
// found by connecting a UDP socket (which sends nothing).
func SourceFor(dst netip.Addr) (netip.Addr, error) {
	network := "udp4"
	if dst.Is6() {
		network = "udp6"
	}
	c, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	defer c.Close()
	src := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return src, nil
}

// pendingTable remembers the probes in flight so that a response can be
// matched to exactly one probe, once.
type pendingTable struct {
	mu      sync.Mutex
	next    uint16
	entries map[uint16]Probe
}

func newPendingTable() *pendingTable {
	return &pendingTable{entries: make(map[uint16]Probe)}
}

// add assigns the next non-zero index to p and records it.
func (t *pendingTable) add(p *Probe) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		t.next++
		if t.next == 0 {
			continue
		}
		if _, busy := t.entries[t.next]; !busy {
			break
		}
	}
	p.ID = t.next
	t.entries[p.ID] = *p
}

// setSent records the send time once the packet left.
func (t *pendingTable) setSent(id uint16, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[id]; ok {
		e.SentAt = at
		t.entries[id] = e
	}
}

// take removes and returns the probe with index id.
func (t *pendingTable) take(id uint16) (Probe, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.entries[id]
	if ok {
		delete(t.entries, id)
	}
	return p, ok
}

// peek returns the probe with index id without removing it.
func (t *pendingTable) peek(id uint16) (Probe, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.entries[id]
	return p, ok
}

// expire forgets probes sent before cutoff so that the table stays small
// during long mtr-like runs.
func (t *pendingTable) expire(cutoff time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, p := range t.entries {
		if !p.SentAt.IsZero() && p.SentAt.Before(cutoff) {
			delete(t.entries, id)
		}
	}
}

// fillFromICMP copies an ICMP message's fields into a response.
func fillFromICMP(r *Response, m ICMPMessage) {
	r.Kind = m.Kind
	r.Type = m.Type
	r.Code = m.Code
	r.MTU = m.MTU
	r.MPLS = m.MPLS
	r.Quoted = m.Quoted
	r.QuotedTTL = -1
	if m.Quoted != nil {
		r.QuotedTTL = m.Quoted.TTL
	}
}

// deliver sends r unless the prober is closing.
func deliver(ch chan<- Response, done <-chan struct{}, r Response) {
	select {
	case ch <- r:
	case <-done:
	}
}
