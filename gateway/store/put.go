package store

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"time"

	"github.com/mulegate/mulegate/bundle"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Put stores bundle b, whose b.Payload.Length payload bytes are read from
// payload, and returns once it is durable: only then may the caller
// acknowledge it. from says where it came from ("peer:dtn://m/", "api",
// "adapter:nats", …). A duplicate is refused with ErrDuplicate and a full
// store with ErrFull before any payload byte is read. If payload ends
// early, nothing is kept and the error is ErrIncomplete; use BeginPut to
// keep a partial reception.
func (s *Store) Put(ctx context.Context, b *bundle.Bundle, from string, payload io.Reader) error {
	w, err := s.BeginPut(ctx, b, from)
	if err != nil {
		return err
	}
	defer w.Abort(false)
	bufp := s.buffers.Get().(*[]byte)
	defer s.buffers.Put(bufp)
	n, err := io.CopyBuffer(w, &ctxReader{ctx: ctx, r: io.LimitReader(payload, int64(w.size))}, *bufp)
	if err != nil {
		var se *Error
		if errors.As(err, &se) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return newErr("put", ErrIncomplete, w.idStr, fmt.Sprintf("reading the payload failed after %d of %d bytes", n, w.size), err)
	}
	if uint64(n) < w.size {
		return newErr("put", ErrIncomplete, w.idStr, fmt.Sprintf("payload ended after %d of %d bytes", n, w.size), bundle.ErrPayloadLength)
	}
	return w.Commit(ctx)
}

// copyBufferSize is the size of the buffers Put and Scrub copy payloads
// through.
const copyBufferSize = 256 << 10

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Writer receives one bundle's payload. Write the payload bytes, then
// Commit to store the bundle, or Abort. Like sql.Tx, a Writer is meant to
// be used with a deferred Abort(false), which does nothing after a
// successful Commit. A Writer is not safe for concurrent use.
type Writer struct {
	s      *Store
	idStr  string
	key    idKey
	seq    uint64
	header []byte
	encLen uint64
	dst    string
	from   string
	recv   time.Time
	exp    time.Time
	size   uint64 // declared payload length
	start  uint64 // payload bytes held before this writer (Resume)
	off    uint64 // payload bytes held now
	crc    uint32 // CRC-32C of payload[:off]

	buf  []byte   // inline payload
	f    *os.File // file payload
	path string   // where f is: in tmp/ for a new bundle, in data/ when resumed

	inline   bool // payload kept in the index
	resumed  bool
	prevCost int64 // quota cost of the partial before Resume
	reserved int64 // reserved bytes still to settle
	resCount int64 // reserved bundle count still to settle
	done     bool
	failed   error // a write failed; only Abort remains
}

// BeginPut starts receiving bundle b (see Put). It checks for duplicates
// and reserves room for the declared payload length before any payload
// byte is read. If the store holds a partial reception of the same bundle,
// that partial is discarded: the new reception starts from byte 0 (use
// Resume to continue a partial instead).
func (s *Store) BeginPut(ctx context.Context, b *bundle.Bundle, from string) (*Writer, error) {
	const op = "put"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	header, err := b.MarshalHeader()
	if err != nil {
		return nil, newErr(op, ErrInvalid, "", "encoding the header", err)
	}
	encLen, err := b.EncodedLen()
	if err != nil {
		return nil, newErr(op, ErrInvalid, "", "encoding the header", err)
	}
	idStr := b.ID().String()
	size := b.Payload.Length
	if size > math.MaxInt64 {
		return nil, newErr(op, ErrInvalid, idStr, fmt.Sprintf("payload length %d", size), nil)
	}
	now := s.now()
	exp := b.ExpiresAt(now)
	if !exp.After(now) {
		return nil, newErr(op, ErrExpired, idStr, "expired at "+exp.UTC().Format(time.RFC3339Nano), nil)
	}
	k := keyOf(idStr)
	if err := s.claim(op, idStr, k, exp); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.unclaim(k)
		}
	}()
	var e idEntry
	var found bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		e, found = takenTx(tx, k, now)
		return nil
	}); err != nil {
		return nil, ioErr(op, idStr, err)
	}
	if found {
		switch e.kind {
		case kindBundle:
			return nil, newErr(op, ErrDuplicate, idStr, "", nil)
		case kindTomb:
			return nil, newErr(op, ErrDuplicate, idStr, "deleted; remembered until "+e.exp.UTC().Format(time.RFC3339), nil)
		case kindPartial:
			if err := s.dropPartial(op, idStr, k, e.seq); err != nil {
				return nil, err
			}
		}
	}
	cost := int64(len(header)) + int64(size)
	if err := s.reserve(op, idStr, cost, 1); err != nil {
		return nil, err
	}
	w := &Writer{
		s: s, idStr: idStr, key: k, header: header, encLen: encLen,
		dst: b.Primary.Destination.String(), from: from, recv: now, exp: exp,
		size: size, reserved: cost, resCount: 1,
	}
	w.seq = s.seq.Add(1)
	if int64(size) <= s.inlineMax {
		w.inline = true
		w.buf = make([]byte, 0, size)
	} else {
		w.path = s.tmpPath(w.seq)
		f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			s.settle(w)
			return nil, ioErr(op, idStr, err)
		}
		w.f = f
	}
	ok = true
	return w, nil
}

