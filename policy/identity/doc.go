// Package identity decides who a peer is: it makes and stores a node's
// Ed25519 key and X.509 certificate, runs a group certificate authority,
// holds the trust roots and trust-on-first-use pins, and turns all of that
// into mutual TLS 1.3 configurations that refuse an unauthenticated peer in
// the handshake itself.
//
// # Identities
//
// A node's identity is an Ed25519 private key and a certificate chain whose
// leaf carries the node ID (for example dtn://alice/ or ipn:12.0) as its only
// node-ID URI subject alternative name. A fresh identity is self-signed. A
// group CA can issue a member certificate that also carries a member name such
// as campfire/alice in its Subject common name; the group is the part of the
// name before the first slash. The identity directory holds node.key (PKCS#8
// PEM, mode 0600) and node.crt (PEM chain, leaf first).
//
// A member never hands its private key to the CA: it exports a PKCS#10
// request ([Identity.Request]), the CA issues from it ([ParseRequest],
// [CA.Issue]), and the member installs the result ([Identity.Install]).
//
// # Trust
//
// A [Trust] holds trusted CA roots and individually trusted ("pinned")
// certificates, read from the trust directory. When neither is configured, the
// node runs trust-on-first-use: it accepts any self-signed peer once and pins
// its node ID to the SHA-256 of its public key in pins.json, refusing the same
// node ID with a different key afterwards. Only handshakes pin
// ([Trust.Verify]); a certificate that arrives inside data, such as a signed
// delivery notice, is checked with [Trust.VerifyKnown], which accepts only
// the key already pinned and pins nothing. Configuring any CA or trusted
// certificate turns TOFU off.
//
// Every refusal is a *[VerifyError] whose Kind is one of the Err values of
// this package, so callers can branch with errors.Is and people can read the
// whole message.
//
// # TLS
//
// [ServerConfig] and [ClientConfig] build TLS 1.3 configurations in which both
// sides present certificates and [Trust] does all the verification, in
// VerifyConnection. Standard verification is switched off on purpose: it
// matches DNS names and IP addresses, and cannot express a node ID carried as
// a URI SAN, nor trust-on-first-use.
package identity
