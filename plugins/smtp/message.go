package smtp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Headers the adapter writes on every message it sends. Ones of these
// names already in a payload's header block are dropped: only the adapter
// says what they say.
const (
	// HeaderBundleID is the bundle's ID.
	HeaderBundleID = "X-Mulegate-Bundle-ID"
	// HeaderSource is the bundle's source EID.
	HeaderSource = "X-Mulegate-Source"
	// HeaderDestination is the bundle's destination EID.
	HeaderDestination = "X-Mulegate-Destination"
	// HeaderSignature is the node's verdict on the bundle's signature
	// ("valid:campfire/alice", "unsigned", …), or "unchecked".
	HeaderSignature = "X-Mulegate-Signature"
	// HeaderCreated is the bundle's creation time, RFC 3339 in UTC with
	// milliseconds; absent when the source had no clock.
	HeaderCreated = "X-Mulegate-Created"

	headerPrefix = "x-mulegate-"
)

// maxLine is RFC 5322's limit on a line, without its CRLF.
const maxLine = 998

// maxRecipients bounds the envelope recipients of one bundle's message.
const maxRecipients = 1000

// errPermanent marks what Deliver answers with Reject: the bundle itself
// cannot make a message, and retrying cannot change that.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

// mailFields are header fields of which at least one must be in a block
// for the payload to count as a message: a note that happens to start with
// "Note: …" and a blank line is a body.
var mailFields = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "subject": true, "date": true,
	"message-id": true, "mime-version": true, "content-type": true, "reply-to": true,
	"sender": true, "in-reply-to": true, "references": true,
}

// field is one header field as it appeared: its name and its raw lines,
// continuation lines and line ends included.
type field struct {
	name string
	raw  []byte
}

// value is the field's value, unfolded and trimmed.
func (f field) value() string {
	v := f.raw[len(f.name)+1:]
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// ScanHeader tells whether p starts with an RFC 5322 header block and
// returns the block's length, including the empty line that ends it. When
// complete is set, p is the whole payload and a block may also end where
// p ends (a message with no body). A block is: one or more fields, each a
// name of printable ASCII without ':' followed by ':' and a value in
// UTF-8, continued on lines that start with a space or a tab; lines of at
// most 998 bytes ending in CRLF or LF, no bare CR, no NUL; and at least
// one field that mail has (From, To, Subject, Date, Message-ID,
// MIME-Version, Content-Type, …).
func ScanHeader(p []byte, complete bool) (n int, ok bool) {
	fields, n, err := scanFields(p, complete)
	return n, err == nil && len(fields) > 0
}

var errNoHeader = errors.New("no header block")

func scanFields(p []byte, complete bool) ([]field, int, error) {
	var fields []field
	mailish := false
	off := 0
	for {
		rest := p[off:]
		if len(rest) == 0 {
			if complete && len(fields) > 0 && mailish {
				return fields, off, nil
			}
			return nil, 0, errNoHeader
		}
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, 0, errNoHeader // a line longer than what was read, or no end
		}
		line := rest[:nl]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		end := off + nl + 1
		if len(line) == 0 {
			if len(fields) == 0 || !mailish {
				return nil, 0, errNoHeader
			}
			return fields, end, nil
		}
		if len(line) > maxLine || bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 || !utf8.Valid(line) {
			return nil, 0, errNoHeader
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				return nil, 0, errNoHeader
			}
			f := &fields[len(fields)-1]
			f.raw = p[off-len(f.raw) : end]
			off = end
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, 0, errNoHeader
		}
		for _, c := range line[:colon] {
			if c < 33 || c > 126 {
				return nil, 0, errNoHeader
			}
		}
		name := string(line[:colon])
		if mailFields[strings.ToLower(name)] {
			mailish = true
		}
		fields = append(fields, field{name: name, raw: p[off:end]})
		off = end
	}
}

// textClass is what the adapter knows about a body it wraps.
type textClass int

const (
	// classBinary: anything else, or too long to look at whole: base64.
	classBinary textClass = iota
	// class7Bit: ASCII text in lines of at most 998 bytes.
	class7Bit
	// class8Bit: UTF-8 text in lines of at most 998 bytes.
	class8Bit
)