// dropPartial discards the partial reception seq of key k.
func (s *Store) dropPartial(op, idStr string, k idKey, seq uint64) error {
	var d delta
	var inline bool
	err := s.update(func(tx *bolt.Tx) error {
		d = delta{}
		e, r, ok := lookupTx(tx, k)
		if !ok || e.kind != kindPartial || e.seq != seq {
			return nil // already gone
		}
		inline = r.inline
		return removeRecord(tx, seq, r, false, &d)
	}, func() { s.apply(&d) })
	if err != nil {
		return ioErr(op, idStr, err)
	}
	if !inline {
		os.Remove(s.dataPath(seq))
	}
	s.log.Info("partial reception discarded for a new reception", zap.String("id", idStr))
	return nil
}

// settle gives back what w reserved and releases its ID.
func (s *Store) settle(w *Writer) {
	s.mu.Lock()
	s.settleLocked(w)
	s.mu.Unlock()
}

// settleInto turns w's reservation into what its commit stored (d), in
// one step: released first and applied after, in two, a concurrent Put
// could reserve the room in between and take the store past its quota.
func (s *Store) settleInto(w *Writer, d *delta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(w)
	s.applyLocked(d)
}

func (s *Store) settleLocked(w *Writer) {
	s.u.reservedB -= w.reserved
	s.u.reserved -= w.resCount
	w.reserved, w.resCount = 0, 0
	delete(s.receiving, w.key)
}

// Resume continues a partial reception: the Writer is positioned at the
// number of payload bytes the partial holds (Offset), and takes the rest,
// for example from a fragment carrying the missing range [Offset, length).
// Commit stores the complete bundle; Abort(true) keeps the longer partial;
// Abort(false) leaves the partial as it was.
func (s *Store) Resume(ctx context.Context, id bundle.ID) (*Writer, error) {
	const op = "resume"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	if err := s.claim(op, idStr, k, time.Time{}); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.unclaim(k)
		}
	}()
	var (
		e     idEntry
		r     *record
		found bool
		buf   []byte
	)
	if err := s.db.View(func(tx *bolt.Tx) error {
		e, r, found = lookupTx(tx, k)
		if found && e.kind == kindPartial && r.inline {
			buf = make([]byte, 0, r.payloadLen)
			buf = append(buf, tx.Bucket(bktInline).Get(seqKey(e.seq))...)
		}
		return nil
	}); err != nil {
		return nil, ioErr(op, idStr, err)
	}
	if !found || e.kind != kindPartial {
		return nil, newErr(op, ErrNotFound, idStr, "no partial reception", nil)
	}
	if r.inline && uint64(len(buf)) != r.held {
		return nil, newErr(op, ErrCorrupt, idStr, fmt.Sprintf("inline partial holds %d bytes, index says %d", len(buf), r.held), nil)
	}
	s.mu.Lock()
	s.receiving[k] = r.expires
	s.mu.Unlock()
	need := int64(r.payloadLen - r.held)
	if err := s.reserve(op, idStr, need, 0); err != nil {
		return nil, err
	}
	w := &Writer{
		s: s, idStr: idStr, key: k, seq: e.seq, header: r.header, encLen: r.encodedLen,
		dst: r.dst, from: r.from, recv: r.received, exp: r.expires,
		size: r.payloadLen, start: r.held, off: r.held, crc: r.crc,
		buf: buf, inline: r.inline, resumed: true, prevCost: r.cost(), reserved: need,
	}
	if !r.inline {
		w.path = s.dataPath(e.seq)
		f, err := os.OpenFile(w.path, os.O_WRONLY, 0)
		if err == nil {
			if err = f.Truncate(int64(r.held)); err == nil {
				_, err = f.Seek(int64(r.held), io.SeekStart)
			}
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			s.settle(w)
			return nil, ioErr(op, idStr, err)
		}
		w.f = f
	}
	ok = true
	return w, nil
}

