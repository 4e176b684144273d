package sdk_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mulegate/mulegate/plugins/sdk"
)

// endCheckReader is a source that fails at its end, as the object store's
// reader does when the digest does not match.
type endCheckReader struct {
	r   io.Reader
	err error
}

func (e endCheckReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, e.err
	}
	return n, err
}

func TestExactPayload(t *testing.T) {
	bad := errors.New("digest mismatch")
	tests := []struct {
		name    string
		src     io.Reader
		length  int64
		wantErr string // "" for success
	}{
		{"exact", strings.NewReader("hello"), 5, ""},
		{"exact, one byte at a time", iotest.OneByteReader(strings.NewReader("hello")), 5, ""},
		{"exact, data and EOF together", iotest.DataErrReader(strings.NewReader("hello")), 5, ""},
		{"empty", strings.NewReader(""), 0, ""},
		{"short", strings.NewReader("hell"), 5, "short"},
		{"long", strings.NewReader("hello!"), 5, "longer"},
		{"empty, but not", strings.NewReader("!"), 0, "longer"},
		{"read error", io.MultiReader(strings.NewReader("he"), iotest.ErrReader(errors.New("boom"))), 5, "boom"},
		{"fails at its end", endCheckReader{strings.NewReader("hello"), bad}, 5, "digest mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The way the plugin boundary reads a payload: exactly the
			// announced length, never asking for more.
			r := sdk.ExactPayload(tc.src, tc.length)
			buf := make([]byte, tc.length)
			_, err := io.ReadFull(r, buf)
			if err == nil && tc.length == 0 {
				_, err = r.Read(nil) // ReadFull asks nothing of an empty reader
				if err == io.EOF {
					err = nil
				}
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ReadFull: %v", err)
				}
				if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("after the end: %d, %v; want 0, EOF", n, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadFull = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
