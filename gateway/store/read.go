package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
	bolt "go.etcd.io/bbolt"
)

// Get returns a bundle's metadata. A partial reception is not a bundle:
// Get reports ErrNotFound for it (see Lookup and Partials).
func (s *Store) Get(ctx context.Context, id bundle.ID) (Meta, error) {
	const op = "get"
	if err := ctx.Err(); err != nil {
		return Meta{}, err
	}
	if err := s.enter(op); err != nil {
		return Meta{}, err
	}
	defer s.leave()
	idStr := id.String()
	var (
		e  idEntry
		r  *record
		ok bool
	)
	if err := s.db.View(func(tx *bolt.Tx) error {
		e, r, ok = lookupTx(tx, keyOf(idStr))
		return nil
	}); err != nil {
		return Meta{}, ioErr(op, idStr, err)
	}
	if !ok || e.kind != kindBundle {
		return Meta{}, newErr(op, ErrNotFound, idStr, "", nil)
	}
	return metaOf(e.seq, r)
}

// Status is what the store knows about a bundle ID.
type Status struct {
	Held      bool      // a complete bundle is stored
	Partial   bool      // a partial reception is stored
	Received  uint64    // payload bytes held (complete or partial)
	Length    uint64    // declared payload length (held or partial)
	Deleted   bool      // deleted: a tombstone refuses copies until Until
	Until     time.Time // when the tombstone ends
	Receiving bool      // a reception or resumption is in progress
}

// Lookup tells whether the store holds id, partly holds it, remembers it
// as deleted, or is receiving it. It never reports ErrNotFound.
func (s *Store) Lookup(ctx context.Context, id bundle.ID) (Status, error) {
	const op = "lookup"
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	if err := s.enter(op); err != nil {
		return Status{}, err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	var st Status
	now := s.now()
	if err := s.db.View(func(tx *bolt.Tx) error {
		e, r, ok := lookupTx(tx, k)
		switch {
		case !ok:
		case e.kind == kindTomb:
			st.Deleted = e.exp.After(now)
			if st.Deleted {
				st.Until = e.exp
			}
		default:
			st.Held = e.kind == kindBundle
			st.Partial = e.kind == kindPartial
			st.Received, st.Length = r.held, r.payloadLen
		}
		return nil
	}); err != nil {
		return Status{}, ioErr(op, idStr, err)
	}
	s.mu.Lock()
	_, st.Receiving = s.receiving[k]
	s.mu.Unlock()
	return st, nil
}

// OpenPayload opens a bundle's payload for reading. The Payload is an
// io.Reader, io.ReaderAt and io.Seeker; senders cut fragments from it
// with io.NewSectionReader. Reading the payload through from start to end
// (by Read, or by ReadAt calls that follow on from each other) verifies
// its checksum: on a mismatch the read that reaches the end returns
// ErrCorrupt instead of io.EOF, and the store quarantines the payload.
func (s *Store) OpenPayload(ctx context.Context, id bundle.ID) (*Payload, error) {
	const op = "open payload"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	idStr := id.String()
	var (
		p   *Payload
		err error
	)
	if verr := s.db.View(func(tx *bolt.Tx) error {
		e, r, ok := lookupTx(tx, keyOf(idStr))
		if !ok || e.kind != kindBundle {
			err = newErr(op, ErrNotFound, idStr, "", nil)
			return nil
		}
		p, err = s.openPayloadTx(tx, e.seq, r)
		return nil
	}); verr != nil {
		return nil, ioErr(op, idStr, verr)
	}
	if p != nil && p.bad != nil {
		s.quarantineIn(p.seq, p.rec, p.data, p.bad.Detail)
		return nil, p.bad
	}
	return p, err
}

// openPayloadTx opens the payload of record r at seq. The file is opened
// inside the read transaction that found the record, so it cannot be a
// file that a later Delete is about to remove (if it was already removed,
// that is ErrNotFound). An inline payload of the wrong length comes back
// with bad set: the caller quarantines it once outside the transaction.
func (s *Store) openPayloadTx(tx *bolt.Tx, seq uint64, r *record) (*Payload, error) {
	p := &Payload{s: s, seq: seq, rec: r, size: int64(r.payloadLen)}
	if r.inline {
		p.inline = true
		p.data = bytes.Clone(tx.Bucket(bktInline).Get(seqKey(seq)))
		if int64(len(p.data)) != p.size {
			p.bad = newErr("open payload", ErrCorrupt, r.id, fmt.Sprintf("inline payload holds %d bytes, index says %d", len(p.data), p.size), nil)
		}
		return p, nil
	}
	f, err := os.Open(s.dataPath(seq))
	if errors.Is(err, os.ErrNotExist) {
		return nil, newErr("open payload", ErrNotFound, r.id, "deleted meanwhile", nil)
	}
	if err != nil {
		return nil, ioErr("open payload", r.id, err)
	}
	p.f = f
	return p, nil
}

// Payload reads a stored payload. ReadAt is safe for concurrent use; Read
// and Seek share one position and are not.
type Payload struct {
	s      *Store
	seq    uint64
	rec    *record
	size   int64
	inline bool
	data   []byte   // inline payload
	f      *os.File // file payload
	pos    int64    // for Read and Seek

	mu      sync.Mutex
	next    int64  // payload[:next] has gone through crc
	crc     uint32 // CRC-32C of payload[:next]
	checked bool   // the checksum was compared (bad tells the outcome)
	bad     *Error
}

// Size is the payload's length.
func (p *Payload) Size() int64 { return p.size }

// Checksum is the CRC-32C the payload must have.
func (p *Payload) Checksum() uint32 { return p.rec.crc }

// ReadAt implements io.ReaderAt.
func (p *Payload) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, newErr("read payload", ErrInvalid, p.rec.id, "negative offset", nil)
	}
	if off >= p.size {
		return 0, io.EOF
	}
	want := b
	if rest := p.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	var n int
	var err error
	if p.inline {
		n = copy(want, p.data[off:])
	} else {
		n, err = p.f.ReadAt(want, off)
		if errors.Is(err, io.EOF) {
			err = p.fail(fmt.Sprintf("file ends at %d of %d bytes", off+int64(n), p.size))
		}
	}
	if err != nil {
		return n, err
	}
	if err := p.track(want[:n], off); err != nil {
		return n, err
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader.
func (p *Payload) Read(b []byte) (int, error) {
	if p.pos >= p.size {
		p.mu.Lock()
		bad := p.bad
		p.mu.Unlock()
		if bad != nil {
			return 0, bad
		}
		return 0, io.EOF
	}
	n, err := p.ReadAt(b, p.pos)
	p.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker for Read.
func (p *Payload) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += p.pos
	case io.SeekEnd:
		offset += p.size
	default:
		return 0, newErr("seek payload", ErrInvalid, p.rec.id, "bad whence", nil)
	}
	if offset < 0 {
		return 0, newErr("seek payload", ErrInvalid, p.rec.id, "negative position", nil)
	}
	p.pos = offset
	return offset, nil
}

