package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// DefaultInlineMax is the largest payload kept inside the index rather
// than in a file of its own, unless Options.InlineMax says otherwise.
const DefaultInlineMax = 64 << 10

// DefaultLimit is the number of results a query returns when its limit is
// zero or negative.
const DefaultLimit = 1000

// Options configure a Store. The zero value is usable: no quota, 64 KiB
// inline threshold, no logging, the system clock.
type Options struct {
	// Logger receives recovery, quarantine and deletion events. Nil
	// means no logging.
	Logger *zap.Logger
	// MaxBytes bounds the metadata plus payload bytes of every bundle and
	// partial reception held or being received. 0 means no limit.
	MaxBytes int64
	// MaxBundles bounds the number of bundles and partial receptions held
	// or being received. 0 means no limit.
	MaxBundles int64
	// InlineMax is the largest payload kept in the index itself; larger
	// ones get a file each. 0 means DefaultInlineMax; negative means every
	// payload gets a file.
	InlineMax int64
	// MaxBatch bounds how many operations share one index commit (one
	// fsync). 0 means 1024.
	MaxBatch int
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// ScrubOnOpen starts a background Scrub after Open; Close stops it.
	ScrubOnOpen bool
}

// Store is the durable bundle store. It is safe for concurrent use.
type Store struct {
	dir, dataDir, tmpDir, quarDir string

	db        *bolt.DB
	log       *zap.Logger
	now       func() time.Time
	opts      Options
	inlineMax int64

	// life guards closed: every operation holds it for reading while it
	// runs, so Close (which takes it for writing) waits for them.
	life   sync.RWMutex
	closed bool

	queue         chan *txn
	committerDone chan struct{}
	maxBatch      int

	seq atomic.Uint64 // last sequence number handed out

	mu        sync.Mutex
	receiving map[idKey]time.Time // IDs being received → their expiry
	u         usage
	dests     map[string]*destCounts

	commits, committedOps, quarantined atomic.Int64

	buffers sync.Pool // *[]byte of copyBufferSize, for copying payloads

	bgCancel context.CancelFunc
	bgDone   sync.WaitGroup
}

// usage is what the store holds, kept in memory and rebuilt on open.
type usage struct {
	bundles, bundleBytes   int64
	partials, partialBytes int64
	tombstones             int64
	reserved, reservedB    int64 // receptions in progress and their bytes
}

func (u *usage) add(o usage) {
	u.bundles += o.bundles
	u.bundleBytes += o.bundleBytes
	u.partials += o.partials
	u.partialBytes += o.partialBytes
	u.tombstones += o.tombstones
	u.reserved += o.reserved
	u.reservedB += o.reservedB
}

// Open opens (creating if needed) the store in dir and recovers it:
// leftover temporary files are removed, partial receptions are kept,
// payload files whose size does not match the index are quarantined, and
// progress that was in flight when the node stopped goes back to pending.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	s := &Store{
		dir:       dir,
		dataDir:   filepath.Join(dir, "data"),
		tmpDir:    filepath.Join(dir, "tmp"),
		quarDir:   filepath.Join(dir, "quarantine"),
		log:       opts.Logger,
		now:       opts.Now,
		opts:      opts,
		inlineMax: opts.InlineMax,
		maxBatch:  opts.MaxBatch,
		receiving: make(map[idKey]time.Time),
		dests:     make(map[string]*destCounts),
	}
	s.buffers.New = func() any {
		b := make([]byte, copyBufferSize)
		return &b
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	switch {
	case s.inlineMax == 0:
		s.inlineMax = DefaultInlineMax
	case s.inlineMax < 0:
		s.inlineMax = -1
	}
	if s.maxBatch <= 0 {
		s.maxBatch = 1024
	}
	if opts.MaxBytes < 0 || opts.MaxBundles < 0 {
		return nil, newErr("open", ErrInvalid, "", "negative quota", nil)
	}
	for _, d := range []string{dir, s.dataDir, s.tmpDir, s.quarDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, ioErr("open", "", err)
		}
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{
		Timeout:      time.Second,
		FreelistType: bolt.FreelistMapType,
		// Reserve address space up front so that the index rarely needs
		// a remap, which would wait for every open read transaction.
		InitialMmapSize: 1 << 30,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, newErr("open", ErrIO, "", "index is locked by another process", err)
		}
		return nil, ioErr("open", "", err)
	}
	s.db = db
	// Make the directories and the index file durable entries, so that
	// the first acknowledged bundle cannot vanish with them.
	for _, d := range []string{dir, filepath.Dir(filepath.Clean(dir))} {
		if err := syncDir(d); err != nil {
			db.Close()
			return nil, ioErr("open", "", err)
		}
	}
	if err := s.recover(ctx); err != nil {
		db.Close()
		return nil, err
	}
	s.queue = make(chan *txn, s.maxBatch)
	s.committerDone = make(chan struct{})
	go s.commitLoop()
	bg, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	if opts.ScrubOnOpen {
		s.bgDone.Add(1)
		go func() {
			defer s.bgDone.Done()
			rep, err := s.Scrub(bg)
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
				s.log.Error("background scrub failed", zap.Error(err))
				return
			}
			s.log.Info("background scrub finished", zap.Int64("checked", rep.Checked),
				zap.Int64("bytes", rep.Bytes), zap.Int64("corrupt", rep.Corrupt))
		}()
	}
	return s, nil
}

