package smtp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// The spool's layout. A message accepted by the server is one file,
// msgs/<id>.eml (the bytes as received), and one entry per destination,
// msgs/<id>-<k>.json; an entry is what Fetch offers, Ack removes, and
// Reject moves to rejected/. The .eml goes when its last entry does.
// Both are written in tmp/ and renamed into msgs/, entries last, and msgs/
// is fsynced before the server answers 250: what was acknowledged is
// there after a crash, and nothing half-written ever is.
const (
	spoolTmp      = "tmp"
	spoolMsgs     = "msgs"
	spoolRejected = "rejected"
	reasonSuffix  = ".reason"
)

// entryName is "<id>-<k>", id being "<unix nanoseconds, 19 digits>-<16 hex>"
// (so that names sort by arrival).
var entryName = regexp.MustCompile(`^([0-9]{19}-[0-9a-f]{16})-([0-9]{1,4})$`)

// entryMeta is an entry's JSON file.
type entryMeta struct {
	Message     string    `json:"message"` // the id: msgs/<id>.eml
	Destination string    `json:"destination"`
	Recipients  []string  `json:"recipients"` // RCPT TO addresses that map to it
	MailFrom    string    `json:"mail_from"`
	Received    time.Time `json:"received"`
	Remote      string    `json:"remote,omitempty"`
	Helo        string    `json:"helo,omitempty"`
	From        string    `json:"from,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	Size        int64     `json:"size"`
}

type entry struct {
	name string
	meta entryMeta
}

// spool is the inbound server's store of accepted mail, with its bounds.
type spool struct {
	dir         string
	log         *zap.Logger
	maxMessages int
	maxBytes    int64

	mu       sync.Mutex
	entries  map[string]*entry
	refs     map[string]int   // message id → entries left
	sizes    map[string]int64 // message id → .eml size
	bytes    int64            // sizes, summed, plus bytes being received
	pending  int              // messages being received
	leases   map[string]time.Time
	warned   map[string]bool
	arrivals chan struct{}
}

// openSpool creates the spool's directories, clears what an interrupted
// write left, and loads the entries.
func openSpool(dir string, maxMessages int, maxBytes int64, log *zap.Logger) (*spool, error) {
	sp := &spool{dir: dir, log: log, maxMessages: maxMessages, maxBytes: maxBytes,
		entries: map[string]*entry{}, refs: map[string]int{}, sizes: map[string]int64{},
		leases: map[string]time.Time{}, warned: map[string]bool{}, arrivals: make(chan struct{}, 1)}
	for _, d := range []string{spoolTmp, spoolMsgs, spoolRejected} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			return nil, err
		}
	}
	tmps, err := os.ReadDir(filepath.Join(dir, spoolTmp))
	if err != nil {
		return nil, err
	}
	for _, t := range tmps {
		_ = os.Remove(filepath.Join(dir, spoolTmp, t.Name()))
	}
	files, err := os.ReadDir(filepath.Join(dir, spoolMsgs))
	if err != nil {
		return nil, err
	}
	emls := map[string]bool{}
	for _, f := range files {
		name := f.Name()
		switch {
		case strings.HasSuffix(name, ".eml"):
			emls[strings.TrimSuffix(name, ".eml")] = true
		case strings.HasSuffix(name, ".json") && entryName.MatchString(strings.TrimSuffix(name, ".json")):
			n := strings.TrimSuffix(name, ".json")
			e, err := sp.readEntry(n)
			if err != nil {
				log.Warn("spool entry unreadable; leaving it aside", zap.String("entry", n), zap.Error(err))
				continue
			}
			sp.entries[n] = e
		}
	}
	for n, e := range sp.entries {
		if !emls[e.meta.Message] {
			// Cannot happen after a crash (the .eml is renamed first), only
			// by hand; the entry has nothing to offer.
			log.Warn("spool entry without its message; removing it", zap.String("entry", n))
			_ = os.Remove(sp.path(spoolMsgs, n+".json"))
			delete(sp.entries, n)
			continue
		}
		sp.refs[e.meta.Message]++
	}
	for id := range emls {
		if sp.refs[id] == 0 {
			// Its entries never landed (a crash before 250), or its last
			// was acked before the crash could remove it.
			_ = os.Remove(sp.path(spoolMsgs, id+".eml"))
			continue
		}
		fi, err := os.Stat(sp.path(spoolMsgs, id+".eml"))
		if err == nil {
			sp.sizes[id] = fi.Size()
			sp.bytes += fi.Size()
		}
	}
	if err := syncDir(filepath.Join(dir, spoolMsgs)); err != nil {
		return nil, err
	}
	if len(sp.entries) > 0 {
		log.Info("spool holds mail from before", zap.Int("entries", len(sp.entries)), zap.Int("messages", len(sp.refs)), zap.Int64("bytes", sp.bytes))
	}
	return sp, nil
}

func (sp *spool) path(parts ...string) string {
	return filepath.Join(append([]string{sp.dir}, parts...)...)
}

func (sp *spool) readEntry(name string) (*entry, error) {
	f, err := os.Open(sp.path(spoolMsgs, name+".json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m entryMeta
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&m); err != nil {
		return nil, err
	}
	if m.Message == "" || !strings.HasPrefix(name, m.Message+"-") || sdk.CheckEID(m.Destination) != nil {
		return nil, fmt.Errorf("entry %s: bad content", name)
	}
	return &entry{name: name, meta: m}, nil
}

// errSpoolFull is the server's answer when the spool is at its bounds.
var errSpoolFull = errors.New("the spool is full")

// room tells whether a message of about size bytes (0: unknown) may
// start.
func (sp *spool) room(size int64) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.refs)+sp.pending >= sp.maxMessages {
		return fmt.Errorf("%w: %d messages wait for the node", errSpoolFull, len(sp.refs)+sp.pending)
	}
	if sp.bytes+size > sp.maxBytes || sp.bytes >= sp.maxBytes {
		return fmt.Errorf("%w: %d bytes wait for the node", errSpoolFull, sp.bytes)
	}
	return nil
}

// reception is one message being written into the spool.
type reception struct {
	sp       *spool
	id       string
	f        *os.File
	n        int64 // bytes written and counted against the spool
	head     []byte
	headFull bool
}

const receptionHeadBytes = 64 << 10

// begin starts a reception, or says that the spool is full.
func (sp *spool) begin() (*reception, error) {
	sp.mu.Lock()
	if len(sp.refs)+sp.pending >= sp.maxMessages || sp.bytes >= sp.maxBytes {
		sp.mu.Unlock()
		return nil, errSpoolFull
	}
	sp.pending++
	sp.mu.Unlock()
	id := fmt.Sprintf("%019d-%016x", time.Now().UnixNano(), rand.Uint64())
	f, err := os.OpenFile(sp.path(spoolTmp, id+".eml"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		sp.mu.Lock()
		sp.pending--
		sp.mu.Unlock()
		return nil, err
	}
	return &reception{sp: sp, id: id, f: f}, nil
}

// Write writes to the spool file, counting every byte against max_bytes
// as it comes.
func (r *reception) Write(p []byte) (int, error) {
	sp := r.sp
	sp.mu.Lock()
	if sp.bytes+int64(len(p)) > sp.maxBytes {
		sp.mu.Unlock()
		return 0, errSpoolFull
	}
	sp.bytes += int64(len(p))
	sp.mu.Unlock()
	r.n += int64(len(p))
	if !r.headFull {
		k := min(len(p), receptionHeadBytes-len(r.head))
		r.head = append(r.head, p[:k]...)
		r.headFull = len(r.head) >= receptionHeadBytes
	}
	return r.f.Write(p)
}

// abort drops the reception.
func (r *reception) abort() {
	_ = r.f.Close()
	_ = os.Remove(r.sp.path(spoolTmp, r.id+".eml"))
	r.sp.mu.Lock()
	r.sp.bytes -= r.n
	r.sp.pending--
	r.sp.mu.Unlock()
}

// commit makes the message durable with one entry per destination, and
// returns only once it is: then, and only then, may the server say 250.
func (r *reception) commit(base entryMeta, dests []destination) (err error) {
	sp := r.sp
	var tmps []string
	defer func() {
		if err != nil {
			for _, t := range tmps {
				_ = os.Remove(t)
			}
			r.abort()
		}
	}()
	if err := r.f.Sync(); err != nil {
		return err
	}
	if err := r.f.Close(); err != nil {
		return err
	}
	base.Message = r.id
	base.Size = r.n
	base.From, base.Subject, base.MessageID = headerSummary(r.head, !r.headFull)
	names := make([]string, len(dests))
	metas := make([]entryMeta, len(dests))
	for k, d := range dests {
		m := base
		m.Destination = d.eid
		m.Recipients = d.rcpts
		data, err := json.Marshal(m)
		if err != nil {
			return err
		}
		names[k] = fmt.Sprintf("%s-%d", r.id, k)
		metas[k] = m
		tmp := sp.path(spoolTmp, names[k]+".json")
		tmps = append(tmps, tmp)
		if err := writeFileSync(tmp, append(data, '\n')); err != nil {
			return err
		}
	}
	if err := os.Rename(sp.path(spoolTmp, r.id+".eml"), sp.path(spoolMsgs, r.id+".eml")); err != nil {
		return err
	}
	tmps = append(tmps, sp.path(spoolMsgs, r.id+".eml"))
	for k, n := range names {
		if err := os.Rename(sp.path(spoolTmp, n+".json"), sp.path(spoolMsgs, n+".json")); err != nil {
			return err
		}
		tmps[k] = sp.path(spoolMsgs, n+".json")
	}
	if err := syncDir(sp.path(spoolMsgs)); err != nil {
		return err
	}
	sp.mu.Lock()
	sp.pending--
	sp.sizes[r.id] = r.n
	sp.refs[r.id] = len(names)
	for k, n := range names {
		sp.entries[n] = &entry{name: n, meta: metas[k]}
	}
	sp.mu.Unlock()
	select {
	case sp.arrivals <- struct{}{}:
	default:
	}
	return nil
}

// headerSummary reads From, Subject and Message-ID from the start of a
// message, decoding encoded words; empty where they are missing.
func headerSummary(head []byte, complete bool) (from, subject, msgID string) {
	fields, _, err := scanFields(head, complete)
	if err != nil {
		// Not strict enough for Deliver's test, perhaps, but mail.
		m, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return "", "", ""
		}
		return decodeWords(m.Header.Get("From")), decodeWords(m.Header.Get("Subject")), m.Header.Get("Message-Id")
	}
	for _, f := range fields {
		switch strings.ToLower(f.name) {
		case "from":
			from = decodeWords(f.value())
		case "subject":
			subject = decodeWords(f.value())
		case "message-id":
			msgID = f.value()
		}
	}
	return from, subject, msgID
}

func decodeWords(s string) string {
	d := mime.WordDecoder{}
	if out, err := d.DecodeHeader(s); err == nil {
		s = out
	}
	return truncate(strings.ToValidUTF8(s, "\uFFFD"), 900)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

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

// ready lists the entries that may be offered now, oldest first, and
// leases none of them yet.
func (sp *spool) ready(now time.Time) []*entry {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]*entry, 0, len(sp.entries))
	for n, e := range sp.entries {
		if until, ok := sp.leases[n]; ok && now.Before(until) {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	return out
}

// lease reserves an entry for d unless it is reserved, or gone.
func (sp *spool) lease(name string, d time.Duration) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	now := time.Now()
	if _, ok := sp.entries[name]; !ok {
		return false
	}
	if until, ok := sp.leases[name]; ok && now.Before(until) {
		return false
	}
	sp.leases[name] = now.Add(d)
	return true
}

func (sp *spool) unlease(name string) {
	sp.mu.Lock()
	delete(sp.leases, name)
	sp.mu.Unlock()
}

// holdFor keeps an entry from being offered for d.
func (sp *spool) holdFor(name string, d time.Duration) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if _, ok := sp.entries[name]; !ok {
		return false
	}
	sp.leases[name] = time.Now().Add(d)
	return true
}

func (sp *spool) warnOnce(name, msg string) {
	sp.mu.Lock()
	first := !sp.warned[name] && len(sp.warned) < 10000
	if first {
		sp.warned[name] = true
	}
	sp.mu.Unlock()
	if first {
		sp.log.Warn(msg, zap.String("entry", name))
	}
}

// remove deletes an entry (Ack), and its message with its last entry.
func (sp *spool) remove(name string) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e, ok := sp.entries[name]
	if !ok {
		return nil // acknowledged twice: gone either way
	}
	if err := os.Remove(sp.path(spoolMsgs, name+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	sp.forgetLocked(e)
	return syncDir(sp.path(spoolMsgs))
}

// forgetLocked drops an entry whose file is gone, and its message if it
// was the last entry.
func (sp *spool) forgetLocked(e *entry) {
	delete(sp.entries, e.name)
	delete(sp.leases, e.name)
	id := e.meta.Message
	sp.refs[id]--
	if sp.refs[id] > 0 {
		return
	}
	delete(sp.refs, id)
	if err := os.Remove(sp.path(spoolMsgs, id+".eml")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Left behind; the next start removes it, having no entries.
		sp.log.Warn("cannot remove a delivered message from the spool", zap.String("message", id), zap.Error(err))
	}
	sp.bytes -= sp.sizes[id]
	delete(sp.sizes, id)
}

// reject moves an entry to rejected/: its message (a hard link), its
// JSON, and the reason, written first.
func (sp *spool) reject(name, reason string) (*entry, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e, ok := sp.entries[name]
	if !ok {
		return nil, nil // gone already
	}
	note := fmt.Sprintf("%s\n\nrefused by the mulegate node at %s; destination %s, recipients %s, from <%s>, received %s\n",
		reason, time.Now().UTC().Format(time.RFC3339), e.meta.Destination, strings.Join(e.meta.Recipients, ", "),
		e.meta.MailFrom, e.meta.Received.UTC().Format(time.RFC3339))
	tmp := sp.path(spoolTmp, name+reasonSuffix)
	if err := writeFileSync(tmp, []byte(note)); err != nil {
		return nil, fmt.Errorf("writing the reason: %w", err)
	}
	if err := os.Rename(tmp, sp.path(spoolRejected, name+reasonSuffix)); err != nil {
		return nil, err
	}
	if err := os.Link(sp.path(spoolMsgs, e.meta.Message+".eml"), sp.path(spoolRejected, name+".eml")); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("keeping the rejected message: %w", err)
	}
	if err := syncDir(sp.path(spoolRejected)); err != nil {
		return nil, err
	}
	if err := os.Rename(sp.path(spoolMsgs, name+".json"), sp.path(spoolRejected, name+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := syncDir(sp.path(spoolRejected)); err != nil {
		return nil, err
	}
	sp.forgetLocked(e)
	return e, syncDir(sp.path(spoolMsgs))
}

// open opens an entry's message for reading.
func (sp *spool) open(e *entry) (*os.File, int64, error) {
	f, err := os.OpenFile(sp.path(spoolMsgs, e.meta.Message+".eml"), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// check tells whether the spool directory is still there and writable.
func (sp *spool) check() error {
	const wOK = 2
	if err := syscall.Access(sp.path(spoolMsgs), wOK); err != nil {
		return fmt.Errorf("spool %s: %w", sp.path(spoolMsgs), err)
	}
	return nil
}

// parseReceipt checks that a receipt is an entry name.
func parseReceipt(r string) (string, error) {
	if !entryName.MatchString(r) {
		return "", fmt.Errorf("%w: receipt %q is not a spool entry name", plugins.ErrInvalid, r)
	}
	return r, nil
}
