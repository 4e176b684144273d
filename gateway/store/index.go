package store

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/mulegate/mulegate/bundle"
	bolt "go.etcd.io/bbolt"
)

// Meta is what the store knows about a bundle, without its payload.
type Meta struct {
	ID bundle.ID
	// Bundle is the bundle's metadata as received; Bundle.Payload.Length
	// is the payload's length.
	Bundle     *bundle.Bundle
	From       string    // where it came from: "peer:dtn://m/", "api", "adapter:nats", …
	ReceivedAt time.Time // when this node received it
	ExpiresAt  time.Time // when its lifetime ends (bundle.Bundle.ExpiresAt)
	EncodedLen uint64    // its size as an encoded bundle (bundle.Bundle.EncodedLen)
	Checksum   uint32    // CRC-32C of the payload
	Arrival    uint64    // arrival order in this store; a cursor for paged queries
}

// headerLimits bound decoding a stored header: it was accepted once, so
// only its own length limits it.
func headerLimits(h []byte) bundle.Limits {
	return bundle.Limits{MaxBlocks: len(h) + 1, MaxBlockLen: uint64(len(h)) + 1}
}

func metaOf(seq uint64, r *record) (Meta, error) {
	b, err := bundle.UnmarshalHeader(r.header, headerLimits(r.header))
	if err != nil {
		return Meta{}, newErr("decode", ErrCorrupt, r.id, "stored header does not decode", err)
	}
	return Meta{
		ID:         b.ID(),
		Bundle:     b,
		From:       r.from,
		ReceivedAt: r.received,
		ExpiresAt:  r.expires,
		EncodedLen: r.encodedLen,
		Checksum:   r.crc,
		Arrival:    seq,
	}, nil
}

// nodeOf is the node ID of a destination EID in text form.
func nodeOf(dst string) string {
	e, err := bundle.ParseEID(dst)
	if err != nil {
		return dst
	}
	return e.NodeID().String()
}

// lookupTx finds what the index holds for k. A bundle or partial entry
// whose record is gone (a damaged index) counts as nothing.
func lookupTx(tx *bolt.Tx, k idKey) (idEntry, *record, bool) {
	v := tx.Bucket(bktIDs).Get(k[:])
	if v == nil {
		return idEntry{}, nil, false
	}
	e, err := decodeIDEntry(v)
	if err != nil {
		return idEntry{}, nil, false
	}
	if e.kind == kindTomb {
		return e, nil, true
	}
	rv := tx.Bucket(bktRecords).Get(seqKey(e.seq))
	if rv == nil {
		return idEntry{}, nil, false
	}
	r, err := decodeRecord(rv)
	if err != nil || r.kind != e.kind {
		return idEntry{}, nil, false
	}
	return e, r, true
}

// takenTx reports whether a new bundle with key k must be refused as a
// duplicate at now: a bundle, a partial, or a tombstone still in force.
func takenTx(tx *bolt.Tx, k idKey, now time.Time) (idEntry, bool) {
	e, _, ok := lookupTx(tx, k)
	if !ok || (e.kind == kindTomb && !e.exp.After(now)) {
		return e, false
	}
	return e, true
}

// putRecord writes a record and the index entries of its kind. A partial
// is in ids, partials and expiry; a complete bundle also in bydst and
// bynode.
func putRecord(tx *bolt.Tx, seq uint64, r *record) error {
	sk := seqKey(seq)
	k := keyOf(r.id)
	if err := tx.Bucket(bktRecords).Put(sk, encodeRecord(r)); err != nil {
		return err
	}
	if err := tx.Bucket(bktIDs).Put(k[:], idEntry{kind: r.kind, seq: seq}.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bktExpiry).Put(expiryKey(r.expires, seq), expiryValue(r.kind, k)); err != nil {
		return err
	}
	if err := bumpSeq(tx, seq); err != nil {
		return err
	}
	if r.kind == kindPartial {
		return tx.Bucket(bktPartials).Put(sk, nil)
	}
	if err := tx.Bucket(bktPartials).Delete(sk); err != nil {
		return err
	}
	if err := tx.Bucket(bktByDst).Put(prefixKey(r.dst, seq), nil); err != nil {
		return err
	}
	return tx.Bucket(bktByNode).Put(prefixKey(nodeOf(r.dst), seq), nil)
}

// removeRecord deletes seq's record, its inline payload, its progress
// records and every index entry that points at it, and counts what went
// in d. With tomb, the ID stays known as a tombstone until the record's
// expiry. The payload file, if any, is the caller's to remove after the
// commit.
func removeRecord(tx *bolt.Tx, seq uint64, r *record, tomb bool, d *delta) error {
	sk := seqKey(seq)
	k := keyOf(r.id)
	for _, del := range []struct {
		bkt []byte
		key []byte
	}{
		{bktRecords, sk},
		{bktInline, sk},
		{bktPartials, sk},
		{bktByDst, prefixKey(r.dst, seq)},
		{bktByNode, prefixKey(nodeOf(r.dst), seq)},
	} {
		if err := tx.Bucket(del.bkt).Delete(del.key); err != nil {
			return err
		}
	}
	if r.kind == kindBundle {
		d.u.bundles--
		d.u.bundleBytes -= r.cost()
	} else {
		d.u.partials--
		d.u.partialBytes -= r.cost()
	}
	if err := removeProgress(tx, seq, r.cost(), d); err != nil {
		return err
	}
	ids, exp := tx.Bucket(bktIDs), tx.Bucket(bktExpiry)
	ek := expiryKey(r.expires, seq)
	if tomb {
		d.u.tombstones++
		if err := ids.Put(k[:], idEntry{kind: kindTomb, seq: seq, exp: r.expires}.encode()); err != nil {
			return err
		}
		return exp.Put(ek, expiryValue(kindTomb, k))
	}
	if e, err := decodeIDEntry(ids.Get(k[:])); err == nil && e.seq == seq {
		if err := ids.Delete(k[:]); err != nil {
			return err
		}
	}
	return exp.Delete(ek)
}

// removeProgress deletes every progress record of seq, whose bundle's cost
// is cost.
func removeProgress(tx *bolt.Tx, seq uint64, cost int64, d *delta) error {
	sk := seqKey(seq)
	ps, pr := tx.Bucket(bktProgSeq), tx.Bucket(bktProgress)
	var keys [][]byte
	c := ps.Cursor()
	for k, _ := c.Seek(sk); k != nil && bytes.HasPrefix(k, sk); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		dest := string(k[8:])
		pk := prefixKey(dest, seq)
		if v := pr.Get(pk); v != nil {
			if p, err := decodeProgress(v); err == nil {
				d.move(dest, p.state, 0, cost)
			}
			if err := pr.Delete(pk); err != nil {
				return err
			}
		}
		if err := ps.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// recordAt reads the record with sequence number seq.
func recordAt(tx *bolt.Tx, seq uint64) (*record, bool) {
	v := tx.Bucket(bktRecords).Get(seqKey(seq))
	if v == nil {
		return nil, false
	}
	r, err := decodeRecord(v)
	if err != nil {
		return nil, false
	}
	return r, true
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
