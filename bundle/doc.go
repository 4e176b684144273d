// Package bundle is mulegate's vocabulary: the Bundle Protocol version 7 data
// model of RFC 9171 and its CBOR codec.
//
// A Bundle holds everything about a bundle except its payload bytes: the
// primary block, the extension blocks, and the payload block's header and
// length. Payloads travel beside it as an io.Reader of known length, so a
// 4 GiB bundle is never held in memory. Decode reads every block before the
// payload and hands the payload over as a PayloadReader that checks the
// payload block's CRC when it reaches the end; Encode writes a bundle whose
// payload comes from a reader.
//
// Every rule of RFC 9171 §4 that a bundle can break has its own error value
// (ErrCRCMismatch, ErrDuplicateBlockNumber, …). Each carries the status
// report reason code (RFC 9171 §6.1.1) that a node sends back when it refuses
// the bundle, so the log line, the metric label, the API error and the
// status report all name the same reason: see ReasonOf.
//
// The package imports nothing else from mulegate.
package bundle