// Close waits for the operations under way, stops the background work and
// closes the index. Writers not yet committed are discarded (their
// temporary files are removed on the next Open); payload readers already
// open stay readable until closed.
func (s *Store) Close() error {
	s.bgCancel()
	s.bgDone.Wait()
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	s.life.Unlock()
	close(s.queue)
	<-s.committerDone
	if err := s.db.Close(); err != nil {
		return ioErr("close", "", err)
	}
	return nil
}

// enter starts an operation; leave ends it. An operation must not enter
// again while it is inside.
func (s *Store) enter(op string) error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return newErr(op, ErrClosed, "", "", nil)
	}
	return nil
}

func (s *Store) leave() { s.life.RUnlock() }

func (s *Store) dataPath(seq uint64) string { return filepath.Join(s.dataDir, fileName(seq)) }
func (s *Store) tmpPath(seq uint64) string  { return filepath.Join(s.tmpDir, fileName(seq)) }

func fileName(seq uint64) string { return fmt.Sprintf("%016x", seq) }

func parseFileName(name string) (uint64, bool) {
	if len(name) != 16 {
		return 0, false
	}
	var seq uint64
	for _, c := range []byte(name) {
		switch {
		case '0' <= c && c <= '9':
			seq = seq<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			seq = seq<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return seq, true
}

// syncDir makes a directory's entries (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// claim marks id as being received, so that concurrent receptions of one
// bundle cannot both proceed; exp is its expiry, for Delete's tombstone.
func (s *Store) claim(op, id string, k idKey, exp time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.receiving[k]; busy {
		return newErr(op, ErrInProgress, id, "", nil)
	}
	s.receiving[k] = exp
	return nil
}

func (s *Store) unclaim(k idKey) {
	s.mu.Lock()
	delete(s.receiving, k)
	s.mu.Unlock()
}

// reserve takes room for a reception from the quota, before any payload
// byte is read. count is 1 for a new bundle, 0 for a resumed one.
func (s *Store) reserve(op, id string, bytes, count int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	usedB := s.u.bundleBytes + s.u.partialBytes + s.u.reservedB
	usedN := s.u.bundles + s.u.partials + s.u.reserved
	if max := s.opts.MaxBytes; max > 0 && usedB+bytes > max {
		return newErr(op, ErrFull, id, fmt.Sprintf("needs %d bytes; %d of %d in use", bytes, usedB, max), nil)
	}
	if max := s.opts.MaxBundles; max > 0 && count > 0 && usedN+count > max {
		return newErr(op, ErrFull, id, fmt.Sprintf("%d of %d bundles held", usedN, max), nil)
	}
	s.u.reservedB += bytes
	s.u.reserved += count
	return nil
}

// delta is what one index transaction changed in the in-memory counters.
// It is applied after the transaction commits.
type delta struct {
	u     usage
	dests []destDelta
}

// destDelta moves one progress record from one state to another; 0 means
// no record. bytes is its bundle's cost (record.cost), which moves with it.
type destDelta struct {
	dest     string
	from, to State
	bytes    int64
}

func (d *delta) move(dest string, from, to State, bytes int64) {
	if from != to {
		d.dests = append(d.dests, destDelta{dest, from, to, bytes})
	}
}

// destCounts are one destination's progress records by state: how many,
// and the bytes of their bundles.
type destCounts struct {
	n, bytes StateCounts
}

// add moves one record of cost bytes from state from to state to (0 for
// none), and reports whether the destination has no records left.
func (c *destCounts) add(from, to State, bytes int64) (empty bool) {
	c.n.add(from, -1)
	c.n.add(to, 1)
	c.bytes.add(from, -bytes)
	c.bytes.add(to, bytes)
	return c.n == StateCounts{}
}

func (s *Store) apply(d *delta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyLocked(d)
}

func (s *Store) applyLocked(d *delta) {
	s.u.add(d.u)
	for _, m := range d.dests {
		c := s.dests[m.dest]
		if c == nil {
			c = &destCounts{}
			s.dests[m.dest] = c
		}
		if c.add(m.from, m.to, m.bytes) {
			delete(s.dests, m.dest)
		}
	}
}

// Stats are the store's counters, for metrics. Bytes are always what the
// quota counts: a bundle's metadata (its encoded header) plus the payload
// bytes held.
type Stats struct {
	// What is held, by kind: complete bundles, partial receptions, and
	// receptions in progress (reserved).
	Bundles      int64 // complete bundles held
	BundleBytes  int64 // their metadata plus payload bytes
	Partials     int64 // partial receptions held
	PartialBytes int64 // their metadata plus the payload bytes received
	Tombstones   int64 // deleted bundles remembered until they expire
	Receiving    int64 // new receptions in progress (a resumed partial counts as a partial)
	ReservedB    int64 // bytes reserved for receptions and resumptions in progress

	// UsedBytes and UsedBundles are what the quota counts: bundles,
	// partials and receptions in progress.
	UsedBytes, UsedBundles int64
	// MaxBytes and MaxBundles are the quota; 0 means no limit.
	MaxBytes, MaxBundles int64

	Quarantined  int64 // payloads quarantined since Open
	Commits      int64 // index commits (fsyncs) since Open
	CommittedOps int64 // operations they carried; CommittedOps/Commits is the group size

	// Destinations are the progress record counts by state for each
	// destination, and DestinationBytes the bytes of those records'
	// bundles, by state (a bundle pending for two destinations counts
	// for each). A destination with no records is absent from both.
	Destinations     map[string]StateCounts
	DestinationBytes map[string]StateCounts
	// Progress and ProgressBytes are the same summed over every
	// destination, for a metric without a label per destination.
	Progress, ProgressBytes StateCounts
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	u := s.u
	dests := make(map[string]StateCounts, len(s.dests))
	destBytes := make(map[string]StateCounts, len(s.dests))
	var total, totalBytes StateCounts
	for k, v := range s.dests {
		dests[k], destBytes[k] = v.n, v.bytes
		total.plus(v.n)
		totalBytes.plus(v.bytes)
	}
	s.mu.Unlock()
	return Stats{
		Bundles:      u.bundles,
		BundleBytes:  u.bundleBytes,
		Partials:     u.partials,
		PartialBytes: u.partialBytes,
		Tombstones:   u.tombstones,
		Receiving:    u.reserved,
		ReservedB:    u.reservedB,
		UsedBytes:    u.bundleBytes + u.partialBytes + u.reservedB,
		UsedBundles:  u.bundles + u.partials + u.reserved,
		MaxBytes:     s.opts.MaxBytes,
		MaxBundles:   s.opts.MaxBundles,
		Quarantined:  s.quarantined.Load(),
		Commits:      s.commits.Load(),
		CommittedOps: s.committedOps.Load(),
		Destinations: dests,

		DestinationBytes: destBytes,
		Progress:         total,
		ProgressBytes:    totalBytes,
	}
}

// Counts returns the progress record counts by state for one destination:
// its queue depth.
func (s *Store) Counts(dest string) StateCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.dests[dest]; c != nil {
		return c.n
	}
	return StateCounts{}
}