// classify looks at a whole body.
func classify(p []byte) textClass {
	if !utf8.Valid(p) {
		return classBinary
	}
	ascii := true
	lineLen := 0
	for i, c := range p {
		switch {
		case c == '\n':
			lineLen = 0
			continue
		case c == '\r':
			if i+1 >= len(p) || p[i+1] != '\n' {
				return classBinary // a bare CR does not survive SMTP
			}
			continue
		case c < 0x20 && c != '\t', c == 0x7f:
			return classBinary
		case c >= 0x80:
			ascii = false
		}
		lineLen++
		if lineLen > maxLine {
			return classBinary
		}
	}
	if ascii {
		return class7Bit
	}
	return class8Bit
}

// composeConfig is what a message is made with: the configuration, with
// the route's options over it.
type composeConfig struct {
	domain         string
	from           string // template
	envelopeFrom   string // template; "" : from the message
	subject        string // template
	to             string // route option: recipients, comma-separated
	format         string
	contentType    string
	maxHeaderBytes int
}

// Envelope is a message's SMTP envelope.
type Envelope struct {
	From string
	To   []string
}

// prepared is a bundle made ready to send: its envelope and header
// decided, its body still unread in the payload.
type prepared struct {
	meta     plugins.Meta
	env      Envelope
	full     bool
	fields   []field // the message's own header fields, when full
	class    textClass
	body     io.Reader
	bodyLen  int64 // bytes of payload left for the body
	domain   string
	fromHdr  string // wrapped: From
	toHdr    string // wrapped: To
	subject  string // wrapped: Subject, encoded
	ctype    string // wrapped: Content-Type
	hasMsgID bool
	hasDate  bool
	hasFrom  bool
}

// prepare reads a bundle's header block, if it has one, from br (whose
// buffer holds at least cfg.maxHeaderBytes), decides the envelope, and
// leaves the body in br. It returns a *permanentError for a bundle that
// cannot make a message.
func prepare(br *bufio.Reader, meta plugins.Meta, cfg composeConfig) (*prepared, error) {
	p := &prepared{meta: meta, domain: cfg.domain, body: br, bodyLen: meta.PayloadLength}
	peekN := int(min(int64(cfg.maxHeaderBytes), meta.PayloadLength))
	peek, err := br.Peek(peekN)
	if err != nil {
		return nil, fmt.Errorf("reading the payload: %w", err)
	}
	whole := int64(peekN) == meta.PayloadLength
	if cfg.format != FormatBody {
		fields, n, err := scanFields(peek, whole)
		switch {
		case err == nil:
			p.full = true
			// Copy: the peeked bytes are gone once the buffer moves on.
			buf := bytes.Clone(peek[:n])
			base := 0
			for i := range fields {
				l := len(fields[i].raw)
				fields[i].raw = buf[base : base+l]
				base += l
			}
			p.fields = fields
			if _, err := br.Discard(n); err != nil {
				return nil, err
			}
			p.bodyLen -= int64(n)
		case cfg.format == FormatMessage:
			return nil, permanent("the payload does not start with a mail header block (format %q); send a complete RFC 5322 message, or route it with format \"auto\" or \"body\"", FormatMessage)
		}
	}
	if !p.full && whole {
		p.class = classify(peek)
	}

	// Recipients: the route's "to", else the message's own To, Cc and
	// Bcc, else the address in the destination EID.
	var rcpts []*mail.Address
	if cfg.to != "" {
		l, err := mail.ParseAddressList(cfg.to)
		if err != nil {
			return nil, permanent("the route's to option %q is not a list of addresses: %v", cfg.to, err)
		}
		rcpts = l
	} else if p.full {
		for _, f := range p.fields {
			switch strings.ToLower(f.name) {
			case "to", "cc", "bcc":
				v := f.value()
				if v == "" || v == "undisclosed-recipients:;" {
					continue
				}
				l, err := mail.ParseAddressList(v)
				if err != nil {
					return nil, permanent("the message's %s header %q is not a list of addresses: %v", f.name, truncate(v, 200), err)
				}
				rcpts = append(rcpts, l...)
			}
		}
	}
	if len(rcpts) == 0 {
		if a := AddressFromDestination(meta.Destination); a != "" {
			addr, err := mail.ParseAddress(a)
			if err != nil {
				return nil, permanent("the destination %s names %q, which is not an email address: %v", meta.Destination, a, err)
			}
			rcpts = []*mail.Address{addr}
		}
	}
	if len(rcpts) == 0 {
		return nil, permanent("no recipient: the route gives no to option, the message names none, and the destination %s names no address (as in dtn://cloud/mail/alice@example.org)", meta.Destination)
	}
	if len(rcpts) > maxRecipients {
		return nil, permanent("%d recipients; at most %d", len(rcpts), maxRecipients)
	}
	seen := map[string]bool{}
	for _, a := range rcpts {
		if err := checkEnvelopeAddress(a.Address); err != nil {
			return nil, permanent("recipient %q: %v", a.Address, err)
		}
		if k := strings.ToLower(a.Address); !seen[k] {
			seen[k] = true
			p.env.To = append(p.env.To, a.Address)
		}
	}

	from, err := mail.ParseAddress(expand(cfg.from, meta, cfg.domain))
	if err != nil {
		return nil, permanent("the from address %q is not an email address: %v", expand(cfg.from, meta, cfg.domain), err)
	}
	p.env.From = from.Address
	if p.full {
		for _, f := range p.fields {
			switch strings.ToLower(f.name) {
			case "message-id":
				p.hasMsgID = true
			case "date":
				p.hasDate = true
			case "from":
				if !p.hasFrom {
					p.hasFrom = true
					if l, err := mail.ParseAddressList(f.value()); err == nil && len(l) > 0 {
						p.env.From = l[0].Address
					}
				}
			}
		}
	}
	if cfg.envelopeFrom != "" {
		ef := expand(cfg.envelopeFrom, meta, cfg.domain)
		a, err := mail.ParseAddress(ef)
		if err != nil {
			return nil, permanent("the envelope_from address %q is not an email address: %v", ef, err)
		}
		p.env.From = a.Address
	}
	if err := checkEnvelopeAddress(p.env.From); err != nil {
		return nil, permanent("sender %q: %v", p.env.From, err)
	}
	p.fromHdr = from.String()
	if !p.full {
		tos := make([]string, len(rcpts))
		for i, a := range rcpts {
			tos[i] = a.String()
		}
		p.toHdr = strings.Join(tos, ", ")
		p.subject = encodeHeader(truncate(expand(cfg.subject, meta, cfg.domain), 900))
		p.ctype = cfg.contentType
		if p.ctype == "" {
			if p.class == classBinary {
				p.ctype = "application/octet-stream"
			} else {
				p.ctype = "text/plain; charset=utf-8"
			}
		} else if _, _, err := mime.ParseMediaType(p.ctype); err != nil || strings.ContainsAny(p.ctype, "\r\n") {
			return nil, permanent("the route's content_type option %q is not a media type", cfg.contentType)
		}
	}
	return p, nil
}

