package chat

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTextRoundTrip(t *testing.T) {
	p, err := TextPayload("hello, ünïcode")
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\"chat\":1,\"kind\":\"text\"}\nhello, ünïcode"; string(p) != want {
		t.Errorf("payload %q, want %q", p, want)
	}
	br := bufio.NewReader(bytes.NewReader(p))
	h, err := DecodeHeader(br)
	if err != nil || h.Kind != KindText {
		t.Fatalf("%+v %v", h, err)
	}
	text, err := ReadText(br)
	if err != nil || text != "hello, ünïcode" {
		t.Fatalf("%q %v", text, err)
	}
	if _, err := TextPayload(strings.Repeat("x", MaxText+1)); err == nil {
		t.Error("an over-long text was accepted")
	}
}

func TestFileHeader(t *testing.T) {
	h, err := EncodeHeader(Header{Kind: KindFile, Name: "map.png"})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte{0, 1, 2, '\n', 3}
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(h), bytes.NewReader(body)))
	got, err := DecodeHeader(br)
	if err != nil || got != (Header{Version: 1, Kind: KindFile, Name: "map.png"}) {
		t.Fatalf("%+v %v", got, err)
	}
	rest, _ := io.ReadAll(br)
	if !bytes.Equal(rest, body) {
		t.Errorf("body %q", rest)
	}
	if _, err := EncodeHeader(Header{Kind: KindFile}); err == nil {
		t.Error("a file without a name was encoded")
	}
	if _, err := EncodeHeader(Header{Kind: KindFile, Name: strings.Repeat("n", MaxHeader)}); err == nil {
		t.Error("a header over MaxHeader was encoded")
	}
}

// Payloads that are not chat messages are ErrNotChat, whatever they hold.
func TestNotChat(t *testing.T) {
	for _, p := range []string{
		"", "hello\n", "{}\n", "{\"chat\":2,\"kind\":\"text\"}\n", "{\"chat\":1,\"kind\":\"video\"}\n",
		"{\"chat\":1,\"kind\":\"text\",\"name\":\"x\"}\n", "{\"chat\":1,\"kind\":\"file\"}\n",
		"{\"chat\":1,\"kind\":\"text\",\"from\":\"alice\"}\n", "{\"chat\":1,\"kind\":\"text\"} {}\n",
		"{\"chat\":1,\"kind\":\"text\"}", strings.Repeat(" ", MaxHeader) + "{\"chat\":1,\"kind\":\"text\"}\n",
	} {
		if _, err := DecodeHeader(bufio.NewReader(strings.NewReader(p))); !errors.Is(err, ErrNotChat) {
			t.Errorf("%q: %v, want ErrNotChat", p, err)
		}
	}
	br := bufio.NewReader(strings.NewReader("{\"chat\":1,\"kind\":\"text\"}\n\xff\xfe"))
	if _, err := DecodeHeader(br); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadText(br); !errors.Is(err, ErrNotChat) {
		t.Errorf("a text that is not UTF-8: %v", err)
	}
}

// Text shown on the screen cannot carry escape sequences.
func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                     "plain",
		"two\nlines\ttab":           "two lines tab",
		"\x1b[2J\x1b[31mred\x1b[0m": "[2J[31mred[0m",
		"bell\a":                    "bell",
		"rtl\u202eoverride":         "rtloverride",
		"c1\u009bcontrol":           "c1control",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatMessage(t *testing.T) {
	at := time.Date(2030, 1, 2, 15, 4, 5, 0, time.Local)
	for _, c := range []struct {
		m    message
		want string
	}{
		{message{Time: at, From: "alice", Hops: 1, AgeMS: 4200, Kind: KindText, Text: "hi"}, "15:04:05 alice (unverified) (1 hop, 4s old): hi"},
		{message{Time: at, From: "alice", Verified: "campfire/alice", Hops: 1, AgeMS: 4200, Kind: KindText, Text: "hi"}, "15:04:05 alice ✓campfire/alice (1 hop, 4s old): hi"},
		{message{Time: at, From: "bob", Hops: 3, AgeMS: 2*3600e3 + 5*60e3, Kind: KindText, Text: "late"}, "15:04:05 bob (unverified) (3 hops, 2h05m old): late"},
		{message{Time: at, From: "bob", Hops: -1, AgeMS: 3 * 86400e3, Kind: KindFile, Name: "a.txt", Bytes: 2048, Path: "/in/a.txt"}, "15:04:05 bob (unverified) (? hops, 3d00h old) shared a.txt (2.0 KiB), saved as /in/a.txt"},
	} {
		if got := formatMessage(c.m, at); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// Chat payloads come from any node of the group: decoding never panics,
// what it accepts is a valid header that encodes back to itself, and text
// comes out clean.
func FuzzDecode(f *testing.F) {
	text, _ := TextPayload("hello")
	file, _ := EncodeHeader(Header{Kind: KindFile, Name: "../../x"})
	for _, s := range [][]byte{text, append(file, 1, 2, 3), []byte("{\"chat\":1}\n"), []byte("\n"), []byte("{\"chat\":1,\"kind\":\"text\"}\n\x1b[2J"), bytes.Repeat([]byte("{"), 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		h, err := DecodeHeader(br)
		if err != nil {
			return
		}
		if h.Version != Version || (h.Kind != KindText && h.Kind != KindFile) || (h.Kind == KindFile && h.Name == "") {
			t.Fatalf("accepted %+v", h)
		}
		if h.Kind == KindText {
			s, err := ReadText(br)
			if err == nil {
				if !utf8.ValidString(s) || strings.ContainsAny(s, "\x1b\n\r\x00") {
					t.Fatalf("text %q", s)
				}
			}
		}
		again, err := EncodeHeader(h)
		if err != nil {
			return // a name too long to send again is still readable
		}
		if h2, err := DecodeHeader(bufio.NewReader(bytes.NewReader(again))); err != nil || h2 != h {
			t.Fatalf("re-encoding %+v: %+v %v", h, h2, err)
		}
	})
}
