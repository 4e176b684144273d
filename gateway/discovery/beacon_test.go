package discovery

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func testBeacon() beacon {
	return beacon{
		node:     bundle.MustParseEID("dtn://mule1/"),
		boot:     0x1234_5678_9abc_def0,
		seq:      7,
		interval: 5 * time.Second,
		services: []Service{{ProtocolQUIC, 4556}, {ProtocolTCPCL, 4556}},
	}
}

func mustMarshal(t testing.TB, b beacon) []byte {
	t.Helper()
	data, err := b.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rawCBOR encodes v with the deterministic encoder, for hand-made beacons.
func rawCBOR(t testing.TB, v any) []byte {
	t.Helper()
	data, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// wireMap is a valid beacon as a generic map, for tests that break one field.
func wireMap() map[any]any {
	return map[any]any{
		0: magic, 1: version, 2: "dtn://mule1/", 3: 99, 4: 1, 5: 5000,
		6: []any{[]any{"quic", 4556}},
	}
}

func TestBeaconRoundTrip(t *testing.T) {
	for _, b := range []beacon{
		testBeacon(),
		{node: bundle.IPN(12, 0), boot: 1, interval: time.Millisecond, services: []Service{{"mtcp", 1}}},
	} {
		data := mustMarshal(t, b)
		got, err := parseBeacon(data)
		if err != nil {
			t.Fatalf("parse %x: %v", data, err)
		}
		if !reflect.DeepEqual(got, b) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, b)
		}
	}
}

// TestBeaconWire pins the encoding the package documentation describes.
func TestBeaconWire(t *testing.T) {
	b := beacon{node: bundle.MustParseEID("dtn://m/"), boot: 1, seq: 2, interval: 5 * time.Second, services: []Service{{"quic", 4556}}}
	want := []byte{
		0xa7,                                               // map(7)
		0x00, 0x68, 'm', 'u', 'l', 'e', 'g', 'a', 't', 'e', // 0: "mulegate"
		0x01, 0x01, // 1: 1
		0x02, 0x68, 'd', 't', 'n', ':', '/', '/', 'm', '/', // 2: "dtn://m/"
		0x03, 0x01, // 3: 1
		0x04, 0x02, // 4: 2
		0x05, 0x19, 0x13, 0x88, // 5: 5000
		0x06, 0x81, 0x82, 0x64, 'q', 'u', 'i', 'c', 0x19, 0x11, 0xcc, // 6: [["quic", 4556]]
	}
	if got := mustMarshal(t, b); !bytes.Equal(got, want) {
		t.Errorf("encoding\n got %x\nwant %x", got, want)
	}
	if n := len(mustMarshal(t, testBeacon())); n > 80 {
		t.Errorf("a typical beacon is %d bytes", n)
	}
}

func TestBeaconLargestFits(t *testing.T) {
	b := beacon{
		node:     bundle.MustParseEID("dtn://" + strings.Repeat("n", maxNodeIDLen-len("dtn:///")) + "/"),
		boot:     ^uint64(0),
		seq:      ^uint64(0),
		interval: time.Duration(maxWireInterval) * time.Millisecond,
	}
	for i := range MaxServices {
		b.services = append(b.services, Service{strings.Repeat("p", maxProtocolLen-1) + string(rune('a'+i)), 65535})
	}
	data := mustMarshal(t, b)
	if len(data) > MaxBeaconSize {
		t.Fatalf("largest beacon is %d bytes", len(data))
	}
	if _, err := parseBeacon(data); err != nil {
		t.Fatal(err)
	}
}

