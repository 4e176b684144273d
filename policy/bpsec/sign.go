package bpsec

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/identity"
)

// Key is what signs bundles: an Ed25519 private key and its certificate
// chain, leaf first. The leaf must name the bundle source's node ID.
type Key struct {
	Signer crypto.Signer
	Chain  []*x509.Certificate
}

// KeyOf is a node identity's signing key: its private key and its chain
// (leaf + group CA once issued, so any node trusting the CA can verify
// offline).
func KeyOf(id *identity.Identity) (Key, error) {
	signer, ok := id.TLSCertificate().PrivateKey.(crypto.Signer)
	if !ok {
		return Key{}, errors.New("bpsec: identity's private key cannot sign")
	}
	return Key{Signer: signer, Chain: id.Chain()}, nil
}

// ErrAlreadySigned: the payload already has an integrity block.
var ErrAlreadySigned = errors.New("bpsec: the payload already has an integrity block")

// Sign signs b's payload and primary block as b's source, with the COSE
// context: it reads payload (exactly b.Payload.Length bytes) once, through
// SHA-256, and adds the integrity block to b. The caller then encodes b with
// the same payload. To sign while the payload streams elsewhere (to a
// store), use NewSigning.
func Sign(b *bundle.Bundle, payload io.Reader, key Key) error {
	s, err := NewSigning(b, key)
	if err != nil {
		return err
	}
	return s.copyAndFinish(payload)
}

// SignHMAC adds a BIB-HMAC-SHA2 integrity block (RFC 9173) over b's payload,
// reading payload once.
func SignHMAC(b *bundle.Bundle, payload io.Reader, key HMACKey) error {
	s, err := NewHMACSigning(b, key)
	if err != nil {
		return err
	}
	return s.copyAndFinish(payload)
}

// Signing is a signature being computed: write the payload to it, every
// byte once and in order, then call Finish. b must not change in between.
type Signing struct {
	b      *bundle.Bundle
	bib    blockMeta
	crc    bundle.CRCType
	h      hash.Hash
	n      uint64
	finish func(sum []byte) (*ASB, error)
	done   bool
}

// NewSigning starts signing b with the COSE context (see the package
// documentation for what is covered).
func NewSigning(b *bundle.Bundle, key Key) (*Signing, error) {
	if err := signable(b); err != nil {
		return nil, err
	}
	src := b.Primary.Source.NodeID()
	pub, ok := key.Signer.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("bpsec: signing key is %T; mulegate signs with Ed25519", key.Signer.Public())
	}
	if len(key.Chain) == 0 || key.Chain[0] == nil {
		return nil, errors.New("bpsec: no certificate to sign with")
	}
	if len(key.Chain) > maxChain {
		return nil, fmt.Errorf("bpsec: certificate chain of %d; at most %d", len(key.Chain), maxChain)
	}
	if leafPub, ok := key.Chain[0].PublicKey.(ed25519.PublicKey); !ok || !bytes.Equal(leafPub, pub) {
		return nil, errors.New("bpsec: the certificate is not the signing key's")
	}
	if id, err := certNodeID(key.Chain[0]); err != nil || id != src.String() {
		return nil, fmt.Errorf("bpsec: the certificate is for %q, not the bundle's source %s", id, src)
	}
	s := &Signing{b: b, crc: b.Payload.CRCType, h: sha256.New()}
	// Replicated, so that every fragment carries it and the reassembled
	// bundle can be verified whichever fragment comes first.
	s.bib = blockMeta{Type: bundle.BlockIntegrity, Number: nextBlockNumber(b), Flags: bundle.BlockReplicate}
	chainParam := x5chainParam(key.Chain)
	var addProtected []byte
	if err := decMode.Unmarshal(chainParam.Value, &addProtected); err != nil {
		return nil, err
	}
	s.finish = func(digest []byte) (*ASB, error) {
		aad, err := externalAAD(b, src, defaultScope, payloadMeta(b), s.bib, addProtected, s.bib.Number)
		if err != nil {
			return nil, err
		}
		r, err := signCOSE(key, aad, digest)
		if err != nil {
			return nil, err
		}
		return &ASB{
			Targets: []uint64{1},
			Context: ContextCOSE,
			Source:  src,
			Params:  []Param{chainParam, {ID: paramAADScope, Value: mustMarshal(defaultScope)}},
			Results: [][]Result{{r}},
		}, nil
	}
	return s, nil
}