// Close releases the payload's file.
func (p *Payload) Close() error {
	if p.f != nil {
		return p.f.Close()
	}
	return nil
}

// track feeds bytes read at off into the running checksum when they
// continue from where it stands, and compares it at the end.
func (p *Payload) track(b []byte, off int64) error {
	p.mu.Lock()
	if p.bad != nil {
		defer p.mu.Unlock()
		return p.bad
	}
	end := off + int64(len(b))
	if p.checked || off > p.next || end <= p.next {
		p.mu.Unlock()
		return nil
	}
	p.crc = crc32.Update(p.crc, castagnoli, b[p.next-off:])
	p.next = end
	if p.next < p.size {
		p.mu.Unlock()
		return nil
	}
	p.checked = true
	if p.crc == p.rec.crc {
		p.mu.Unlock()
		return nil
	}
	got := p.crc
	p.mu.Unlock()
	return p.fail(fmt.Sprintf("checksum %08x, index says %08x", got, p.rec.crc))
}

// fail marks the payload corrupt and quarantines it.
func (p *Payload) fail(reason string) error {
	p.mu.Lock()
	if p.bad != nil {
		defer p.mu.Unlock()
		return p.bad
	}
	p.bad = newErr("read payload", ErrCorrupt, p.rec.id, reason, nil)
	p.checked = true
	p.mu.Unlock()
	p.s.quarantine(p.seq, p.rec, p.data, reason)
	return p.bad
}

func clampLimit(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return limit
}

