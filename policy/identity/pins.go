package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// MaxPins bounds the trust-on-first-use pin store. Anyone on the LAN can make
// up node IDs, and every new one is pinned and written to disk; past the
// bound new nodes are refused (ErrPinStoreFull) until stale pins are removed.
const MaxPins = 10000

const pinsVersion = 1

// PinStore is the trust-on-first-use memory: node ID → fingerprint of the key
// first seen for it, kept in a JSON file. Every change is written atomically
// (temp file, fsync, rename) before it takes effect, so a pin that let a peer
// in survives a crash. It is safe for concurrent use.
type PinStore struct {
	path string
	max  int // MaxPins, lowered by tests
	mu   sync.Mutex
	pins map[string]Pin
}

// Pin is one remembered node.
type Pin struct {
	Fingerprint string    `json:"fingerprint"`
	FirstSeen   time.Time `json:"first_seen"`
}

type pinsFile struct {
	Version int            `json:"version"`
	Pins    map[string]Pin `json:"pins"`
}

// OpenPins reads the pin store at path. A missing file is an empty store;
// the file is created with the first pin.
func OpenPins(path string) (*PinStore, error) {
	s := &PinStore{path: path, max: MaxPins, pins: map[string]Pin{}}
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: pins: %w", err)
	}
	if s.pins, err = parsePins(data); err != nil {
		return nil, fmt.Errorf("identity: pins file %s: %w; fix or remove the entry (removing it means the node is trusted anew on its next contact)", path, err)
	}
	return s, nil
}

// parsePins parses and checks a pins file.
func parsePins(data []byte) (map[string]Pin, error) {
	var f pinsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if f.Version != pinsVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, pinsVersion)
	}
	if len(f.Pins) > MaxPins {
		return nil, fmt.Errorf("%d pins, more than the limit of %d", len(f.Pins), MaxPins)
	}
	if f.Pins == nil {
		f.Pins = map[string]Pin{}
	}
	for id, p := range f.Pins {
		if err := CheckNodeID(id); err != nil {
			return nil, fmt.Errorf("entry %q: %w", id, err)
		}
		if err := checkFingerprint(p.Fingerprint); err != nil {
			return nil, fmt.Errorf("entry %q: %w", id, err)
		}
	}
	return f.Pins, nil
}

func encodePins(pins map[string]Pin) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	// Map keys are encoded sorted, so the file is stable and diffable.
	if err := enc.Encode(pinsFile{Version: pinsVersion, Pins: pins}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Path is the file the store is kept in.
func (s *PinStore) Path() string { return s.path }

// Len is the number of pinned nodes.
func (s *PinStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pins)
}

// Lookup returns the pin for nodeID, if there is one.
func (s *PinStore) Lookup(nodeID string) (Pin, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pins[nodeID]
	return p, ok
}

// NodeIDs lists the pinned node IDs, sorted.
func (s *PinStore) NodeIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.pins))
	for id := range s.pins {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Remove forgets nodeID, so that its next contact is a first use again. This
// is how an operator accepts a node that legitimately changed its key.
func (s *PinStore) Remove(nodeID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.pins[nodeID]
	if !ok {
		return nil
	}
	delete(s.pins, nodeID)
	if err := s.saveLocked(); err != nil {
		s.pins[nodeID] = old
		return err
	}
	return nil
}

// pin returns the fingerprint pinned for nodeID, first pinning fp if there
// is none. The check and the set happen under one lock, so two first contacts
// racing with different keys cannot both win. If the pin cannot be saved it
// is not kept, and the peer is refused: a pin that vanished on restart would
// let a different key in later.
func (s *PinStore) pin(nodeID, fp string, now time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pins[nodeID]; ok {
		return p.Fingerprint, nil
	}
	if len(s.pins) >= s.max {
		return "", &VerifyError{Kind: ErrPinStoreFull,
			Reason: fmt.Sprintf("%s already holds %d nodes, so %s cannot be pinned; remove stale entries", s.path, len(s.pins), nodeID)}
	}
	s.pins[nodeID] = Pin{Fingerprint: fp, FirstSeen: now.UTC()}
	if err := s.saveLocked(); err != nil {
		delete(s.pins, nodeID)
		return "", fmt.Errorf("identity: cannot pin %s: %w", nodeID, err)
	}
	return fp, nil
}

func (s *PinStore) saveLocked() error {
	data, err := encodePins(s.pins)
	if err != nil {
		return fmt.Errorf("identity: encode pins: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("identity: pins directory: %w", err)
	}
	if err := writeFileAtomic(s.path, data, 0o600); err != nil {
		return fmt.Errorf("identity: save pins to %s: %w", s.path, err)
	}
	return nil
}
