package trace

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeDNS answers PTR and TXT queries from tables. delay makes every answer
// slow; ignoreCtx makes it ignore cancellation, like a stuck resolver.
type fakeDNS struct {
	ptr       map[string][]string
	txt       map[string][]string
	delay     time.Duration
	ignoreCtx bool

	mu          sync.Mutex
	calls       []string
	inFlight    int
	maxInFlight int
}

func (f *fakeDNS) begin(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
}

func (f *fakeDNS) end() {
	f.mu.Lock()
	f.inFlight--
	f.mu.Unlock()
}

func (f *fakeDNS) setDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

func (f *fakeDNS) wait(ctx context.Context) error {
	f.mu.Lock()
	delay := f.delay
	f.mu.Unlock()
	if delay == 0 {
		return nil
	}
	if f.ignoreCtx {
		time.Sleep(delay)
		return nil
	}
	select {
	case <-time.After(delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeDNS) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	f.begin("PTR " + addr)
	defer f.end()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	names, ok := f.ptr[addr]
	if !ok {
		return nil, errors.New("lookup " + addr + ": no such host")
	}
	return names, nil
}

func (f *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	f.begin("TXT " + name)
	defer f.end()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	txts, ok := f.txt[name]
	if !ok {
		return nil, errors.New("lookup " + name + ": no such host")
	}
	return txts, nil
}

func (f *fakeDNS) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.calls)
	slices.Sort(out)
	return out
}

// tracesWith builds two traces whose hops have the given responders; the
// same addresses appear in both so that lookups must be shared.
func tracesWith(addrs ...string) []Trace {
	var hops []Hop
	for i, a := range addrs {
		hops = append(hops, Hop{TTL: i + 1, Responders: []Responder{{Address: a, Received: 1}}})
	}
	clone := func() []Hop {
		out := slices.Clone(hops)
		for i := range out {
			out[i].Responders = slices.Clone(out[i].Responders)
		}
		return out
	}
	return []Trace{{Target: Target{Protocol: "icmp"}, Hops: clone()}, {Target: Target{Protocol: "tcp"}, Hops: clone()}}
}

func responderFields(traces []Trace) []string {
	var out []string
	for _, t := range traces {
		for _, h := range t.Hops {
			for _, r := range h.Responders {
				out = append(out, r.Address+"|"+r.Hostname+"|"+r.ASN)
			}
		}
	}
	return out
}

func TestEnrich(t *testing.T) {
	dns := &fakeDNS{
		ptr: map[string][]string{
			"198.18.1.1":           {"gw.lab.example."},
			"1.1.1.1":              {"one.one.one.one.", "second.example."},
			"2606:4700:4700::1111": {"one.one.one.one."},
		},
		txt: map[string][]string{
			"1.1.1.1.origin.asn.cymru.com": {"13335 | 1.1.1.0/24 | AU | apnic | 2011-08-11"},
			"1.1.1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.4.0.0.7.4.6.0.6.2.origin6.asn.cymru.com": {
				"13335 | 2606:4700::/32 | US | arin | 2011-11-01"},
			"8.8.8.8.origin.asn.cymru.com": {"15169 | 8.8.8.0/24 | US | arin | 1992-12-01"},
		},
	}
	traces := tracesWith("198.18.1.1", "1.1.1.1", "::ffff:8.8.8.8", "2606:4700:4700::1111", "10.0.0.1", "not-an-address")
	e := NewEnricher(dns, EnrichOptions{ReverseDNS: true, ASN: true, Timeout: time.Second})
	e.Enrich(context.Background(), traces)

	want := []string{
		"198.18.1.1|gw.lab.example|",
		"1.1.1.1|one.one.one.one|AS13335",
		"::ffff:8.8.8.8||AS15169",
		"2606:4700:4700::1111|one.one.one.one|AS13335",
		"10.0.0.1||",
		"not-an-address||",
	}
	want = append(want, want...) // both traces
	if got := responderFields(traces); !slices.Equal(got, want) {
		t.Errorf("responders\n got %q\nwant %q", got, want)
	}
	// One lookup of each kind per address; none of ASN for private ones.
	wantCalls := []string{
		"PTR 1.1.1.1", "PTR 10.0.0.1", "PTR 198.18.1.1", "PTR 2606:4700:4700::1111", "PTR 8.8.8.8",
		"TXT 1.1.1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.4.0.0.7.4.6.0.6.2.origin6.asn.cymru.com",
		"TXT 1.1.1.1.origin.asn.cymru.com", "TXT 8.8.8.8.origin.asn.cymru.com",
	}
	if got := dns.callList(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls\n got %q\nwant %q", got, wantCalls)
	}

	// Cached: a second run asks nothing, failures included.
	again := tracesWith("1.1.1.1", "10.0.0.1")
	e.Enrich(context.Background(), again)
	if got := dns.callList(); len(got) != len(wantCalls) {
		t.Errorf("second Enrich looked up again: %q", got[len(wantCalls):])
	}
	if got := responderFields(again)[:2]; !slices.Equal(got, []string{"1.1.1.1|one.one.one.one|AS13335", "10.0.0.1||"}) {
		t.Errorf("cached results %q", got)
	}
}

