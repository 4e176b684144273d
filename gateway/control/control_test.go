package control

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func testCert(t testing.TB, node string) (ed25519.PrivateKey, []byte) {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	u, _ := url.Parse(node)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func TestSummaryRoundTrip(t *testing.T) {
	held := make([]Digest, 100_000)
	for i := range held {
		held[i] = DigestOf(bundle.ID{Source: bundle.MustParseEID("dtn://a/x"), Creation: bundle.CreationTimestamp{Time: 1, Sequence: uint64(i)}})
	}
	key, der := testCert(t, "dtn://c/")
	n := Notice{Subject: bundle.ID{Source: bundle.MustParseEID("dtn://a/x"), Creation: bundle.CreationTimestamp{Time: 5}}, Destination: bundle.MustParseEID("dtn://c/"), DeliveredAt: 10, Expires: 99}
	if err := n.Sign(key, [][]byte{der}); err != nil {
		t.Fatal(err)
	}
	s := Summary{Epoch: 7, Seq: 0, Full: true, Held: held, Dropped: held[:2], Partials: []Partial{{Digest: held[3], Received: 12345}}, Notices: []Notice{n},
		Refused:  []Refusal{{Digest: held[4], Reason: bundle.ReasonFailedSecurity}, {Digest: held[5], Reason: bundle.ReasonDepletedStorage, Transient: true}},
		WantFull: true}
	data, err := MarshalSummary(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 1_700_000 {
		t.Errorf("a summary of 100,000 bundles takes %d bytes; want about 1.6 MB", len(data))
	}
	rec, err := bundle.UnmarshalAdminRecord(data)
	if err != nil || rec.Type != RecordSummary {
		t.Fatalf("admin record: %v %v", rec.Type, err)
	}
	got, err := UnmarshalSummary(rec.Content)
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != 7 || !got.Full || len(got.Held) != len(held) || got.Held[99_999] != held[99_999] || len(got.Dropped) != 2 || got.Partials[0] != s.Partials[0] {
		t.Fatalf("round trip changed the summary")
	}
	if !got.WantFull {
		t.Fatal("round trip lost WantFull")
	}
	if !slices.Equal(got.Refused, s.Refused) {
		t.Fatalf("round trip changed the refusals: got %+v, want %+v", got.Refused, s.Refused)
	}
	if _, err := got.Notices[0].Verify(); err != nil {
		t.Fatalf("notice lost its signature: %v", err)
	}
}

func TestNoticeVerify(t *testing.T) {
	key, der := testCert(t, "dtn://c/")
	otherKey, otherDer := testCert(t, "dtn://mallory/")
	subject := bundle.ID{Source: bundle.MustParseEID("dtn://a/x"), Creation: bundle.CreationTimestamp{Time: 5}}
	base := Notice{Subject: subject, Destination: bundle.MustParseEID("dtn://c/"), DeliveredAt: 10, Expires: 99}
	sign := func(n Notice, k ed25519.PrivateKey, chain []byte) Notice {
		if err := n.Sign(k, [][]byte{chain}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		name string
		n    Notice
		want error
	}{
		{"valid", sign(base, key, der), nil},
		{"unsigned", base, ErrNoticeUnsigned},
		{"signed by another node", sign(base, otherKey, otherDer), ErrNoticeSigner},
		{"forged: other key, destination's certificate", sign(base, otherKey, der), ErrNoticeSignature},
		{"tampered subject", func() Notice { n := sign(base, key, der); n.Subject.Creation.Sequence++; return n }(), ErrNoticeSignature},
		{"garbage certificate", func() Notice { n := sign(base, key, der); n.Chain = [][]byte{{1, 2, 3}}; return n }(), ErrNoticeSigner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through the wire and back, as carriers see it.
			enc, err := MarshalNotice(tt.n)
			if err != nil {
				t.Fatal(err)
			}
			n, err := UnmarshalNotice(enc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = n.Verify()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzUnmarshalSummary(f *testing.F) {
	d, _ := MarshalSummary(Summary{Epoch: 1, Full: true, Held: []Digest{{1}}, Partials: []Partial{{Received: 3}}})
	rec, _ := bundle.UnmarshalAdminRecord(d)
	f.Add([]byte(rec.Content))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := UnmarshalSummary(data)
		if err != nil {
			return
		}
		if _, err := MarshalSummary(s); err != nil {
			t.Fatalf("decoded summary does not re-encode: %v", err)
		}
		for _, n := range s.Notices {
			_, _ = n.Verify()
		}
	})
}
