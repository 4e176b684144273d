package nats

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mulegate/mulegate/plugins/sdk"
)

func TestFullReader(t *testing.T) {
	src := iotest.HalfReader(bytes.NewReader(bytes.Repeat([]byte("x"), 10)))
	f := fullReader{sdk.ExactPayload(src, 10)}
	buf := make([]byte, 4)
	var sizes []int
	for {
		n, err := f.Read(buf)
		if n > 0 {
			sizes = append(sizes, n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(sizes) != 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 {
		t.Errorf("chunks %v, want [4 4 2]", sizes)
	}
	short := fullReader{sdk.ExactPayload(strings.NewReader("abc"), 10)}
	if _, err := io.ReadAll(short); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short source: %v, want ErrUnexpectedEOF", err)
	}
}
