package lab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// WriteCerts writes into dir a self-signed CA (ca.pem, ECDSA P-256), a
// server certificate chain (server.pem: the leaf, RSA 2048, valid for the
// given addresses and ServerName, then an intermediate CA, ECDSA P-256)
// and the leaf's key (server-key.pem, mode 0600).
//
// The chain is shaped like a public CA's, as api.betradar.com's and
// mq.betradar.com's are: leaf plus intermediate, an RSA key, so that the
// server's TLS flight (about 1.6 KB) does not fit one segment. A lab with
// a one-certificate ECDSA chain (under 1 KB) completes every handshake
// through a PMTU black hole toward the client that hangs the real
// service's.
func WriteCerts(dir string, ips []netip.Addr) (caFile, certFile, keyFile string, err error) {
	return writeCerts(dir, ips, false)
}

// writeCerts is WriteCerts; small writes a one-certificate chain instead:
// an ECDSA P-256 leaf signed by the CA (Server.SmallCertChain).
func writeCerts(dir string, ips []netip.Addr, small bool) (caFile, certFile, keyFile string, err error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", fmt.Errorf("generating CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "hopcheck lab CA", Organization: []string{"hopcheck lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", fmt.Errorf("creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", "", fmt.Errorf("parsing CA certificate: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", fmt.Errorf("generating intermediate key: %w", err)
	}
	interTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "hopcheck lab intermediate CA", Organization: []string{"hopcheck lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, ca, &interKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", fmt.Errorf("creating intermediate certificate: %w", err)
	}
	inter, err := x509.ParseCertificate(interDER)
	if err != nil {
		return "", "", "", fmt.Errorf("parsing intermediate certificate: %w", err)
	}
	var key crypto.Signer
	if small {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return "", "", "", fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: ServerName, Organization: []string{"hopcheck lab"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{ServerName},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	issuer, issuerKey, chain := inter, crypto.Signer(interKey), [][]byte{interDER}
	if small {
		issuer, issuerKey, chain = ca, caKey, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), issuerKey)
	if err != nil {
		return "", "", "", fmt.Errorf("creating server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", "", fmt.Errorf("encoding server key: %w", err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	certFile = filepath.Join(dir, "server.pem")
	keyFile = filepath.Join(dir, "server-key.pem")
	pemOf := func(typ string, ders ...[]byte) []byte {
		var out []byte
		for _, d := range ders {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
		}
		return out
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caFile, pemOf("CERTIFICATE", caDER), 0o644},
		{certFile, pemOf("CERTIFICATE", append([][]byte{der}, chain...)...), 0o644},
		{keyFile, pemOf("PRIVATE KEY", keyDER), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return "", "", "", fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return caFile, certFile, keyFile, nil
}

// serial returns a random 128-bit certificate serial number.
func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}