// checkEnvelopeAddress refuses what cannot go between < and > in MAIL
// FROM or RCPT TO.
func checkEnvelopeAddress(a string) error {
	if a == "" || len(a) > 320 {
		return errors.New("empty or too long")
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c < 0x21 || c == '<' || c == '>' || c == 0x7f {
			return errors.New("has spaces, control characters or angle brackets")
		}
	}
	return nil
}

// encoding is how the body goes on the wire.
func (p *prepared) encoding(eightBit bool) string {
	switch {
	case p.class == class7Bit:
		return "7bit"
	case p.class == class8Bit && eightBit:
		return "8bit"
	}
	return "base64"
}

// header returns the header block to send, ending with the empty line.
// eightBit tells whether the server takes 8BITMIME.
func (p *prepared) header(eightBit bool) []byte {
	var b bytes.Buffer
	add := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	m := p.meta
	add(HeaderBundleID, headerSafe(m.BundleID))
	add(HeaderSource, headerSafe(m.Source))
	add(HeaderDestination, headerSafe(m.Destination))
	sig := m.SignatureStatus
	if sig == "" {
		sig = "unchecked"
	}
	add(HeaderSignature, encodeHeader(headerSafe(sig)))
	if t := m.Created(); !t.IsZero() {
		add(HeaderCreated, t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	date := m.Created()
	if date.IsZero() {
		date = time.Now()
	}
	if !p.full {
		add("From", p.fromHdr)
		add("To", p.toHdr)
		add("Subject", p.subject)
		add("Date", date.Format(time.RFC1123Z))
		add("Message-ID", MessageIDFor(m.BundleID, p.domain))
		add("MIME-Version", "1.0")
		add("Content-Type", p.ctype)
		add("Content-Transfer-Encoding", p.encoding(eightBit))
		b.WriteString("\r\n")
		return b.Bytes()
	}
	if !p.hasMsgID {
		add("Message-ID", MessageIDFor(m.BundleID, p.domain))
	}
	if !p.hasDate {
		add("Date", date.Format(time.RFC1123Z))
	}
	if !p.hasFrom {
		add("From", p.fromHdr)
	}
	for _, f := range p.fields {
		lower := strings.ToLower(f.name)
		if lower == "bcc" || strings.HasPrefix(lower, headerPrefix) {
			continue // Bcc is for the envelope only; ours are ours
		}
		b.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// estimate is about how many bytes the message takes, for SIZE and the
// size limits.
func (p *prepared) estimate(eightBit bool) int64 {
	h := int64(len(p.header(eightBit)))
	if p.encoding(eightBit) == "base64" {
		n := (p.bodyLen + 2) / 3 * 4
		return h + n + (n/76+1)*2
	}
	return h + p.bodyLen
}

// writeBody streams the body to w.
func (p *prepared) writeBody(w io.Writer, eightBit bool) error {
	if p.full || p.encoding(eightBit) != "base64" {
		_, err := io.Copy(w, p.body)
		return err
	}
	lw := &lineWrapper{w: w}
	enc := base64.NewEncoder(base64.StdEncoding, lw)
	if _, err := io.Copy(enc, p.body); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return lw.end()
}

// lineWrapper breaks base64 text into lines of 76 characters.
type lineWrapper struct {
	w   io.Writer
	col int
}

var crlf = []byte("\r\n")

func (l *lineWrapper) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 76-l.col)
		if _, err := l.w.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
		l.col += k
		if l.col == 76 {
			if _, err := l.w.Write(crlf); err != nil {
				return n, err
			}
			l.col = 0
		}
	}
	return n, nil
}

func (l *lineWrapper) end() error {
	if l.col == 0 {
		return nil
	}
	l.col = 0
	_, err := l.w.Write(crlf)
	return err
}

// headerSafe makes s one header line's worth: no line breaks, at most
// 900 bytes.
func headerSafe(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	return truncate(s, 900)
}

// truncate cuts s to at most n bytes on a character boundary, marking the
// cut with "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-3]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// encodeHeader encodes a value that is not plain ASCII as RFC 2047
// encoded words.
func encodeHeader(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || c < 0x20 && c != '\t' {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}

// Compose writes the message Deliver would send for a bundle (its header
// block, then its body, before SMTP's dot-stuffing) to w, and returns its
// envelope. It is Deliver without the server, for tests and tools.
// options are the route's options; eightBit says whether the server takes
// 8BITMIME.
func Compose(w io.Writer, meta plugins.Meta, payload io.Reader, cfg Config, options map[string]string, eightBit bool) (Envelope, error) {
	s, err := composeConfigFor(&cfg, options, meta)
	if err != nil {
		return Envelope{}, err
	}
	br := bufio.NewReaderSize(sdk.ExactPayload(payload, meta.PayloadLength), s.maxHeaderBytes)
	p, err := prepare(br, meta, s)
	if err != nil {
		return Envelope{}, err
	}
	if _, err := w.Write(p.header(eightBit)); err != nil {
		return Envelope{}, err
	}
	return p.env, p.writeBody(w, eightBit)
}

// composeConfigFor puts the route's options over the configuration.
func composeConfigFor(cfg *Config, options map[string]string, meta plugins.Meta) (composeConfig, error) {
	c := composeConfig{
		domain:         cfg.Domain,
		from:           cfg.From,
		envelopeFrom:   cfg.EnvelopeFrom,
		subject:        cfg.Subject,
		format:         cfg.Format,
		maxHeaderBytes: cfg.MaxHeaderBytes,
	}
	if c.maxHeaderBytes < 16 {
		c.maxHeaderBytes = defaultMaxHeaderBytes
	}
	if c.from == "" {
		c.from = defaultFrom
	}
	if c.subject == "" {
		c.subject = defaultSubject
	}
	if c.format == "" {
		c.format = FormatAuto
	}
	for k, v := range options {
		v = expand(v, meta, cfg.Domain)
		switch k {
		case "from":
			c.from = v
		case "envelope_from":
			c.envelopeFrom = v
		case "subject":
			if strings.ContainsAny(v, "\r\n") {
				return c, permanent("the route's subject option must be one line")
			}
			c.subject = v
		case "to":
			c.to = v
		case "format":
			switch v {
			case FormatAuto, FormatMessage, FormatBody:
				c.format = v
			default:
				return c, permanent(`the route's format option must be "auto", "message" or "body", not %q`, v)
			}
		case "content_type":
			c.contentType = v
		}
	}
	return c, nil
}
