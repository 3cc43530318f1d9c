package tcpcheck

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHelloSize runs a client handshake with cfg over a pipe and returns
// the size of its first TLS record (the ClientHello) on the wire.
func clientHelloSize(t *testing.T, cfg *tls.Config) int {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tls.Client(cli, cfg).HandshakeContext(ctx)
		cli.Close()
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(srv, hdr[:]); err != nil {
		t.Fatalf("reading the record header: %v", err)
	}
	if hdr[0] != 22 { // handshake
		t.Fatalf("first record type %d, want 22", hdr[0])
	}
	n := int(binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(srv, make([]byte, n)); err != nil {
		t.Fatalf("reading the ClientHello: %v", err)
	}
	return 5 + n
}

// clientHello returns what a server learns from cfg's ClientHello.
func clientHello(t *testing.T, cfg *tls.Config) *tls.ClientHelloInfo {
	t.Helper()
	cli, srv := net.Pipe()
	defer cli.Close()
	defer srv.Close()
	got := make(chan *tls.ClientHelloInfo, 1)
	stop := errors.New("seen")
	go func() {
		_ = tls.Server(srv, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			got <- h
			return nil, stop
		}}).Handshake()
		srv.Close()
	}()
	_ = tls.Client(cli, cfg).Handshake()
	select {
	case h := <-got:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("no ClientHello")
		return nil
	}
}

// The Java and .NET profiles send a ClientHello of a few hundred bytes
// (one segment on any path), the Go profile Go's own of about 1.5 KB with
// a post-quantum key share.
func TestTLSProfileClientHello(t *testing.T) {
	tests := []struct {
		profile     TLSProfile
		app         App
		minSize     int
		maxSize     int
		postQuantum bool
		alpn        []string
		curves      []tls.CurveID
	}{
		{TLSProfileJava, AppHTTPS, 150, 600, false, nil, []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}},
		{TLSProfileJava, AppAMQPS, 150, 600, false, nil, []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}},
		{TLSProfileDotNet, AppHTTPS, 150, 600, false, nil, []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}},
		{"", AppHTTPS, 150, 600, false, nil, []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}}, // default: java
		{TLSProfileGo, AppHTTPS, 1200, 2000, true, []string{"http/1.1"}, nil},
		{TLSProfileGo, AppAMQPS, 1200, 2000, true, nil, nil},
	}
	for _, tc := range tests {
		t.Run(string(tc.profile)+"/"+string(tc.app), func(t *testing.T) {
			cfg := protocolFor(tc.app).tlsConfig(DialConfig{App: tc.app, ServerName: "mq.betradar.com", TLSProfile: tc.profile})
			size := clientHelloSize(t, cfg)
			t.Logf("%s %s: ClientHello %d bytes", tc.profile, tc.app, size)
			if size < tc.minSize || size > tc.maxSize {
				t.Errorf("ClientHello of %d bytes, want %d-%d", size, tc.minSize, tc.maxSize)
			}
			h := clientHello(t, cfg)
			if pq := slices.Contains(h.SupportedCurves, tls.X25519MLKEM768); pq != tc.postQuantum {
				t.Errorf("groups %v: post-quantum %v, want %v", h.SupportedCurves, pq, tc.postQuantum)
			}
			if tc.curves != nil && !slices.Equal(h.SupportedCurves, tc.curves) {
				t.Errorf("groups %v, want %v", h.SupportedCurves, tc.curves)
			}
			if !slices.Equal(h.SupportedProtos, tc.alpn) {
				t.Errorf("ALPN %q, want %q", h.SupportedProtos, tc.alpn)
			}
			if h.ServerName != "mq.betradar.com" || !slices.Contains(h.SupportedVersions, tls.VersionTLS13) || !slices.Contains(h.SupportedVersions, tls.VersionTLS12) {
				t.Errorf("SNI %q versions %x", h.ServerName, h.SupportedVersions)
			}
		})
	}
}

func TestParseTLSProfile(t *testing.T) {
	for in, want := range map[string]TLSProfile{"": TLSProfileJava, "java": TLSProfileJava, "dotnet": TLSProfileDotNet, "Go": TLSProfileGo} {
		if got, err := ParseTLSProfile(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"openssl", "java17", " java"} {
		if _, err := ParseTLSProfile(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMSSSearch(t *testing.T) {
	tests := []struct {
		m    mssSearch
		want int
	}{
		{mssSearch{1200, 1460}, 1330},
		{mssSearch{1330, 1460}, 1395},
		{mssSearch{1355, 1362}, 0}, // within 8 bytes: done
		{mssSearch{1360, 1368}, 0},
		{mssSearch{1360, 1369}, 1364},
	}
	for _, tc := range tests {
		if got := tc.m.next(); got != tc.want {
			t.Errorf("%+v.next() = %d, want %d", tc.m, got, tc.want)
		}
	}
	if ipHeader(false) != 40 || ipHeader(true) != 60 {
		t.Error("header sizes")
	}
	si := &SegmentInfo{AdvMSS: 1448, optLen: 12}
	if si.synMSS() != 1460 {
		t.Errorf("synMSS %d, want 1460", si.synMSS())
	}
	stalled := ConnRecord{Outcome: OutcomeTimeout, Phase: PhaseTLS, Segment: si}
	for _, tc := range []struct {
		r    ConnRecord
		want bool
	}{
		{stalled, true},
		{ConnRecord{Outcome: OutcomeTimeout, Phase: PhaseApp, Segment: si}, true},
		{ConnRecord{Outcome: OutcomeTimeout, Phase: PhaseTCP, Segment: si}, false}, // no SYN-ACK: not about segment size
		{ConnRecord{Outcome: OutcomeTimeout, Phase: PhaseTLS}, false},              // no TCP_INFO
		{ConnRecord{Outcome: OutcomeResetInHandshake, Phase: PhaseTLS, Segment: si}, false},
	} {
		if got := stalledSetup(tc.r); got != tc.want {
			t.Errorf("stalledSetup(%+v) = %v", tc.r, got)
		}
	}
}

func TestCachedPMTU(t *testing.T) {
	rec := func(pmtu, link int) ConnRecord {
		return ConnRecord{Segment: &SegmentInfo{AdvMSS: pmtu - 52, PathMTU: pmtu, LinkMTU: link}}
	}
	tests := []struct {
		name       string
		conns      []ConnRecord
		pmtu, link int
		ok         bool
	}{
		{"none learned", []ConnRecord{rec(1500, 1500), rec(1500, 1500)}, 0, 0, false},
		{"learned during the test", []ConnRecord{rec(1500, 1500), rec(1400, 1500), rec(1400, 1500)}, 1400, 1500, true},
		{"the smallest", []ConnRecord{rec(1400, 1500), rec(1280, 1500)}, 1280, 1500, true},
		{"link unknown", []ConnRecord{rec(1400, 0)}, 0, 0, false},
		{"no TCP_INFO", []ConnRecord{{Outcome: OutcomeTimeout}}, 0, 0, false},
		{"loopback", []ConnRecord{rec(65536, 65536)}, 0, 0, false},
	}
	for _, tc := range tests {
		pmtu, link, ok := CachedPMTU(Result{Connections: tc.conns})
		if pmtu != tc.pmtu || link != tc.link || ok != tc.ok {
			t.Errorf("%s: %d %d %v, want %d %d %v", tc.name, pmtu, link, ok, tc.pmtu, tc.link, tc.ok)
		}
	}
}