// ID is the bundle ID being received, in its text form.
func (w *Writer) ID() string { return w.idStr }

// Offset is the number of payload bytes held so far.
func (w *Writer) Offset() uint64 { return w.off }

// Len is the declared payload length.
func (w *Writer) Len() uint64 { return w.size }

// Write takes the next payload bytes. It refuses bytes beyond the declared
// length with ErrTooLong.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, newErr("write", ErrClosed, w.idStr, "writer finished", nil)
	}
	if w.failed != nil {
		return 0, w.failed
	}
	if uint64(len(p)) > w.size-w.off {
		return 0, newErr("write", ErrTooLong, w.idStr,
			fmt.Sprintf("%d bytes declared, %d written, %d more offered", w.size, w.off, len(p)), bundle.ErrPayloadLength)
	}
	n := len(p)
	var err error
	if w.inline {
		w.buf = append(w.buf, p...)
	} else {
		n, err = w.f.Write(p)
	}
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.off += uint64(n)
	if err != nil {
		w.failed = ioErr("write", w.idStr, err)
		return n, w.failed
	}
	return n, nil
}

// record is the index record for what w holds, as kind.
func (w *Writer) record(kind byte) *record {
	return &record{
		kind: kind, inline: w.inline,
		received: w.recv, expires: w.exp, encodedLen: w.encLen,
		payloadLen: w.size, held: w.off, crc: w.crc,
		from: w.from, id: w.idStr, dst: w.dst, header: w.header,
	}
}

// makeDurable fsyncs the payload file and, for a new bundle, renames it
// from tmp/ into data/ and fsyncs data/.
func (w *Writer) makeDurable() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	if err != nil {
		return err
	}
	if w.resumed {
		return nil
	}
	dst := w.s.dataPath(w.seq)
	if err := os.Rename(w.path, dst); err != nil {
		return err
	}
	w.path = dst
	return syncDir(w.s.dataDir)
}