func TestEnrichOptions(t *testing.T) {
	dns := &fakeDNS{ptr: map[string][]string{"1.1.1.1": {"one."}}, txt: map[string][]string{}}
	traces := tracesWith("1.1.1.1")
	NewEnricher(dns, EnrichOptions{}).Enrich(context.Background(), traces)
	if len(dns.callList()) != 0 {
		t.Errorf("lookups with nothing enabled: %q", dns.callList())
	}
	NewEnricher(dns, EnrichOptions{ASN: true}).Enrich(context.Background(), traces)
	if got := dns.callList(); !slices.Equal(got, []string{"TXT 1.1.1.1.origin.asn.cymru.com"}) {
		t.Errorf("ASN only: calls %q", got)
	}
	// A hostname already present is not erased by a failed lookup.
	traces[0].Hops[0].Responders[0].Hostname = "kept.example"
	NewEnricher(&fakeDNS{}, EnrichOptions{ReverseDNS: true}).Enrich(context.Background(), traces)
	if got := traces[0].Hops[0].Responders[0].Hostname; got != "kept.example" {
		t.Errorf("hostname = %q, want kept.example", got)
	}
}

func TestEnrichSlowResolverIsBounded(t *testing.T) {
	for _, ignoreCtx := range []bool{false, true} {
		dns := &fakeDNS{
			ptr:       map[string][]string{"1.1.1.1": {"one."}},
			txt:       map[string][]string{"1.1.1.1.origin.asn.cymru.com": {"13335 | 1.1.1.0/24"}},
			delay:     10 * time.Second,
			ignoreCtx: ignoreCtx,
		}
		traces := tracesWith("1.1.1.1", "8.8.8.8", "9.9.9.9")
		e := NewEnricher(dns, EnrichOptions{ReverseDNS: true, ASN: true, Timeout: 50 * time.Millisecond})
		start := time.Now()
		e.Enrich(context.Background(), traces)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("ignoreCtx=%v: Enrich took %v with a 50ms timeout", ignoreCtx, took)
		}
		for _, f := range responderFields(traces) {
			if f != "1.1.1.1||" && f != "8.8.8.8||" && f != "9.9.9.9||" {
				t.Errorf("ignoreCtx=%v: timed-out lookup filled %q", ignoreCtx, f)
			}
		}
	}
}

func TestEnrichCallerDeadline(t *testing.T) {
	dns := &fakeDNS{ptr: map[string][]string{"1.1.1.1": {"one."}}, delay: 10 * time.Second}
	e := NewEnricher(dns, EnrichOptions{ReverseDNS: true, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	e.Enrich(ctx, tracesWith("1.1.1.1"))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Enrich took %v past its caller's 50ms deadline", took)
	}
	// A lookup cut short by the caller is not cached as a failure.
	dns.setDelay(0)
	deadline := time.Now().Add(2 * time.Second)
	for {
		traces := tracesWith("1.1.1.1")
		e.Enrich(context.Background(), traces)
		if traces[0].Hops[0].Responders[0].Hostname == "one" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cancelled lookup stayed cached as empty")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnrichConcurrencyLimit(t *testing.T) {
	dns := &fakeDNS{ptr: map[string][]string{}, delay: 5 * time.Millisecond}
	var as []string
	for i := range 20 {
		as = append(as, netip.AddrFrom4([4]byte{1, 0, 0, byte(i + 1)}).String())
	}
	e := NewEnricher(dns, EnrichOptions{ReverseDNS: true, ASN: true, Concurrency: 3})
	e.Enrich(context.Background(), tracesWith(as...))
	if len(dns.callList()) != 40 {
		t.Errorf("%d lookups, want 40", len(dns.callList()))
	}
	if dns.maxInFlight > 3 {
		t.Errorf("%d lookups in flight, limit 3", dns.maxInFlight)
	}
}

func TestCymruOriginName(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"1.2.3.4", "4.3.2.1.origin.asn.cymru.com"},
		{"::ffff:203.0.113.9", "9.113.0.203.origin.asn.cymru.com"},
		{"2001:4860:b002::68", "8.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.b.0.6.8.4.1.0.0.2.origin6.asn.cymru.com"},
	}
	for _, tt := range tests {
		if got := CymruOriginName(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("CymruOriginName(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestParseCymruOrigin(t *testing.T) {
	tests := []struct {
		txts []string
		want string
	}{
		{[]string{"13335 | 1.1.1.0/24 | US | arin | 2010-07-14"}, "AS13335"},
		{[]string{`"13335 | 1.1.1.0/24 | US | arin | 2010-07-14"`}, "AS13335"},
		{[]string{"23028 701 | 216.90.108.0/24 | US | arin | 1998-09-25"}, "AS23028"},
		{[]string{"3356 | 4.0.0.0/9 | US | arin | 1992-12-01", "64500 | 4.2.0.0/16 | US | arin | 2001-01-01"}, "AS64500"},
		{[]string{"64500 | 4.2.0.0/16 | US", "3356 | 4.0.0.0/9 | US"}, "AS64500"},
		{[]string{"15169"}, "AS15169"},
		{[]string{"NA | 1.2.3.0/24"}, ""},
		{[]string{""}, ""},
		{[]string{"0 | 1.2.3.0/24"}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := parseCymruOrigin(tt.txts); got != tt.want {
			t.Errorf("parseCymruOrigin(%q) = %q, want %q", tt.txts, got, tt.want)
		}
	}
}

func TestHasPublicASN(t *testing.T) {
	tests := map[string]bool{
		"1.1.1.1": true, "8.8.8.8": true, "2606:4700:4700::1111": true, "::ffff:8.8.8.8": true,
		"10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "198.18.0.1": false, "198.19.255.1": false,
		"100.64.0.1": false, "127.0.0.1": false, "169.254.1.1": false, "192.0.2.1": false, "203.0.113.1": false,
		"0.0.0.0": false, "255.255.255.255": false, "224.0.0.1": false, "240.0.0.1": false,
		"2001:db8::1": false, "fd00::1": false, "fe80::1": false, "::1": false, "::": false, "ff02::1": false,
	}
	for a, want := range tests {
		if got := hasPublicASN(netip.MustParseAddr(a)); got != want {
			t.Errorf("hasPublicASN(%s) = %v, want %v", a, got, want)
		}
	}
}
