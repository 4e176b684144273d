// Package chat is `mulegate chat`: a group of friends, each running a node,
// exchanging text and files through a group endpoint (dtn://~GROUP/chat)
// that every member registers. Messages travel like any bundle, carried by
// whichever node meets whichever, so a message may arrive hours after it was
// written; each line shows its age and the hops it took.
//
// The message format is in envelope.go. Messages are signed by the
// sender's node; the
// screen says so.
package chat

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/cmd/mulegate/incoming"
	"github.com/mulegate/mulegate/gateway/api"
)

// Options configure a chat session.
type Options struct {
	Client *api.Client
	// Group is the group's name; the chat endpoint is dtn://~GROUP/chat.
	Group string
	// Incoming is where shared files are saved.
	Incoming string
	// History is the file every message is appended to (JSON lines).
	History string
	// Lifetime of the messages sent.
	Lifetime time.Duration
	// In and Out are the terminal; nil means stdin and stdout.
	In  io.Reader
	Out io.Writer
}

// Endpoint is the chat endpoint of group.
func Endpoint(group string) (bundle.EID, error) {
	if group == "" || strings.ContainsAny(group, "/~:@ ") {
		return bundle.EID{}, fmt.Errorf("group %q: use letters, digits, - and . (e.g. campfire)", group)
	}
	e, err := bundle.ParseEID("dtn://~" + group + "/chat")
	if err != nil {
		return bundle.EID{}, fmt.Errorf("group %q: %w", group, err)
	}
	return e, nil
}

// session is what the screen talks to: the node's API, the group, the
// incoming directory and the history file.
type session struct {
	c        *api.Client
	group    string
	ep       bundle.EID
	me       bundle.EID // this node
	incoming string
	history  string
	lifetime time.Duration
	histMu   sync.Mutex
}

// message is one chat message, as shown and as kept in the history file.
type message struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"` // when it was written (the sender's clock), or received
	From string    `json:"from"` // the source node's name
	// Verified is who signed the message, as this node verified it (a
	// group CA's member name, or the node ID), or "" when unverified.
	Verified string    `json:"verified,omitempty"`
	Hops     int64     `json:"hops"` // -1: unknown
	AgeMS    int64     `json:"age_ms"`
	Kind     string    `json:"kind"` // text, file, other
	Text     string    `json:"text,omitempty"`
	Name     string    `json:"name,omitempty"`  // a shared file's name, as sent
	Path     string    `json:"path,omitempty"`  // where it was saved
	Bytes    int64     `json:"bytes,omitempty"` // a shared file's size
	Received time.Time `json:"received"`
}

// verifiedSigner turns the node's signature status into who signed:
// "valid:campfire/alice (ca)" → "campfire/alice"; "signed-here" → "you".
func verifiedSigner(status string) string {
	if status == "signed-here" {
		return "you"
	}
	who, ok := strings.CutPrefix(status, "valid:")
	if !ok {
		return ""
	}
	who, _, _ = strings.Cut(who, " (")
	return Clean(who)
}

// take reads one delivery, saves what it carries, records it in the
// history and acknowledges it — in that order, so that a crash before the
// acknowledgement means the message comes again rather than never.
func (s *session) take(ctx context.Context, d api.Delivery) (message, error) {
	m := message{ID: d.ID, Time: d.Created, Hops: -1, AgeMS: d.AgeMS, Received: time.Now(), Kind: "other"}
	if m.Time.IsZero() {
		m.Time = d.Received
	}
	if src, err := bundle.ParseEID(d.Source); err == nil {
		m.From = Clean(src.NodeName())
	}
	if d.HopCount != nil {
		m.Hops = int64(d.HopCount.Count)
	}
	m.Verified = verifiedSigner(d.Signature)
	p, err := s.c.OpenPayload(ctx, d.ID)
	if err != nil {
		return m, err
	}
	defer p.Close()
	cr := &crcReader{r: p, h: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	br := bufio.NewReaderSize(cr, MaxHeader)
	h, herr := DecodeHeader(br)
	checkAll := func(n int64) error {
		if cr.n != int64(d.Length) {
			return fmt.Errorf("message %s: %d of %d payload bytes arrived", d.ID, cr.n, d.Length)
		}
		if p.HasCRC && cr.h.Sum32() != p.CRC32C {
			return fmt.Errorf("message %s: the payload's checksum does not match", d.ID)
		}
		return nil
	}
	switch {
	case herr != nil && errors.Is(herr, ErrNotChat):
		// Some other application's bundle at the chat endpoint: note it and
		// take it, or it would come back on every connection.
		m.Text = fmt.Sprintf("(a %d-byte bundle that is not a chat message: %v)", d.Length, herr)
	case herr != nil:
		return m, herr
	case h.Kind == KindText:
		text, err := ReadText(br)
		switch {
		case errors.Is(err, ErrNotChat):
			m.Text = fmt.Sprintf("(a message that breaks the chat format: %v)", err)
		case err != nil:
			return m, err
		default:
			if err := checkAll(0); err != nil {
				return m, err
			}
			m.Kind, m.Text = KindText, text
		}
	case h.Kind == KindFile:
		path, n, err := incoming.Save(s.incoming, h.Name, br, checkAll)
		if err != nil {
			return m, fmt.Errorf("saving %q from %s: %w", h.Name, m.From, err)
		}
		m.Kind, m.Name, m.Path, m.Bytes = KindFile, Clean(h.Name), path, n
	}
	if err := s.record(m); err != nil {
		return m, err
	}
	if err := s.c.Ack(ctx, s.ep, d.ID); err != nil {
		return m, fmt.Errorf("acknowledging %s: %w", d.ID, err)
	}
	return m, nil
}

// record appends m to the history file.
func (s *session) record(m message) error {
	if s.history == "" {
		return nil
	}
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.history), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(s.history, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(m)
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// lastHistory returns the last n messages of the history file.
func (s *session) lastHistory(n int) ([]message, error) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	f, err := os.Open(s.history)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []message
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m message
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
			if len(out) > n {
				out = out[1:]
			}
		}
	}
	return out, sc.Err()
}

// sendText sends a text message to the group.
func (s *session) sendText(ctx context.Context, text string) error {
	payload, err := TextPayload(text)
	if err != nil {
		return err
	}
	_, err = s.c.Send(ctx, api.SendParams{Destination: s.ep, Lifetime: s.lifetime}, strings.NewReader(string(payload)), int64(len(payload)))
	return err
}

// share sends a file to the group, streamed from disk.
func (s *session) share(ctx context.Context, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	h, err := EncodeHeader(Header{Kind: KindFile, Name: filepath.Base(path)})
	if err != nil {
		return 0, err
	}
	body := io.MultiReader(strings.NewReader(string(h)), io.LimitReader(f, st.Size()))
	_, err = s.c.Send(ctx, api.SendParams{Destination: s.ep, Lifetime: s.lifetime}, body, int64(len(h))+st.Size())
	return st.Size(), err
}

type crcReader struct {
	r io.Reader
	h hash.Hash32
	n int64
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
