package dir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// pollInterval is how often a waiting Fetch looks at the inbox again.
const pollInterval = 100 * time.Millisecond

// candidate is an inbox file that may be offered.
type candidate struct {
	rel   string
	dest  string
	mtime time.Time
	size  int64
}

// RejectedDir is the inbox directory that Reject moves files into (keeping
// their path in the inbox), each with a "<name>.reason" file beside it. It is
// never scanned, so a rejected file is never offered again; an operator who
// has fixed the cause moves it back.
const RejectedDir = "rejected"

func (a *Adapter) Fetch(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if st.inbox == nil {
		return fmt.Errorf("%w: this dir adapter has no inbox configured", plugins.ErrUnsupported)
	}
	return sdk.LongPoll(ctx, req.Wait, pollInterval, nil, func() (int, error) {
		return a.offer(ctx, st, req, fn)
	})
}

// offer hands fn the inbox files that are ready, oldest first, and
// returns how many it took.
func (a *Adapter) offer(ctx context.Context, st *state, req plugins.FetchRequest, fn func(plugins.Inbound) error) (int, error) {
	cands, err := a.scan(st)
	if err != nil {
		return 0, fmt.Errorf("%w: reading inbox: %v", plugins.ErrUnreachable, err)
	}
	limit := max(req.MaxMessages, 1)
	taken := 0
	for _, c := range cands {
		if taken >= limit {
			break
		}
		if err := ctx.Err(); err != nil {
			return taken, err
		}
		if req.MaxBytes > 0 && c.size > req.MaxBytes {
			// Alone over the cap: offering it would stop this fetch and
			// every later one before it, and the files behind it would
			// never be offered. It waits, and is said to wait, instead.
			a.warnOnce(c.rel, fmt.Sprintf("leaving an inbox file alone: its %d bytes are more than the node takes (%d)", c.size, req.MaxBytes), nil)
			continue
		}
		if !a.lease(c.rel, time.Duration(st.cfg.Lease)) {
			continue // another Fetch took it meanwhile
		}
		err := a.offerOne(st, c, fn)
		if err != nil {
			a.unlease(c.rel)
			if errors.Is(err, plugins.ErrFetchLimit) {
				return taken, nil
			}
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed by someone else since the scan
			}
			return taken, err
		}
		taken++
	}
	return taken, nil
}

func (a *Adapter) offerOne(st *state, c candidate, fn func(plugins.Inbound) error) error {
	f, err := st.inbox.OpenFile(c.rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fs.ErrNotExist
	}
	r := receiptFor(c.rel, fi)
	return fn(plugins.Inbound{
		Receipt:     r,
		MessageID:   "dir:" + r,
		Destination: c.dest,
		Lifetime:    time.Duration(st.cfg.Lifetime),
		Headers: map[string]string{
			"filename": strings.ToValidUTF8(path.Base(c.rel), "\uFFFD"),
			"path":     strings.ToValidUTF8(c.rel, "\uFFFD"),
			"mtime":    fi.ModTime().UTC().Format(time.RFC3339Nano),
		},
		PayloadLength: fi.Size(),
		Payload:       f,
	})
}

// scan lists the inbox files ready to offer: regular, not hidden, not
// leased, unchanged for min_age, with a destination.
func (a *Adapter) scan(st *state) ([]candidate, error) {
	now := time.Now()
	settled := now.Add(-time.Duration(st.cfg.MinAge))
	var out []candidate
	err := fs.WalkDir(st.inbox.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return err
			}
			return nil // a subdirectory vanished or is unreadable; skip it
		}
		if p == RejectedDir && d.IsDir() {
			return fs.SkipDir
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if a.leased(p, now) {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.ModTime().After(settled) {
			return nil
		}
		dest, err := destinationFor(p, st.cfg.DefaultDestination)
		if err != nil {
			a.warnOnce(p, "leaving an inbox file alone: its path names no destination", err)
			return nil
		}
		out = append(out, candidate{rel: p, dest: dest, mtime: info.ModTime(), size: info.Size()})
		return nil
	})
	slices.SortFunc(out, func(x, y candidate) int {
		if c := x.mtime.Compare(y.mtime); c != 0 {
			return c
		}
		return strings.Compare(x.rel, y.rel)
	})
	return out, err
}