func TestParseBeaconRejects(t *testing.T) {
	with := func(k int, v any) []byte {
		m := wireMap()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return rawCBOR(t, m)
	}
	valid := rawCBOR(t, wireMap())
	if _, err := parseBeacon(valid); err != nil {
		t.Fatalf("the base case is not valid: %v", err)
	}
	oversized := wireMap()
	oversized[99] = strings.Repeat("x", MaxBeaconSize)
	manyServices := []any{}
	for i := range MaxServices + 1 {
		manyServices = append(manyServices, []any{"quic", 4556 + i})
	}
	indef := append([]byte{0xbf}, valid[1:]...) // indefinite-length map
	indef = append(indef, 0xff)
	cases := map[string][]byte{
		"empty":              nil,
		"garbage":            []byte("hello, world"),
		"truncated":          valid[:len(valid)-3],
		"trailing bytes":     append(append([]byte{}, valid...), 0x00),
		"not a map":          rawCBOR(t, []any{magic, 1}),
		"oversized":          rawCBOR(t, oversized),
		"no magic":           with(0, nil),
		"wrong magic":        with(0, "mulegatf"),
		"magic as bytes":     with(0, []byte(magic)),
		"no version":         with(1, nil),
		"version 2":          with(1, 2),
		"no node":            with(2, nil),
		"node not a node ID": with(2, "dtn://mule1/inbox"),
		"node dtn:none":      with(2, "dtn:none"),
		"node garbage":       with(2, "http://x/"),
		"node too long":      with(2, "dtn://"+strings.Repeat("n", 300)+"/"),
		"negative boot":      with(3, -1),
		"boot as text":       with(3, "1"),
		"no interval":        with(5, nil),
		"interval too long":  with(5, maxWireInterval+1),
		"no services":        with(6, nil),
		"empty services":     with(6, []any{}),
		"too many services":  with(6, manyServices),
		"service short":      with(6, []any{[]any{"quic"}}),
		"service long":       with(6, []any{[]any{"quic", 1, 2}}),
		"port 0":             with(6, []any{[]any{"quic", 0}}),
		"port too big":       with(6, []any{[]any{"quic", 65536}}),
		"protocol empty":     with(6, []any{[]any{"", 1}}),
		"protocol upper":     with(6, []any{[]any{"QUIC", 1}}),
		"protocol too long":  with(6, []any{[]any{strings.Repeat("q", 17), 1}}),
		"indefinite length":  indef,
		"tagged":             append([]byte{0xd8, 0x40}, valid...),
		"duplicate key":      append([]byte{0xa8, 0x00, 0x61, 'x'}, valid[1:]...),
		"invalid UTF-8":      with(2, string([]byte{'d', 't', 'n', ':', '/', '/', 0xff, '/'})),
		"huge string length": {0xa1, 0x02, 0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge array length":  {0xa1, 0x06, 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"deep nesting":       bytes.Repeat([]byte{0x81}, 100),
	}
	for name, data := range cases {
		if b, err := parseBeacon(data); err == nil {
			t.Errorf("%s: parsed as %+v", name, b)
		} else if !errors.Is(err, errMalformed) && !errors.Is(err, errVersion) {
			t.Errorf("%s: error %v is neither malformed nor version", name, err)
		}
	}
}

func TestParseBeaconTolerates(t *testing.T) {
	m := wireMap()
	m[7] = "a field from the future"
	m[100] = map[any]any{1: 2}
	m[6] = []any{[]any{"quic", 4556}, []any{"quic", 4556}, []any{"tcpcl", 4556}}
	delete(m, 3)
	delete(m, 4)
	b, err := parseBeacon(rawCBOR(t, m))
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{{"quic", 4556}, {"tcpcl", 4556}}
	if !reflect.DeepEqual(b.services, want) || b.boot != 0 || b.seq != 0 {
		t.Errorf("got %+v; want services %v (duplicates merged), boot and seq 0", b, want)
	}
}

func TestMarshalRefusesWhatParseRejects(t *testing.T) {
	for name, b := range map[string]beacon{
		"no services":       {node: bundle.MustParseEID("dtn://a/"), interval: time.Second},
		"not a node ID":     {node: bundle.MustParseEID("dtn://a/b"), interval: time.Second, services: []Service{{"quic", 1}}},
		"bad protocol":      {node: bundle.MustParseEID("dtn://a/"), interval: time.Second, services: []Service{{"QUIC", 1}}},
		"zero interval":     {node: bundle.MustParseEID("dtn://a/"), services: []Service{{"quic", 1}}},
		"port out of range": {node: bundle.MustParseEID("dtn://a/"), interval: time.Second, services: []Service{{"quic", 70000}}},
	} {
		if data, err := b.marshal(); err == nil {
			t.Errorf("%s: encoded as %x", name, data)
		}
	}
}

func FuzzParseBeacon(f *testing.F) {
	f.Add(mustMarshal(f, testBeacon()))
	f.Add(mustMarshal(f, beacon{node: bundle.IPN(1, 0), interval: time.Second, services: []Service{{"mtcp", 7}}}))
	f.Add(rawCBOR(f, wireMap()))
	f.Add([]byte{0xa1, 0x06, 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBeacon(data)
		if err != nil {
			return
		}
		if len(data) > MaxBeaconSize {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if !b.node.IsNodeID() || len(b.services) == 0 || len(b.services) > MaxServices {
			t.Fatalf("accepted %+v", b)
		}
		for _, s := range b.services {
			if s.Port < 1 || s.Port > 65535 || !validProtocol(s.Protocol) {
				t.Fatalf("accepted service %+v", s)
			}
		}
		// What parses re-encodes, and parses to the same beacon.
		again, err := b.marshal()
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", b, err)
		}
		b2, err := parseBeacon(again)
		if err != nil {
			t.Fatalf("parsing re-encoded %x: %v", again, err)
		}
		if !reflect.DeepEqual(b, b2) {
			t.Fatalf("re-encoding changed\n%+v\nto\n%+v", b, b2)
		}
	})
}
