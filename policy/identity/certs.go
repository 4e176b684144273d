package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemRequest     = "CERTIFICATE REQUEST"
)

// maxChainLen bounds how many certificates a chain may hold. Real chains are
// leaf + CA; the bound keeps a hostile file or peer from making us parse and
// verify without limit.
const maxChainLen = 8

// maxFileSize bounds every key, certificate, request and pins file read.
const maxFileSize = 4 << 20

// Fingerprint is the SHA-256 of a certificate's SubjectPublicKeyInfo, written
// "sha256:" and 64 lower-case hex digits. It names the key, not the
// certificate, so a renewed certificate for the same key keeps its pin.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func keyFingerprint(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "(unencodable key)"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// checkFingerprint reports whether s has the form Fingerprint returns.
func checkFingerprint(s string) error {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*sha256.Size || strings.ToLower(h) != h {
		return fmt.Errorf("fingerprint %q: want sha256: and 64 lower-case hex digits", s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("fingerprint %q: want sha256: and 64 lower-case hex digits", s)
	}
	return nil
}

// ParseChain parses PEM-encoded certificates, leaf first. Text outside PEM
// blocks is ignored (tools often add some), but a PEM block of another type is
// an error, so that a private key pasted into a certificate file by mistake
// is noticed instead of silently carried along.
func ParseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("unexpected PEM block %q where a CERTIFICATE was expected", block.Type)
		}
		if len(chain) == maxChainLen {
			return nil, fmt.Errorf("more than %d certificates in one chain", maxChainLen)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return chain, nil
}

// EncodeChain writes certificates as PEM, in the order given.
func EncodeChain(chain ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range chain {
		// pem.Encode into a bytes.Buffer cannot fail: headers are nil.
		_ = pem.Encode(&b, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return b.Bytes()
}

func encodePrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

func parsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found; the file is not a PEM private key")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("PEM block is %q, want %q (PKCS#8)", block.Type, pemPrivateKey)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("malformed PKCS#8 private key: %w", err)
	}
	ed, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: the key is a %T", ErrNotEd25519, key)
	}
	return ed, nil
}

// leafKey returns the leaf's public key if it is Ed25519.
func leafKey(c *x509.Certificate) (ed25519.PublicKey, bool) {
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	return pub, ok
}

// selfSigned reports whether c is signed by its own key. Only then may
// trust-on-first-use accept it: the signature shows that whoever holds the key
// bound it to this node ID. It does not ask for a CA basic constraint, which
// x509.Certificate.CheckSignatureFrom would.
func selfSigned(c *x509.Certificate) bool {
	return c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// randomSerial returns a random positive 128-bit serial number, as RFC 5280
// asks CAs to use unpredictable serials.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("identity: random serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// readFile reads a file of at most maxFileSize bytes. Its errors name the
// file.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes, too large for a key, certificate or pins file", path, maxFileSize)
	}
	return data, nil
}

// writeFileAtomic replaces path with data so that a crash at any moment
// leaves either the old file or the new one, never a torn mix: write a temp
// file beside it, fsync, rename over, and fsync the directory so the rename
// itself is durable.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600, so a private key is never readable by
	// others, even for a moment; widen it only if asked.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	tmp = ""
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// makePrivateDir creates dir (and its parents) and makes dir itself 0700: it
// holds private keys, so no one else should even list it.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
