// Package store is mulegate's durable bundle store. Every bundle a node
// acknowledges lives here until it expires or is no longer needed.
//
// # Durable before acknowledged
//
// Put (and Writer.Commit) returns only once the bundle is fsynced: its
// payload, its directory entry and its index entry. Only then may the
// caller acknowledge the bundle to whoever handed it over. A kill -9 at
// any moment loses nothing that was acknowledged; what was not yet
// acknowledged either is stored whole or leaves no trace (except a
// partial reception that was explicitly kept with Writer.Abort(true)).
//
// # On disk
//
//	DIR/index.db      bbolt: the index (see record.go for its buckets)
//	DIR/data/SEQ      payload files, named by arrival sequence number
//	DIR/tmp/SEQ       payloads being received; emptied on Open
//	DIR/quarantine/   payloads that failed verification, with .info and
//	                  .header files beside them, for an operator
//
// Small payloads live in the index. A payload of at most
// Options.InlineMax bytes (64 KiB unless configured) is stored inside the
// bbolt file, so storing it costs no file creation and no fsync of its
// own: it rides on the group commit of the index. Larger payloads are
// streamed to tmp/SEQ (never held in memory), fsynced, renamed to
// data/SEQ, and data/ is fsynced, before the index entry that makes the
// bundle visible is committed. (This departs from "payloads are files
// beside the index" in DESIGN.md for small payloads only.)
//
// # Group commit
//
// Every index change (puts, progress updates, deletes, sweeps) is queued
// to one committer goroutine, which runs everything queued meanwhile in
// one bbolt transaction and commits it with one fsync. A lone writer pays
// one commit and is never delayed (bolt.DB.Batch would make it wait up to
// 10 ms); concurrent writers share commits. When a commit would carry
// fewer than half as many operations as the one before, it waits for the
// writers that one released, at most half a commit's time and never more
// than 1 ms, so that many writers do not fall into alternating big and
// tiny commits. A refused operation (say, a duplicate found inside the
// transaction) does not spoil the others; an operation that fails midway
// rolls the group back, and the rest run again without it.
//
// # Duplicates and tombstones
//
// A bundle's ID (bundle.ID) is looked up before any payload byte is read;
// a bundle held, being received, or deleted is refused with ErrDuplicate.
// Delete leaves a tombstone until the bundle's expiry, so a copy a mule
// brings back later is still a duplicate; this is what makes delete on
// delivery safe. Tombstone records one for an ID never held.
//
// # Partial receptions
//
// BeginPut returns a Writer. Abort(true) keeps what arrived (made durable)
// as a partial reception, listed by Partials and EachHeld with its byte
// count. Resume continues it from that offset; PartialToFragment turns it
// into the stored fragment b.Fragment(0, n). Partials count against the
// quota and expire like bundles.
//
// # Progress
//
// For each bundle and each destination ("peer:<node-id>",
// "adapter:<name>", "local:<endpoint>") the store keeps a progress record
// (see State) with attempts, next-attempt time and last error. Due lists
// what is due for a destination in arrival order; Counts gives queue
// depths. On Open, in_flight records go back to pending.
//
// # Quota
//
// Options.MaxBytes and Options.MaxBundles bound what is held and being
// received. Room is reserved from the declared payload length before any
// payload byte is read and given back on abort; a Put that would not fit
// fails at once with ErrFull (bundle.ReasonOf gives
// bundle.ReasonDepletedStorage). Reads, progress updates, Delete and
// Sweep never need room, so a full store drains.
//
// # Recovery and verification
//
// Open removes temporary files and orphaned payload files, keeps partial
// receptions (cut back to their recorded length), checks that every
// payload file has the size its index entry says (quarantining those that
// do not), and turns in_flight progress back to pending. It does not read
// payloads, so it stays fast with many bundles. Checksums (CRC-32C) are
// verified whenever a payload is read through from start to end: the read
// that reaches the end returns ErrCorrupt instead of io.EOF on a mismatch,
// and the payload is quarantined. Scrub verifies every payload; the node
// runs it in the background (Options.ScrubOnOpen, or on a schedule).
//
// # Metrics
//
// Stats is the hook for metrics; it reads counters kept in memory (rebuilt
// on Open), never the index. Bytes are what the quota counts: a bundle's
// encoded header plus the payload bytes held.
//
//   - by kind: Bundles and BundleBytes, Partials and PartialBytes,
//     Receiving and ReservedB (receptions in progress), Tombstones;
//   - the quota: UsedBundles and UsedBytes against MaxBundles and MaxBytes;
//   - progress by state (pending, in_flight, done, failed): Destinations
//     and DestinationBytes for each destination, Progress and
//     ProgressBytes summed over all of them;
//   - group commit: Commits and CommittedOps; and Quarantined.
//
// # Errors
//
// Every error is an *Error with a Kind (ErrDuplicate, ErrFull, …) for
// errors.Is, and status report reasons for bundle.ReasonOf where one
// applies (ErrFull → depleted storage, ErrExpired → lifetime expired).
// The one exception is a context that ended, whose error (ctx.Err()) is
// returned as it is.
package store
