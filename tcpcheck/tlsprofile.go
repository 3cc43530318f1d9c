package tcpcheck

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// TLSProfile is the TLS client whose ClientHello hopcheck's connections
// imitate, as far as crypto/tls allows. It matters on the path: Go's own
// hello carries a post-quantum key share (X25519MLKEM768, about 1.2 KB
// more), so that it is about 1.5 KB and needs two segments; on a path
// with a smaller MTU it draws a frag-needed the UOF SDKs' hellos of a few
// hundred bytes never draw, the kernel learns the path MTU and later
// connections advertise a smaller MSS: a PMTU black hole that hangs every
// SDK handshake stays hidden from a Go-like probe.
type TLSProfile string

const (
	// TLSProfileJava is a JDK 17 client (the UOF Java SDK: the RabbitMQ
	// Java client and its HTTP client over SSLSocket): TLS 1.3 and 1.2,
	// groups x25519, secp256r1, secp384r1, secp521r1 with one key share
	// (x25519), the JDK's ECDHE suites for TLS 1.2, no ALPN (SSLSocket
	// sends none unless the application asks).
	TLSProfileJava TLSProfile = "java"
	// TLSProfileDotNet is a .NET client (the UOF .NET SDK: SslStream over
	// OpenSSL on Linux, SChannel on Windows): x25519 and the NIST curves,
	// one key share, no ALPN (HttpClient over HTTP/1.1 and the RabbitMQ
	// .NET client set none). crypto/tls fixes the order of groups and
	// extensions, so its hello is the Java profile's today: what matters
	// on the path, its size and single key share, is the same.
	TLSProfileDotNet TLSProfile = "dotnet"
	// TLSProfileGo is Go's crypto/tls defaults (post-quantum key share
	// included) and ALPN http/1.1 for HTTPS: hopcheck's hello before
	// profiles existed, and what a Go client sends.
	TLSProfileGo TLSProfile = "go"
)

// DefaultTLSProfile is the profile of the client hopcheck stands for by
// default: the UOF Java SDK.
const DefaultTLSProfile = TLSProfileJava

// OrDefault is p, or DefaultTLSProfile for "".
func (p TLSProfile) OrDefault() TLSProfile {
	if p == "" {
		return DefaultTLSProfile
	}
	return p
}

// TLSProfiles lists the profiles by name.
var TLSProfiles = []TLSProfile{TLSProfileJava, TLSProfileDotNet, TLSProfileGo}

// ParseTLSProfile reads a --tls-profile value; "" is the default.
func ParseTLSProfile(s string) (TLSProfile, error) {
	if s == "" {
		return DefaultTLSProfile, nil
	}
	for _, p := range TLSProfiles {
		if string(p) == strings.ToLower(s) {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown TLS profile (want java, dotnet or go)")
}

// jdkSuites are the TLS 1.2 suites a JDK 17 client enables by default
// that crypto/tls implements (TLS 1.3 suites are not configurable; Go
// offers the same three). Go orders them by its own preference.
var jdkSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
}

// profileTLS sets what p changes in c; nextProtos is the ALPN of the
// protocol, which only the go profile sends. An empty profile is the
// default.
func profileTLS(c *tls.Config, p TLSProfile, nextProtos []string) {
	switch p.OrDefault() {
	case TLSProfileGo:
		c.NextProtos = nextProtos
	default: // java, dotnet
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS13
		// No X25519MLKEM768: one x25519 key share (Go ignores the order).
		c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}
		c.CipherSuites = jdkSuites
	}
}
