package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// recover brings the store to a consistent state on open. The index is
// always consistent by itself (every change is one bbolt transaction);
// what a crash can leave behind is files:
//
//   - anything in tmp/: receptions that never committed → removed;
//   - a file in data/ that no record names: a crash between the rename
//     and the index commit, or between a delete's commit and the file's
//     removal → removed;
//   - a partial's file longer than the partial: a crash while resuming →
//     cut back to the recorded length;
//   - a bundle's file of the wrong size, or missing: damage → quarantined
//     and dropped from the index.
//
// Checksums are not verified here (that would read every payload): they
// are verified on every full read and by Scrub. Progress that was in
// flight goes back to pending.
func (s *Store) recover(ctx context.Context) error {
	start := time.Now()
	if err := s.clearTmp(); err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bktMeta)
		switch v := m.Get(metaVersion); {
		case v == nil:
			return m.Put(metaVersion, []byte{schemaVersion})
		case len(v) != 1 || v[0] != schemaVersion:
			return fmt.Errorf("index schema version %v; this mulegate understands %d", v, schemaVersion)
		}
		return nil
	}); err != nil {
		return ioErr("open", "", err)
	}

	type fileRef struct {
		rec   *record
		found bool
	}
	var (
		files    = make(map[uint64]*fileRef)
		damaged  []uint64 // records that do not decode
		inFlight [][]byte // progress keys
		maxSeq   uint64
		u        usage
		// The cost of each bundle, by seq in ascending order (the
		// records bucket's order), for the bytes by progress state.
		costSeqs []uint64
		costs    []int64
	)
	costOf := func(seq uint64) int64 {
		if i, ok := slices.BinarySearch(costSeqs, seq); ok {
			return costs[i]
		}
		return 0 // no such bundle: a damaged record, counted as 0 throughout
	}
	dests := make(map[string]*destCounts)
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktMeta).Get(metaSeq); len(v) == 8 {
			maxSeq = beUint64(v)
		}
		c := tx.Bucket(bktRecords).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				continue
			}
			seq := beUint64(k)
			maxSeq = max(maxSeq, seq)
			r, err := decodeRecord(v)
			if err != nil {
				s.log.Error("index record does not decode; dropping it", zap.Uint64("seq", seq), zap.Error(err))
				damaged = append(damaged, seq)
				continue
			}
			if r.kind == kindBundle {
				u.bundles++
				u.bundleBytes += r.cost()
				costSeqs = append(costSeqs, seq)
				costs = append(costs, r.cost())
			} else {
				u.partials++
				u.partialBytes += r.cost()
			}
			if !r.inline {
				files[seq] = &fileRef{rec: r}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ic := tx.Bucket(bktIDs).Cursor()
		for _, v := ic.First(); v != nil; _, v = ic.Next() {
			if len(v) > 0 && v[0] == kindTomb {
				u.tombstones++
				if len(v) >= 9 {
					maxSeq = max(maxSeq, beUint64(v[1:9]))
				}
			}
		}
		pc := tx.Bucket(bktProgress).Cursor()
		for k, v := pc.First(); k != nil; k, v = pc.Next() {
			p, err := decodeProgress(v)
			if err != nil || len(k) < 9 {
				continue
			}
			dest := string(k[:len(k)-9])
			st := p.state
			if st == InFlight {
				inFlight = append(inFlight, append([]byte(nil), k...))
				st = Pending
			}
			c := dests[dest]
			if c == nil {
				c = &destCounts{}
				dests[dest] = c
			}
			c.add(0, st, costOf(beUint64(k[len(k)-8:])))
		}
		return nil
	})
	if err != nil {
		return ioErr("open", "", err)
	}

	// Compare data/ with the index.
	type fix struct {
		seq    uint64
		rec    *record
		reason string
	}
	var bad []fix
	orphans := 0
	d, err := os.Open(s.dataDir)
	if err != nil {
		return ioErr("open", "", err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return ioErr("open", "", err)
	}
	for _, ent := range entries {
		seq, ok := parseFileName(ent.Name())
		ref := files[seq]
		if !ok || ref == nil || !ent.Type().IsRegular() {
			if err := os.RemoveAll(filepath.Join(s.dataDir, ent.Name())); err != nil {
				return ioErr("open", "", err)
			}
			orphans++
			continue
		}
		ref.found = true
		fi, err := ent.Info()
		if err != nil {
			return ioErr("open", "", err)
		}
		size, held := fi.Size(), int64(ref.rec.held)
		switch {
		case size == held:
		case ref.rec.kind == kindPartial && size > held:
			if err := truncateSync(s.dataPath(seq), held); err != nil {
				return ioErr("open", ref.rec.id, err)
			}
		default:
			bad = append(bad, fix{seq, ref.rec, fmt.Sprintf("file holds %d bytes, index says %d", size, held)})
		}
	}
	for seq, ref := range files {
		if !ref.found {
			bad = append(bad, fix{seq, ref.rec, "file missing"})
		}
	}
	for _, f := range bad {
		s.quarantineFiles(f.seq, f.rec, nil, f.reason)
	}
	s.seq.Store(maxSeq)

	if len(bad)+len(damaged)+len(inFlight) > 0 {
		var dl delta
		err := s.db.Update(func(tx *bolt.Tx) error {
			dl = delta{}
			for _, f := range bad {
				r, ok := recordAt(tx, f.seq)
				if !ok {
					continue
				}
				if err := removeRecord(tx, f.seq, r, false, &dl); err != nil {
					return err
				}
			}
			for _, seq := range damaged {
				sk := seqKey(seq)
				for _, b := range [][]byte{bktRecords, bktInline, bktPartials} {
					if err := tx.Bucket(b).Delete(sk); err != nil {
						return err
					}
				}
				if err := removeProgress(tx, seq, costOf(seq), &dl); err != nil {
					return err
				}
			}
			pb := tx.Bucket(bktProgress)
			for _, k := range inFlight {
				p, err := decodeProgress(pb.Get(k))
				if err != nil {
					continue
				}
				p.state = Pending
				p.lastErr = "interrupted: the node stopped while this was in flight"
				p.updated = s.now()
				if err := pb.Put(k, encodeProgress(p)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return ioErr("open", "", err)
		}
		// The damaged records' own counts were never added to u; their
		// progress records were, as dests, and dl takes them out again.
		u.add(dl.u)
		for _, m := range dl.dests {
			if c := dests[m.dest]; c != nil {
				from := m.from
				if from == InFlight {
					from = Pending // counted as pending above
				}
				if c.add(from, 0, m.bytes) {
					delete(dests, m.dest)
				}
			}
		}
	}
	s.u = u
	s.dests = dests
	s.log.Info("store opened",
		zap.String("dir", s.dir),
		zap.Int64("bundles", u.bundles),
		zap.Int64("partials", u.partials),
		zap.Int64("tombstones", u.tombstones),
		zap.Int("orphan_files_removed", orphans),
		zap.Int("quarantined", len(bad)),
		zap.Int("damaged_records", len(damaged)),
		zap.Int("in_flight_reset", len(inFlight)),
		zap.Duration("took", time.Since(start)))
	return nil
}

func (s *Store) clearTmp() error {
	entries, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return ioErr("open", "", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return ioErr("open", "", err)
		}
	}
	return nil
}

// quarantineFiles moves a damaged payload (its file, or the inline bytes
// given as data) and its header into quarantine/, for an operator to look
// at, and logs it.
func (s *Store) quarantineFiles(seq uint64, r *record, data []byte, reason string) {
	k := keyOf(r.id)
	base := filepath.Join(s.quarDir, fmt.Sprintf("%s-%016x", fmt.Sprintf("%x", k[:8]), seq))
	var err error
	if r.inline {
		err = os.WriteFile(base+".payload", data, 0o600)
	} else {
		err = os.Rename(s.dataPath(seq), base+".payload")
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		s.log.Error("cannot move payload to quarantine", zap.String("id", r.id), zap.Error(err))
	}
	info := fmt.Sprintf("id: %s\nfrom: %s\nreceived: %s\nreason: %s\npayload_length: %d\nbytes_held: %d\ncrc32c: %08x\n",
		r.id, r.from, r.received.UTC().Format(time.RFC3339Nano), reason, r.payloadLen, r.held, r.crc)
	os.WriteFile(base+".info", []byte(info), 0o600)
	if r.header != nil {
		os.WriteFile(base+".header", r.header, 0o600)
	}
	s.quarantined.Add(1)
	s.log.Error("payload quarantined",
		zap.String("id", r.id), zap.Uint64("seq", seq), zap.String("from", r.from),
		zap.String("reason", reason), zap.String("path", base+".payload"))
}

// quarantine moves a damaged payload aside and drops its bundle from the
// index (without a tombstone, so that a good copy is accepted again). The
// caller must not be inside enter/leave; quarantineIn is for callers that
// are.
func (s *Store) quarantine(seq uint64, r *record, data []byte, reason string) {
	if err := s.enter("quarantine"); err != nil {
		s.quarantineFiles(seq, r, data, reason)
		return
	}
	defer s.leave()
	s.quarantineIn(seq, r, data, reason)
}

func (s *Store) quarantineIn(seq uint64, r *record, data []byte, reason string) {
	s.quarantineFiles(seq, r, data, reason)
	var d delta
	err := s.update(func(tx *bolt.Tx) error {
		d = delta{}
		cur, ok := recordAt(tx, seq)
		if !ok || cur.id != r.id {
			return nil
		}
		return removeRecord(tx, seq, cur, false, &d)
	}, func() { s.apply(&d) })
	if err != nil {
		s.log.Error("cannot drop quarantined bundle from the index", zap.String("id", r.id), zap.Error(err))
	}
}

// ScrubReport is what Scrub found.
type ScrubReport struct {
	Checked int64 // payloads read through
	Bytes   int64 // bytes read
	Corrupt int64 // payloads quarantined
}

// Scrub reads every stored payload and verifies its checksum,
// quarantining those that do not match. It holds no lock while it reads,
// so the store keeps working; the node may run it in the background (see
// Options.ScrubOnOpen) or on a schedule.
func (s *Store) Scrub(ctx context.Context) (ScrubReport, error) {
	const op = "scrub"
	const batch = 256
	var rep ScrubReport
	bufp := s.buffers.Get().(*[]byte)
	defer s.buffers.Put(bufp)
	buf := *bufp
	var after uint64
	for {
		type item struct {
			seq uint64
			rec *record
		}
		var items []item
		if err := s.enter(op); err != nil {
			return rep, err
		}
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bktRecords).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil && len(items) < batch; k, v = c.Next() {
				if len(k) != 8 {
					continue
				}
				after = beUint64(k)
				if r, err := decodeRecord(v); err == nil && r.kind == kindBundle {
					items = append(items, item{after, r})
				}
			}
			return nil
		})
		s.leave()
		if err != nil {
			return rep, ioErr(op, "", err)
		}
		if len(items) == 0 {
			return rep, nil
		}
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			p, err := s.openSeq(it.seq, it.rec)
			if err != nil {
				if errors.Is(err, ErrCorrupt) {
					rep.Corrupt++
				}
				continue
			}
			for {
				n, err := p.Read(buf)
				rep.Bytes += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					if errors.Is(err, ErrCorrupt) {
						rep.Corrupt++
					}
					break
				}
			}
			p.Close()
			rep.Checked++
		}
	}
}

// openSeq opens the payload of the record at seq if it is still rec.
func (s *Store) openSeq(seq uint64, rec *record) (*Payload, error) {
	const op = "scrub"
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	var (
		p   *Payload
		err error
	)
	if verr := s.db.View(func(tx *bolt.Tx) error {
		r, ok := recordAt(tx, seq)
		if !ok || r.id != rec.id || r.kind != kindBundle {
			err = newErr(op, ErrNotFound, rec.id, "", nil)
			return nil
		}
		p, err = s.openPayloadTx(tx, seq, r)
		return nil
	}); verr != nil {
		return nil, ioErr(op, rec.id, verr)
	}
	if p != nil && p.bad != nil {
		s.quarantineIn(p.seq, p.rec, p.data, p.bad.Detail)
		return nil, p.bad
	}
	return p, err
}
