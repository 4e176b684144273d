package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// onlyFile returns the path of the single file in dir.
func onlyFile(t *testing.T, dir string) string {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("%s holds %d files (%v), want 1", dir, len(files), err)
	}
	return filepath.Join(dir, files[0].Name())
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// editIndex changes the index directly while the store is closed.
func editIndex(t *testing.T, e *env, fn func(tx *bolt.Tx) error) {
	t.Helper()
	e.s.Close()
	db, err := bolt.Open(filepath.Join(e.dir, "index.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	readAll := func(t *testing.T, e *env, p *Payload) error { _, err := io.ReadAll(p); return err }
	readSections := func(t *testing.T, e *env, p *Payload) error {
		// A sender cutting fragments in order, as io.SectionReaders.
		var err error
		for off := int64(0); off < p.Size() && err == nil; off += 7000 {
			_, err = io.ReadAll(io.NewSectionReader(p, off, min(7000, p.Size()-off)))
		}
		return err
	}
	tests := []struct {
		name string
		size int
		// damage breaks the stored bundle; it may close the store, which
		// is then reopened.
		damage func(t *testing.T, e *env)
		// read is how the damage is found; nil: found on reopen.
		read func(t *testing.T, e *env, p *Payload) error
		// scrub finds it instead of a read.
		scrub bool
	}{
		{"file: flipped byte, read through", 100 << 10, func(t *testing.T, e *env) {
			flipByte(t, onlyFile(t, filepath.Join(e.dir, "data")), 5000)
		}, readAll, false},
		{"file: flipped last byte, read in sections", 100 << 10, func(t *testing.T, e *env) {
			flipByte(t, onlyFile(t, filepath.Join(e.dir, "data")), 100<<10-1)
		}, readSections, false},
		{"file: flipped byte, found by scrub", 100 << 10, func(t *testing.T, e *env) {
			flipByte(t, onlyFile(t, filepath.Join(e.dir, "data")), 0)
		}, nil, true},
		{"file: truncated, found on open", 100 << 10, func(t *testing.T, e *env) {
			e.s.Close()
			os.Truncate(onlyFile(t, filepath.Join(e.dir, "data")), 1000)
		}, nil, false},
		{"file: truncated under an open store", 100 << 10, func(t *testing.T, e *env) {
			os.Truncate(onlyFile(t, filepath.Join(e.dir, "data")), 1000)
		}, readAll, false},
		{"file: missing, found on open", 100 << 10, func(t *testing.T, e *env) {
			e.s.Close()
			os.Remove(onlyFile(t, filepath.Join(e.dir, "data")))
		}, nil, false},
		{"inline: flipped byte", 1000, func(t *testing.T, e *env) {
			editIndex(t, e, func(tx *bolt.Tx) error {
				b := tx.Bucket(bktInline)
				k, v := b.Cursor().First()
				v = bytes.Clone(v)
				v[10] ^= 1
				return b.Put(k, v)
			})
		}, readAll, false},
		{"inline: flipped byte, found by scrub", 1000, func(t *testing.T, e *env) {
			editIndex(t, e, func(tx *bolt.Tx) error {
				b := tx.Bucket(bktInline)
				k, v := b.Cursor().First()
				v = bytes.Clone(v)
				v[999] ^= 1
				return b.Put(k, v)
			})
		}, nil, true},
		{"inline: wrong length", 1000, func(t *testing.T, e *env) {
			editIndex(t, e, func(tx *bolt.Tx) error {
				b := tx.Bucket(bktInline)
				k, v := b.Cursor().First()
				return b.Put(k, v[:500])
			})
		}, func(*testing.T, *env, *Payload) error { return nil }, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			e := newEnv(t, Options{Logger: zap.New(core)})
			b := mkBundle(t, uint64(i), tc.size)
			good := mkBundle(t, 1000, 10) // an intact neighbour
			mustPut(t, e.s, b)
			mustPut(t, e.s, good)
			tc.damage(t, e)
			if e.s.closed {
				e.open()
			}
			switch {
			case tc.scrub:
				rep, err := e.s.Scrub(ctx)
				if err != nil || rep.Corrupt != 1 || rep.Checked != 2 {
					t.Fatalf("Scrub = %+v, %v", rep, err)
				}
			case tc.read != nil:
				p, err := e.s.OpenPayload(ctx, b.ID())
				if err == nil {
					err = tc.read(t, e, p)
					p.Close()
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("reading the damaged payload: %v, want ErrCorrupt", err)
				}
			}
			// Gone from the index, kept in quarantine, logged.
			if _, err := e.s.Get(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after quarantine: %v", err)
			}
			if st, _ := e.s.Lookup(ctx, b.ID()); st != (Status{}) {
				t.Errorf("Lookup after quarantine: %+v", st)
			}
			if s := e.s.Stats(); s.Quarantined != 1 || s.Bundles != 1 {
				t.Errorf("Stats = %+v", s)
			}
			q, _ := os.ReadDir(filepath.Join(e.dir, "quarantine"))
			var names []string
			for _, f := range q {
				names = append(names, f.Name())
			}
			if !strings.Contains(strings.Join(names, " "), ".info") {
				t.Errorf("quarantine holds %v", names)
			}
			if logs.FilterMessage("payload quarantined").Len() != 1 {
				t.Errorf("logs: %v", logs.All())
			}
			// The neighbour is fine, and a good copy is welcome again.
			if _, err := readPayload(t, e.s, good.ID()); err != nil {
				t.Errorf("neighbour: %v", err)
			}
			mustPut(t, e.s, b)
			if got, err := readPayload(t, e.s, b.ID()); err != nil || len(got) != tc.size {
				t.Errorf("good copy: %v", err)
			}
			e.reopen()
			if s := e.s.Stats(); s.Bundles != 2 {
				t.Errorf("after reopen: %+v", s)
			}
		})
	}
}

func TestRecoverFiles(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	b := mkBundle(t, 1, 100<<10)
	mustPut(t, e.s, b)
	e.s.Close()
	// Leftovers of a crash: a reception in tmp/, and payload files the
	// index does not name (a crash between rename and commit, or between
	// a delete's commit and the file's removal).
	os.WriteFile(filepath.Join(e.dir, "tmp", fileName(77)), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(e.dir, "data", fileName(78)), []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(e.dir, "data", "junk"), []byte("?"), 0o600)
	e.open()
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d files", len(tmp))
	}
	onlyFile(t, filepath.Join(e.dir, "data"))
	if got, err := readPayload(t, e.s, b.ID()); err != nil || len(got) != 100<<10 {
		t.Errorf("payload: %v", err)
	}
	// Sequence numbers are never handed out twice, even across reopen.
	b2 := mkBundle(t, 2, 100<<10)
	mustPut(t, e.s, b2)
	m1, _ := e.s.Get(ctx, b.ID())
	m2, _ := e.s.Get(ctx, b2.ID())
	if m2.Arrival <= m1.Arrival {
		t.Errorf("arrival %d after %d", m2.Arrival, m1.Arrival)
	}
}

func TestRecoverDamagedRecord(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	bad, good := mkBundle(t, 1, 10), mkBundle(t, 2, 10)
	mustPut(t, e.s, bad)
	mustPut(t, e.s, good)
	e.s.Enqueue(ctx, bad.ID(), "peer:x")
	m, _ := e.s.Get(ctx, bad.ID())
	editIndex(t, e, func(tx *bolt.Tx) error {
		return tx.Bucket(bktRecords).Put(seqKey(m.Arrival), []byte{1, 2, 3})
	})
	e.open()
	if _, err := e.s.Get(ctx, bad.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("damaged record: %v", err)
	}
	if _, err := e.s.Get(ctx, good.ID()); err != nil {
		t.Errorf("good record: %v", err)
	}
	if s := e.s.Stats(); s.Bundles != 1 || len(s.Destinations) != 0 {
		t.Errorf("Stats = %+v", s)
	}
	// The ID is free again.
	mustPut(t, e.s, bad)
}

func TestOpenLocked(t *testing.T) {
	e := newEnv(t, Options{})
	_, err := Open(context.Background(), e.dir, Options{})
	wantKind(t, err, ErrIO)
}