// ByDestination lists complete bundles whose destination is dst, in
// arrival order, starting after the bundle whose Arrival is after (0 for
// the start), at most limit of them (DefaultLimit when limit ≤ 0).
func (s *Store) ByDestination(ctx context.Context, dst bundle.EID, after uint64, limit int) ([]Meta, error) {
	return s.byPrefix(ctx, "by destination", bktByDst, dst.String(), after, limit)
}

// ByNode lists complete bundles destined to any endpoint of node (which
// may be any EID of that node), like ByDestination.
func (s *Store) ByNode(ctx context.Context, node bundle.EID, after uint64, limit int) ([]Meta, error) {
	return s.byPrefix(ctx, "by node", bktByNode, node.NodeID().String(), after, limit)
}

func (s *Store) byPrefix(ctx context.Context, op string, bkt []byte, name string, after uint64, limit int) ([]Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	limit = clampLimit(limit)
	var out []Meta
	var merr error
	prefix := prefixOf(name)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bkt).Cursor()
		for k, _ := c.Seek(prefixKey(name, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			seq := beUint64(k[len(prefix):])
			r, ok := recordAt(tx, seq)
			if !ok || r.kind != kindBundle {
				continue
			}
			m, err := metaOf(seq, r)
			if err != nil {
				merr = err
				continue
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, ioErr(op, "", err)
	}
	if len(out) == 0 && merr != nil {
		return nil, merr
	}
	return out, nil
}

// ByExpiry lists complete bundles that expire at or before until,
// earliest first, at most limit of them (DefaultLimit when limit ≤ 0).
func (s *Store) ByExpiry(ctx context.Context, until time.Time, limit int) ([]Meta, error) {
	const op = "by expiry"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	limit = clampLimit(limit)
	bound := sortableMillis(until)
	var out []Meta
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktExpiry).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != 16 || beUint64(k) > bound {
				break
			}
			_, seq, kind, _, err := decodeExpiry(k, v)
			if err != nil || kind != kindBundle {
				continue
			}
			r, ok := recordAt(tx, seq)
			if !ok || r.kind != kindBundle {
				continue
			}
			if m, err := metaOf(seq, r); err == nil {
				out = append(out, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, ioErr(op, "", err)
	}
	return out, nil
}

// Held is one entry of the summary vector: an ID the store holds, whole or
// in part.
type Held struct {
	ID       bundle.ID
	Partial  bool   // only Received of Length payload bytes are held
	Received uint64 // payload bytes held
	Length   uint64 // declared payload length
	Arrival  uint64
}

// EachHeld calls fn for every bundle and partial reception held, in
// arrival order, without reading payloads or decoding headers. It reads
// the index in batches, so fn runs outside any index transaction and may
// call the store. It stops at the first error fn returns, and returns it.
func (s *Store) EachHeld(ctx context.Context, fn func(Held) error) error {
	const op = "each held"
	const batch = 4096
	var after uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.enter(op); err != nil {
			return err
		}
		var hs []Held
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bktRecords).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil && len(hs) < batch; k, v = c.Next() {
				if len(k) != 8 {
					continue
				}
				r, err := decodeRecord(v)
				if err != nil {
					continue
				}
				id, err := bundle.ParseID(r.id)
				if err != nil {
					continue
				}
				hs = append(hs, Held{ID: id, Partial: r.kind == kindPartial, Received: r.held, Length: r.payloadLen, Arrival: beUint64(k)})
			}
			return nil
		})
		s.leave()
		if err != nil {
			return ioErr(op, "", err)
		}
		for _, h := range hs {
			if err := fn(h); err != nil {
				return err
			}
		}
		if len(hs) < batch {
			return nil
		}
		after = hs[len(hs)-1].Arrival
	}
}

// PartialInfo describes a partial reception.
type PartialInfo struct {
	Meta
	Received uint64 // payload bytes held: the offset Resume continues from
}

// Partials lists the partial receptions held, in arrival order.
func (s *Store) Partials(ctx context.Context) ([]PartialInfo, error) {
	const op = "partials"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	var out []PartialInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktPartials).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 8 {
				continue
			}
			seq := beUint64(k)
			r, ok := recordAt(tx, seq)
			if !ok || r.kind != kindPartial {
				continue
			}
			m, err := metaOf(seq, r)
			if err != nil {
				continue
			}
			out = append(out, PartialInfo{Meta: m, Received: r.held})
		}
		return nil
	})
	if err != nil {
		return nil, ioErr(op, "", err)
	}
	return out, nil
}
