// Package testpki makes throwaway certificate authorities and server
// certificates for tests that speak TLS to real servers (an S3 server, an
// SMTP server, NATS), and writes them as the PEM files that
// configurations name. Keys are ECDSA P-256, which every server the tests
// run accepts; everything is valid from an hour ago for a day.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority made for one test. Its key is never
// written to disk: nothing but the test can sign with it.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	Pool *x509.CertPool // holds Cert only: a client that trusts this CA alone
	File string         // Cert as a PEM file, for a ca_file setting
}

// NewCA makes a CA whose subject is name, and writes its certificate to a
// file of the test's temporary directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs servers' certificates only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("making the test CA %q: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	file := filepath.Join(t.TempDir(), "ca.pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &CA{Cert: cert, Key: key, Pool: pool, File: file}
}

// Server is a server's certificate, and it and its key as PEM files.
type Server struct {
	Cert              *x509.Certificate
	CertFile, KeyFile string
}

// IssueServer signs a certificate for a server reached as hosts (IP
// addresses or DNS names; the first is also its common name), and writes
// it and its key to files of the test's temporary directory. It is not a
// CA's, so a client must build the chain to ca to trust it.
func (ca *CA) IssueServer(t testing.TB, hosts ...string) Server {
	t.Helper()
	if len(hosts) == 0 {
		t.Fatal("testpki: a server certificate needs at least one host")
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// A client certificate too, for a server that asks for one.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("issuing a server certificate for %v: %v", hosts, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := Server{Cert: cert, CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key")}
	writePEM(t, s.CertFile, "CERTIFICATE", der)
	writePEM(t, s.KeyFile, "PRIVATE KEY", pkcs8)
	return s
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// serial is a random serial number, so that two certificates made in one
// test never share one.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Files makes a CA and a certificate it signs for a server on loopback
// (127.0.0.1, ::1 and localhost), and returns the three PEM files a TLS
// configuration names: the CA's certificate, the server's certificate,
// and its key.
func Files(t testing.TB) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := NewCA(t, "mulegate test CA")
	s := ca.IssueServer(t, "127.0.0.1", "::1", "localhost")
	return ca.File, s.CertFile, s.KeyFile
}