func (a *Adapter) warnOnce(p, msg string, err error) {
	a.mu.Lock()
	// Bounded: a directory of junk must not grow the adapter forever.
	first := !a.warned[p] && len(a.warned) < 10000
	if first {
		a.warned[p] = true
	}
	a.mu.Unlock()
	if first {
		a.log.Warn(msg, zap.String("file", p), zap.Error(err))
	}
}

func (a *Adapter) leased(rel string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.leases[rel]
	return ok && now.Before(until)
}

// lease reserves rel for d unless it is reserved already.
func (a *Adapter) lease(rel string, d time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if until, ok := a.leases[rel]; ok && now.Before(until) {
		return false
	}
	a.leases[rel] = now.Add(d)
	a.pruneLocked(now)
	return true
}

func (a *Adapter) unlease(rel string) {
	a.mu.Lock()
	delete(a.leases, rel)
	a.mu.Unlock()
}

func (a *Adapter) pruneLocked(now time.Time) {
	if len(a.leases) < 4096 {
		return
	}
	for k, until := range a.leases {
		if !now.Before(until) {
			delete(a.leases, k)
		}
	}
}

// A receipt is "<inode>.<mtime ns>.<size>/<path>", the path's segments
// escaped: it names the file and also which version of it was offered, so
// that an Ack never removes a file that was replaced after the fetch. It
// stays valid across adapter restarts.
func receiptFor(rel string, fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	segs := strings.Split(rel, "/")
	for i, s := range segs {
		segs[i] = escapeFull(s)
	}
	return fmt.Sprintf("%d.%d.%d/%s", ino, fi.ModTime().UnixNano(), fi.Size(), strings.Join(segs, "/"))
}

type receipt struct {
	rel        string
	ino        uint64
	mtimeNanos int64
	size       int64
}

func parseReceipt(s string) (receipt, error) {
	bad := func(why string) (receipt, error) {
		return receipt{}, fmt.Errorf("%w: receipt %q: %s", plugins.ErrInvalid, s, why)
	}
	if !utf8.ValidString(s) {
		return bad("not UTF-8")
	}
	ident, escaped, ok := strings.Cut(s, "/")
	if !ok {
		return bad("no path")
	}
	parts := strings.Split(ident, ".")
	if len(parts) != 3 {
		return bad("want <inode>.<mtime>.<size>/<path>")
	}
	var r receipt
	var err1, err2, err3 error
	r.ino, err1 = strconv.ParseUint(parts[0], 10, 64)
	r.mtimeNanos, err2 = strconv.ParseInt(parts[1], 10, 64)
	r.size, err3 = strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return bad("bad number")
	}
	segs := strings.Split(escaped, "/")
	for i, e := range segs {
		seg, err := unescapeSegment(e)
		if err != nil || seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, ".") || strings.ContainsAny(seg, "/\x00") {
			return bad("bad path")
		}
		segs[i] = seg
	}
	r.rel = strings.Join(segs, "/")
	return r, nil
}

func (r receipt) matches(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Ino == r.ino && fi.ModTime().UnixNano() == r.mtimeNanos && fi.Size() == r.size
}

// settling finds the inbox file a receipt names, for Ack or Reject to
// act on; the caller unleases r.rel when it is done. The state is nil
// when there is nothing to do: the file is gone (settled twice, or
// removed by hand), or it is not the version that was offered, which is
// logged (replaced says so) and kept.
func (a *Adapter) settling(rs, replaced string) (st *state, r receipt, err error) {
	if r, err = parseReceipt(rs); err != nil {
		return nil, r, err
	}
	if st, err = a.cur.Get(); err != nil {
		return nil, r, err
	}
	if st.inbox == nil {
		return nil, r, fmt.Errorf("%w: this dir adapter has no inbox configured", plugins.ErrUnsupported)
	}
	fi, err := st.inbox.Lstat(r.rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, r, nil
	case err != nil:
		return nil, r, err
	case !r.matches(fi):
		a.log.Warn(replaced, zap.String("file", r.rel))
		return nil, r, nil
	}
	return st, r, nil
}

