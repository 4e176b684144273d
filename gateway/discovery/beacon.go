package discovery

import (
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/mulegate/mulegate/bundle"
)

// Wire-format constants; the package documentation describes the format.
const (
	magic   = "mulegate"
	version = 1

	// MaxBeaconSize is the largest beacon, in bytes, that a node sends or
	// reads. A bigger datagram is dropped unread.
	MaxBeaconSize = 512
	// MaxServices is the most services one beacon may announce.
	MaxServices = 8

	maxNodeIDLen   = 255
	maxProtocolLen = 16
	// maxWireInterval bounds the announced interval (one day, in ms).
	maxWireInterval = uint64(24 * time.Hour / time.Millisecond)
)

var (
	errMalformed = errors.New("malformed beacon")
	errVersion   = errors.New("unknown beacon version")
)

// beacon is one decoded announcement.
type beacon struct {
	node     bundle.EID
	boot     uint64        // random, chosen when the sender's Run starts
	seq      uint64        // counts the sender's beacons within one boot
	interval time.Duration // the sender's beacon interval
	services []Service
}

// wireBeacon is the CBOR form: a map with small integer keys, so that
// fields can be added and old receivers skip them.
type wireBeacon struct {
	Magic    string        `cbor:"0,keyasint,omitempty"`
	Version  uint64        `cbor:"1,keyasint,omitempty"`
	Node     string        `cbor:"2,keyasint,omitempty"`
	Boot     uint64        `cbor:"3,keyasint"`
	Seq      uint64        `cbor:"4,keyasint"`
	Interval uint64        `cbor:"5,keyasint,omitempty"` // milliseconds
	Services []wireService `cbor:"6,keyasint,omitempty"`
}

type wireService struct {
	_        struct{} `cbor:",toarray"`
	Protocol string
	Port     uint64
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
		MaxNestedLevels:   4,
		MaxArrayElements:  16, // the library's minimum; services are checked against MaxServices after
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorNone,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshal encodes b. It fails if b breaks a rule that parseBeacon checks, so
// a node never sends a beacon that its peers would drop.
func (b beacon) marshal() ([]byte, error) {
	w := wireBeacon{
		Magic:    magic,
		Version:  version,
		Node:     b.node.String(),
		Boot:     b.boot,
		Seq:      b.seq,
		Interval: uint64(b.interval / time.Millisecond),
	}
	for _, s := range b.services {
		w.Services = append(w.Services, wireService{Protocol: s.Protocol, Port: uint64(s.Port)})
	}
	if _, err := w.check(); err != nil {
		return nil, err
	}
	data, err := encMode.Marshal(w)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxBeaconSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", errMalformed, len(data), MaxBeaconSize)
	}
	return data, nil
}

// parseBeacon decodes and checks one datagram. Every length in it is bounded
// by the datagram, which is bounded by MaxBeaconSize, and by the decoder's
// limits; nothing is allocated from a length the packet claims.
func parseBeacon(data []byte) (beacon, error) {
	if len(data) > MaxBeaconSize {
		return beacon{}, fmt.Errorf("%w: %d bytes, more than %d", errMalformed, len(data), MaxBeaconSize)
	}
	var w wireBeacon
	if err := decMode.Unmarshal(data, &w); err != nil {
		return beacon{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if w.Magic != magic {
		return beacon{}, fmt.Errorf("%w: no magic", errMalformed)
	}
	if w.Version != version {
		return beacon{}, fmt.Errorf("%w %d", errVersion, w.Version)
	}
	node, err := w.check()
	if err != nil {
		return beacon{}, err
	}
	b := beacon{
		node:     node,
		boot:     w.Boot,
		seq:      w.Seq,
		interval: time.Duration(w.Interval) * time.Millisecond,
		services: make([]Service, 0, len(w.Services)),
	}
	for _, s := range w.Services {
		sv := Service{Protocol: s.Protocol, Port: int(s.Port)}
		dup := false
		for _, have := range b.services {
			dup = dup || have == sv
		}
		if !dup {
			b.services = append(b.services, sv)
		}
	}
	return b, nil
}

// check applies the rules of a version-1 beacon after the magic and version,
// and returns the node ID.
func (w *wireBeacon) check() (bundle.EID, error) {
	if len(w.Node) == 0 || len(w.Node) > maxNodeIDLen {
		return bundle.EID{}, fmt.Errorf("%w: node ID of %d bytes", errMalformed, len(w.Node))
	}
	e, err := bundle.ParseEID(w.Node)
	if err != nil {
		return bundle.EID{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if !e.IsNodeID() {
		return bundle.EID{}, fmt.Errorf("%w: %s is not a node ID", errMalformed, e)
	}
	if w.Interval == 0 || w.Interval > maxWireInterval {
		return bundle.EID{}, fmt.Errorf("%w: interval %d ms", errMalformed, w.Interval)
	}
	if len(w.Services) == 0 || len(w.Services) > MaxServices {
		return bundle.EID{}, fmt.Errorf("%w: %d services, want 1 to %d", errMalformed, len(w.Services), MaxServices)
	}
	for _, s := range w.Services {
		if err := checkService(s.Protocol, s.Port); err != nil {
			return bundle.EID{}, err
		}
	}
	return e, nil
}

func checkService(protocol string, port uint64) error {
	if !validProtocol(protocol) {
		return fmt.Errorf("%w: protocol %q: want 1 to %d of a-z, 0-9, '-'", errMalformed, protocol, maxProtocolLen)
	}
	if port == 0 || port > 65535 {
		return fmt.Errorf("%w: %s port %d", errMalformed, protocol, port)
	}
	return nil
}

func validProtocol(p string) bool {
	if len(p) == 0 || len(p) > maxProtocolLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