// NewHMACSigning starts a BIB-HMAC-SHA2 integrity block over b's payload.
func NewHMACSigning(b *bundle.Bundle, key HMACKey) (*Signing, error) {
	if err := signable(b); err != nil {
		return nil, err
	}
	if len(key.Key) == 0 {
		return nil, errors.New("bpsec: empty HMAC key")
	}
	if key.Variant == 0 {
		key.Variant = HMAC384
	}
	if key.Variant.hash() == nil {
		return nil, fmt.Errorf("bpsec: unknown SHA variant %d", key.Variant)
	}
	if key.Source.IsZero() {
		key.Source = b.Primary.Source.NodeID()
	}
	s := &Signing{b: b, crc: b.Payload.CRCType}
	s.bib = blockMeta{Type: bundle.BlockIntegrity, Number: nextBlockNumber(b)}
	mac, err := newMAC(b, key.Variant, key.Key, key.Scope, payloadMeta(b), s.bib, b.Payload.Length)
	if err != nil {
		return nil, err
	}
	s.h = mac
	s.finish = func(sum []byte) (*ASB, error) {
		return &ASB{
			Targets: []uint64{1},
			Context: ContextHMACSHA2,
			Source:  key.Source,
			Params:  key.params(),
			Results: [][]Result{{{ID: hmacResultMAC, Value: mustMarshal(sum)}}},
		}, nil
	}
	return s, nil
}

func signable(b *bundle.Bundle) error {
	if b.Primary.IsFragment() {
		return errors.New("bpsec: sign the whole bundle, before fragmenting it")
	}
	if b.Primary.Source.IsZero() || b.Primary.Source.IsNone() {
		return errors.New("bpsec: an anonymous bundle (source dtn:none) has no one to sign it")
	}
	for i := range b.Blocks {
		if b.Blocks[i].Type != bundle.BlockIntegrity {
			continue
		}
		if a, err := ParseASB(b.Blocks[i].Data); err != nil || a.targetIndex(1) >= 0 {
			return ErrAlreadySigned
		}
	}
	return nil
}

// Write feeds payload bytes to the signature.
func (s *Signing) Write(p []byte) (int, error) {
	if s.done {
		return 0, errors.New("bpsec: write after Finish")
	}
	s.n += uint64(len(p))
	return s.h.Write(p)
}

// Finish checks that the whole payload was written and adds the integrity
// block to the bundle, before the payload block.
func (s *Signing) Finish() error {
	if s.done {
		return errors.New("bpsec: Finish called twice")
	}
	s.done = true
	if s.n != s.b.Payload.Length {
		return fmt.Errorf("%w: signed %d payload bytes of %d", bundle.ErrPayloadLength, s.n, s.b.Payload.Length)
	}
	a, err := s.finish(s.h.Sum(nil))
	if err != nil {
		return err
	}
	data, err := a.Marshal()
	if err != nil {
		return err
	}
	s.b.Blocks = append(s.b.Blocks, bundle.Block{
		Type: s.bib.Type, Number: s.bib.Number, Flags: s.bib.Flags, CRCType: s.crc, Data: data,
	})
	return nil
}

func (s *Signing) copyAndFinish(payload io.Reader) error {
	if _, err := io.Copy(s, payload); err != nil {
		return fmt.Errorf("bpsec: reading the payload: %w", err)
	}
	return s.Finish()
}
