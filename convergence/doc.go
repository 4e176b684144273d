// Package convergence is what the node sees of a link to its peers: a
// convergence layer (RFC 9171 §7) that carries bundles between two nodes
// over some transport. Implementations live in sub-packages: quic
// (draft-ek-dtn-qubicle), and later tcpcl (RFC 9174) and mtcp.
//
// The vocabulary is small:
//
//   - A Layer listens and dials. Every session it makes, accepted or dialled,
//     is announced to the node through the Events callback it was built with:
//     SessionUp when it starts, SessionDown when it has ended.
//   - A Session is one authenticated link to one peer node. Its Peer is the
//     node ID the transport authenticated (for QUIC and TCPCL, the node ID in
//     the peer's verified certificate), never a value the peer merely claimed.
//     Send transmits one bundle, streaming its payload from a reader.
//   - A Sink is implemented by the node (its store). The layer calls
//     Sink.Receive once for each incoming bundle whose header decoded and passed
//     the layer's limits, and streams the payload into it.
//
// # What success means
//
// Send returning nil means the bundle was transmitted: every byte of it was
// handed to the transport, which delivers it reliably unless the session
// fails first. It does not mean the peer stored it. mulegate counts a bundle as
// done for a peer only when the peer's summary vector later reports holding
// it, so a session that fails just after a successful Send costs a resend, not
// a bundle.
//
// Sink.Receive returning nil means the opposite end of the contract: the
// bundle is durably stored (DESIGN.md rule 1). A layer never reports
// a bundle to anyone as received before its sink said so.
//
// # Refusals
//
// A sink refuses a bundle by returning an error. The layer tells the sending
// peer why, as far as its protocol can (see each implementation for the codes),
// and the peer's Send then returns a *RejectError carrying the status report
// reason (RFC 9171 §6.1.1) and whether the refusal is transient (store full,
// rate limit: try again later) or fatal (too big, expired, forbidden, bad
// signature: do not send this bundle to this peer again). Classify reads an
// error the same way a layer does.
//
// A peer that simply stops taking data (its store is stuck, but its
// transport still answers) refuses nothing. A layer that bounds how long
// Send waits for it gives up with an error matching ErrStalled: transient,
// like a full store, but a fault of the peer rather than of the bundle.
//
// # Interrupted transfers
//
// When a transfer breaks off (the sender reset it, the session died), the
// sink's payload reader returns an error that matches ErrInterrupted and is an
// *InterruptedError saying how many payload bytes arrived. The sink keeps them
// (the store's partial support) as the fragment b.Fragment(0, Received), and
// returns the error. The sending node can later send only the rest, as the
// fragment b.Fragment(Received, Length-Received) with its payload read from
// io.NewSectionReader; a layer carries a fragment like any other bundle.
package convergence