// Ack removes the acknowledged file, if it is still the version that was
// offered.
func (a *Adapter) Ack(_ context.Context, rs string) error {
	st, r, err := a.settling(rs, "an acknowledged inbox file was replaced after it was fetched; keeping the new one")
	defer a.unlease(r.rel)
	if st == nil {
		return err
	}
	if err := st.inbox.Remove(r.rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(st.inbox, path.Dir(r.rel))
}

// Nack keeps the file and holds it back for nack_delay.
func (a *Adapter) Nack(_ context.Context, rs, reason string) error {
	r, err := parseReceipt(rs)
	if err != nil {
		return err
	}
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.leases[r.rel] = time.Now().Add(time.Duration(st.cfg.NackDelay))
	a.mu.Unlock()
	a.log.Info("the node could not take an inbox file; offering it again later",
		zap.String("file", r.rel), zap.String("reason", reason), zap.Duration("after", time.Duration(st.cfg.NackDelay)))
	return nil
}

// Reject moves the file out of the inbox's way, to RejectedDir/<its path>,
// and writes the node's reason to RejectedDir/<its path>.reason: it is
// never offered again, and an operator finds it with the reason. The
// reason is written first, so a crash between the two steps leaves the file
// in the inbox, where it is offered (and rejected) again, never a rejected
// file without its reason. An earlier rejected file of the same name is
// kept: the new one gets a numbered name.
func (a *Adapter) Reject(_ context.Context, rs, reason string) error {
	st, r, err := a.settling(rs, "a rejected inbox file was replaced after it was fetched; keeping the new one, which will be offered")
	defer a.unlease(r.rel)
	if st == nil {
		return err
	}
	dir := path.Join(RejectedDir, path.Dir(r.rel))
	if err := st.inbox.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating %s in the inbox for a rejected file: %w", dir, err)
	}
	target, err := freeName(st.inbox, path.Join(RejectedDir, r.rel))
	if err != nil {
		return err
	}
	note := fmt.Sprintf("%s\n\nrefused by the mulegate node at %s; it was inbox/%s\n", reason, time.Now().UTC().Format(time.RFC3339), r.rel)
	tmp, err := writeTemp(st.inbox, path.Dir(target), func(f *os.File) error {
		_, err := f.WriteString(note)
		return err
	})
	if err == nil {
		err = st.inbox.Rename(tmp, target+reasonSuffix)
	}
	if err != nil {
		return fmt.Errorf("writing the reason for rejected file %s: %w", r.rel, err)
	}
	if err := st.inbox.Rename(r.rel, target); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			_ = st.inbox.Remove(target + reasonSuffix)
			return nil
		}
		return fmt.Errorf("moving rejected file %s to %s: %w", r.rel, target, err)
	}
	if err := syncDir(st.inbox, path.Dir(target)); err != nil {
		return err
	}
	if err := syncDir(st.inbox, path.Dir(r.rel)); err != nil {
		return err
	}
	a.log.Warn("the node refused an inbox file for good; moved it aside",
		zap.String("file", r.rel), zap.String("to", target), zap.String("reason", reason))
	return nil
}

// reasonSuffix names the file beside a rejected file that says why.
const reasonSuffix = ".reason"

// freeName returns name, or name with ".1", ".2", … added, whichever is
// the first that neither exists nor has a reason file.
func freeName(root *os.Root, name string) (string, error) {
	for i := 0; i < 1000; i++ {
		cand := name
		if i > 0 {
			cand = fmt.Sprintf("%s.%d", name, i)
		}
		_, err1 := root.Lstat(cand)
		_, err2 := root.Lstat(cand + reasonSuffix)
		if errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) {
			return cand, nil
		}
	}
	return "", fmt.Errorf("%s: a thousand rejected files of that name already; clear %s in the inbox", name, RejectedDir)
}
