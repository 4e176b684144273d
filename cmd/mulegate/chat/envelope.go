package chat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The chat message format, version 1.
//
// A chat message is one bundle to the group endpoint (dtn://~GROUP/chat).
// Its payload is a header line, then the body:
//
//	{"chat":1,"kind":"text"}\n
//	hello everyone
//
//	{"chat":1,"kind":"file","name":"map.png"}\n
//	<the file's bytes>
//
// The header is a JSON object on one line (at most MaxHeader bytes,
// newline included): "chat" is the format version (1), "kind" is "text" or
// "file", and a file carries its "name" (a suggestion only: receivers make
// it safe, see incoming.SafeName). A text body is UTF-8, at most MaxText
// bytes. A file body is the file, streamed: its length is the payload's
// length minus the header's.
//
// Nothing in the envelope says who sent it: the sender shown is the
// bundle's source node, which signs the bundle (BPSec). The UI marks the
// messages whose signature the local node verified.

// Version is the format version this package writes and reads.
const Version = 1

// MaxHeader bounds the header line, newline included.
const MaxHeader = 4096

// MaxText bounds a text message's body.
const MaxText = 64 << 10

// Kinds of message.
const (
	KindText = "text"
	KindFile = "file"
)

// Header is a message's first line.
type Header struct {
	Version int    `json:"chat"`
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
}

// ErrNotChat is a payload that is not a chat message (another application
// sent to the group endpoint, or a newer format).
var ErrNotChat = errors.New("not a mulegate chat message")

// EncodeHeader returns h's header line.
func EncodeHeader(h Header) ([]byte, error) {
	if h.Version == 0 {
		h.Version = Version
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if len(b) > MaxHeader {
		return nil, fmt.Errorf("chat header of %d bytes: at most %d (a shorter file name?)", len(b), MaxHeader)
	}
	return b, nil
}

func (h Header) check() error {
	if h.Version != Version {
		return fmt.Errorf("%w: format version %d, this mulegate reads %d", ErrNotChat, h.Version, Version)
	}
	switch h.Kind {
	case KindText:
		if h.Name != "" {
			return fmt.Errorf("%w: a text message with a file name", ErrNotChat)
		}
	case KindFile:
		if h.Name == "" {
			return fmt.Errorf("%w: a file without a name", ErrNotChat)
		}
		if !utf8.ValidString(h.Name) {
			return fmt.Errorf("%w: a file name that is not UTF-8", ErrNotChat)
		}
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrNotChat, h.Kind)
	}
	return nil
}

// TextPayload is a text message's whole payload.
func TextPayload(text string) ([]byte, error) {
	if len(text) > MaxText {
		return nil, fmt.Errorf("a message of %d bytes: at most %d (share a file instead)", len(text), MaxText)
	}
	if !utf8.ValidString(text) {
		return nil, errors.New("a message must be UTF-8 text")
	}
	h, err := EncodeHeader(Header{Kind: KindText})
	if err != nil {
		return nil, err
	}
	return append(h, text...), nil
}

// DecodeHeader reads a message's header line from r, leaving r at the
// body. Any payload that is not a version-1 chat message is ErrNotChat.
func DecodeHeader(r *bufio.Reader) (Header, error) {
	var h Header
	line, err := readLine(r, MaxHeader)
	if err != nil {
		return h, err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrNotChat, err)
	}
	if dec.More() {
		return h, fmt.Errorf("%w: header: more than one JSON value", ErrNotChat)
	}
	return h, h.check()
}

// readLine reads up to and including '\n', at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("%w: no header line in the first %d bytes", ErrNotChat, max)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("%w: the payload ends before its header line does", ErrNotChat)
		default:
			return nil, err
		}
	}
}

// ReadText reads a text message's body: at most MaxText bytes of UTF-8.
// Control characters other than newline and tab are dropped, so that a
// message cannot move the cursor or recolour the screen.
func ReadText(r io.Reader) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxText+1))
	if err != nil {
		return "", err
	}
	if len(data) > MaxText {
		return "", fmt.Errorf("%w: a text of more than %d bytes", ErrNotChat, MaxText)
	}
	if !utf8.Valid(data) {
		return "", fmt.Errorf("%w: a text that is not UTF-8", ErrNotChat)
	}
	return Clean(string(data)), nil
}

// Clean drops control characters (escape sequences included) except
// newline and tab, which it turns into spaces where a line is shown.
func Clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return -1
		case r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return -1 // zero-width and bidirectional controls
		}
		return r
	}, s)
}