// discard throws away what this writer added and gives back its
// reservation. A new bundle's file is removed; a resumed partial's file is
// cut back to what the partial held.
func (w *Writer) discard() {
	if w.resumed {
		if w.f != nil {
			w.f.Truncate(int64(w.start))
		} else if w.path != "" {
			os.Truncate(w.path, int64(w.start))
		}
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if !w.resumed && w.path != "" {
		os.Remove(w.path)
	}
	w.s.settle(w)
}

// Commit stores the bundle and returns once it is durable: the caller may
// then acknowledge it. If fewer bytes than declared were written, Commit
// returns ErrIncomplete and the Writer stays open (write more, or Abort).
// Otherwise the Writer is finished, whatever the outcome. Once the commit
// has started it runs to its end even if ctx is cancelled, so that a
// bundle is never half stored.
func (w *Writer) Commit(ctx context.Context) error {
	const op = "commit"
	if w.done {
		return newErr(op, ErrClosed, w.idStr, "writer finished", nil)
	}
	if w.failed != nil {
		w.done = true
		w.discard()
		return w.failed
	}
	if w.off != w.size {
		return newErr(op, ErrIncomplete, w.idStr, fmt.Sprintf("%d of %d payload bytes written", w.off, w.size), nil)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s := w.s
	w.done = true
	if err := s.enter(op); err != nil {
		w.discard()
		return err
	}
	defer s.leave()
	if err := w.makeDurable(); err != nil {
		w.discard()
		return ioErr(op, w.idStr, err)
	}
	r := w.record(kindBundle)
	var d delta
	err := s.update(func(tx *bolt.Tx) error {
		d = delta{}
		if err := w.checkTx(tx, op); err != nil {
			return err
		}
		if err := w.writeTx(tx, r); err != nil {
			return err
		}
		if w.resumed {
			d.u.partials--
			d.u.partialBytes -= w.prevCost
		}
		d.u.bundles++
		d.u.bundleBytes += r.cost()
		return nil
	}, func() { s.settleInto(w, &d) })
	if err != nil {
		w.discard()
		return err
	}
	return nil
}

// checkTx refuses, inside the commit, what changed since the writer
// began: a tombstone or copy that appeared for a new bundle, or a partial
// that was deleted or expired while being resumed.
func (w *Writer) checkTx(tx *bolt.Tx, op string) error {
	now := w.s.now()
	if w.resumed {
		if e, _, ok := lookupTx(tx, w.key); !ok || e.kind != kindPartial || e.seq != w.seq {
			return soft(newErr(op, ErrNotFound, w.idStr, "the partial reception was deleted while being resumed", nil))
		}
		return nil
	}
	if e, taken := takenTx(tx, w.key, now); taken {
		detail := ""
		if e.kind == kindTomb {
			detail = "deleted while being received"
		}
		return soft(newErr(op, ErrDuplicate, w.idStr, detail, nil))
	}
	return nil
}

func (w *Writer) writeTx(tx *bolt.Tx, r *record) error {
	if r.inline {
		if err := tx.Bucket(bktInline).Put(seqKey(w.seq), w.buf[:w.off]); err != nil {
			return err
		}
	}
	return putRecord(tx, w.seq, r)
}

// Abort ends the reception without storing the bundle. With keepPartial,
// the payload bytes received so far are made durable and kept as a
// partial reception (see Partials, Resume, PartialToFragment); a
// reception that got no bytes leaves nothing. Abort takes no context on
// purpose: it is what runs when a transfer's context has ended, and
// keeping what arrived must not be cancelled with it. After Commit or an
// earlier Abort, Abort does nothing.
func (w *Writer) Abort(keepPartial bool) error {
	const op = "abort"
	if w.done {
		return nil
	}
	w.done = true
	if !keepPartial || w.failed != nil || w.off == w.start {
		w.discard()
		return nil
	}
	s := w.s
	if err := s.enter(op); err != nil {
		w.discard()
		return err
	}
	defer s.leave()
	if err := w.makeDurable(); err != nil {
		w.discard()
		return ioErr(op, w.idStr, err)
	}
	r := w.record(kindPartial)
	var d delta
	err := s.update(func(tx *bolt.Tx) error {
		d = delta{}
		if err := w.checkTx(tx, op); err != nil {
			return err
		}
		if err := w.writeTx(tx, r); err != nil {
			return err
		}
		if w.resumed {
			d.u.partialBytes += r.cost() - w.prevCost
		} else {
			d.u.partials++
			d.u.partialBytes += r.cost()
		}
		return nil
	}, func() { s.settleInto(w, &d) })
	if err != nil {
		w.discard()
		return err
	}
	return nil
}

// PartialToFragment turns the partial reception of id, which holds the
// first n payload bytes, into the stored bundle b.Fragment(0, n) with
// exactly those bytes (reactive fragmentation). It returns the fragment's
// metadata; the partial is gone. It fails with ErrIncomplete if the
// partial holds no bytes, with bundle.ErrNotFragmentable (wrapped) if the
// bundle must not be fragmented, and with ErrDuplicate if the fragment is
// already known.
func (s *Store) PartialToFragment(ctx context.Context, id bundle.ID) (Meta, error) {
	const op = "partial to fragment"
	if err := ctx.Err(); err != nil {
		return Meta{}, err
	}
	if err := s.enter(op); err != nil {
		return Meta{}, err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	if err := s.claim(op, idStr, k, time.Time{}); err != nil {
		return Meta{}, err
	}
	defer s.unclaim(k)
	var (
		e     idEntry
		r     *record
		found bool
	)
	if err := s.db.View(func(tx *bolt.Tx) error {
		e, r, found = lookupTx(tx, k)
		return nil
	}); err != nil {
		return Meta{}, ioErr(op, idStr, err)
	}
	if !found || e.kind != kindPartial {
		return Meta{}, newErr(op, ErrNotFound, idStr, "no partial reception", nil)
	}
	if r.held == 0 {
		return Meta{}, newErr(op, ErrIncomplete, idStr, "the partial holds no payload bytes", nil)
	}
	b, err := bundle.UnmarshalHeader(r.header, headerLimits(r.header))
	if err != nil {
		return Meta{}, newErr(op, ErrCorrupt, idStr, "stored header does not decode", err)
	}
	fb, err := b.Fragment(0, r.held)
	if err != nil {
		return Meta{}, newErr(op, ErrInvalid, idStr, "cannot fragment", err)
	}
	header, err := fb.MarshalHeader()
	if err != nil {
		return Meta{}, newErr(op, ErrInvalid, idStr, "encoding the fragment's header", err)
	}
	encLen, err := fb.EncodedLen()
	if err != nil {
		return Meta{}, newErr(op, ErrInvalid, idStr, "encoding the fragment's header", err)
	}
	fid := fb.ID().String()
	fk := keyOf(fid)
	if fk != k {
		if err := s.claim(op, fid, fk, r.expires); err != nil {
			return Meta{}, err
		}
		defer s.unclaim(fk)
	}
	if !r.inline {
		// The file may hold bytes past n from an interrupted Resume.
		if err := truncateSync(s.dataPath(e.seq), int64(r.held)); err != nil {
			return Meta{}, ioErr(op, idStr, err)
		}
	}
	nr := *r
	nr.kind = kindBundle
	nr.header = header
	nr.encodedLen = encLen
	nr.payloadLen = r.held
	nr.id = fid
	var d delta
	err = s.update(func(tx *bolt.Tx) error {
		d = delta{}
		if e2, _, ok := lookupTx(tx, k); !ok || e2.kind != kindPartial || e2.seq != e.seq {
			return soft(newErr(op, ErrNotFound, idStr, "the partial reception was deleted meanwhile", nil))
		}
		if fk != k {
			if _, taken := takenTx(tx, fk, s.now()); taken {
				return soft(newErr(op, ErrDuplicate, fid, "the fragment is already known", nil))
			}
			if err := tx.Bucket(bktIDs).Delete(k[:]); err != nil {
				return err
			}
		}
		if err := putRecord(tx, e.seq, &nr); err != nil {
			return err
		}
		d.u.partials--
		d.u.partialBytes -= r.cost()
		d.u.bundles++
		d.u.bundleBytes += nr.cost()
		return nil
	}, func() { s.apply(&d) })
	if err != nil {
		return Meta{}, err
	}
	return metaOf(e.seq, &nr)
}

// truncateSync cuts the file at path to n bytes, if longer, durably.
func truncateSync(path string, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == n {
		return nil
	}
	if fi.Size() < n {
		return fmt.Errorf("%s holds %d bytes, fewer than %d", path, fi.Size(), n)
	}
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}

// SetBundle replaces the metadata the Writer will commit with b, which must
// be the same bundle (same ID, same payload length): for an extension block
// that can only be computed once the payload has streamed past, such as an
// integrity block whose signature covers the payload. A larger header
// reserves the extra room first, and fails with ErrFull when there is none.
func (w *Writer) SetBundle(b *bundle.Bundle) error {
	const op = "put"
	if w.done || w.failed != nil {
		return newErr(op, ErrClosed, w.idStr, "the writer is finished", nil)
	}
	if w.resumed {
		return newErr(op, ErrInvalid, w.idStr, "a resumed reception keeps its header", nil)
	}
	if b.ID().String() != w.idStr || b.Payload.Length != w.size {
		return newErr(op, ErrInvalid, w.idStr, "SetBundle needs the same bundle: same ID and payload length", nil)
	}
	header, err := b.MarshalHeader()
	if err != nil {
		return newErr(op, ErrInvalid, w.idStr, "encoding the header", err)
	}
	encLen, err := b.EncodedLen()
	if err != nil {
		return newErr(op, ErrInvalid, w.idStr, "encoding the header", err)
	}
	if extra := int64(len(header)) - int64(len(w.header)); extra > 0 {
		if err := w.s.reserve(op, w.idStr, extra, 0); err != nil {
			return err
		}
		w.reserved += extra
	}
	w.header, w.encLen = header, encLen
	return nil
}
