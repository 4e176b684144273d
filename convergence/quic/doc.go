// Package quic is the Qubicle convergence layer: BPv7 bundles over QUIC,
// following draft-ek-dtn-qubicle, with quic-go.
//
// # The protocol
//
//   - ALPN "qbcl": a client that offers another protocol, or none, is
//     refused in the handshake (TLS alert no_application_protocol), before
//     any session. UDP port 4556 (DefaultPort) when an address names none.
//   - Mutual TLS 1.3. Both sides present a certificate carrying their node
//     ID, and the convergence.TLS the layer is built with decides, in the
//     handshake, whether to accept the peer (with policy/identity: a trusted
//     CA, a pinned certificate, or trust-on-first-use). The session's peer is
//     the node ID in the verified certificate; a dialled peer must be the node
//     expected.
//   - Each bundle travels on its own unidirectional stream in the draft's
//     direct form: the bundle's own bytes, ended by FIN. The receiver also
//     accepts the wrapped form (a CBOR byte string holding the bundle), which
//     the draft asks every receiver to take. A bidirectional stream, a stream
//     that starts with neither, an empty one, or data after the bundle close
//     the connection with QBCL_PROTOCOL_ERROR. A BPv6 bundle (first byte
//     0x06) is refused with QBCL_UNSUPPORTED_BUNDLE_VERSION.
//
// # Limits at the edge
//
// A payload header over Options.Limits.MaxPayload, a wrapped length over
// Options.MaxBundleSize, or a stream that grows past MaxBundleSize while it
// is read is stopped (STOP_SENDING) with QBCL_BUNDLE_TOO_LARGE, and never
// reaches the sink whole. How many bundles a peer may have in transfer at
// once is Options.MaxIncomingStreams; each stream's credit goes back to the
// peer only when its bundle has been stored or refused (quic-go's
// RequireStreamCreditRelease), and every stream is read to its end or
// cancelled, so credit never leaks. QUIC flow control (the receive windows
// in Options) bounds the data buffered for a peer.
//
// # Refusals
//
// A receiver refuses a bundle by stopping its stream with a code (see Code):
//
//	QBCL_BUNDLE_TOO_LARGE (0x03)    over the size limit          fatal
//	QBCL_STORAGE_EXHAUSTED (0x04)   any transient refusal        retry later
//	QBCL_TRANSFER_CANCELLED (0x02)  the receiver is shutting down retry later
//	0xF0 + reason (private use)     fatal, with the status report reason
//
// A sender whose stream is stopped while it is still writing gets a
// *convergence.RejectError from Send that reads the code back. Once a bundle
// is written whole, the sender has nothing left to learn a refusal from:
// QUIC offers no acknowledgement of a stream beyond the transport's, and
// quic-go does not expose even that.
//
// # Sending
//
// Send opens a stream, writes the bundle and closes the stream. A small
// bundle (payload up to 16 KiB) is encoded into memory and handed to
// quic-go in one piece; a larger one streams from its reader. Send waits
// for the peer's stream credit and flow control, but not for ever: a peer
// whose store is stuck stops reading while its QUIC stack still answers
// keepalives, and when it has let no byte of a bundle through (nor granted
// a stream for it) for Options.SendStallTimeout (default 60 s), Send
// cancels the stream with QBCL_TRANSFER_CANCELLED and returns an error
// matching convergence.ErrStalled. That is a transient failure, not a
// refusal, and the session stays up. Any byte that gets through restarts
// the clock, so a slow link is not taken for a stalled one; a stall is
// therefore found between one and two timeouts after the last byte went.
//
// # Interrupted transfers
//
// A stream reset by the sender or cut off by the end of the connection makes
// the sink's payload reader return a *convergence.InterruptedError with the
// number of payload bytes that arrived, so the sink can keep them as a
// fragment; Stats.PartialReceptions counts these.
package quic
