package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/control"
	bolt "go.etcd.io/bbolt"
)

// nodeState is what the node itself remembers across restarts, beside the
// store: verified delivery notices, spray-and-wait copy counts, and the
// endpoints applications registered. It is small, so one bbolt file with a
// commit per change is enough.
type nodeState struct {
	db *bolt.DB
}

var (
	bucketNotices   = []byte("notices")   // subject ID string → encoded control.Notice
	bucketCopies    = []byte("copies")    // bundle ID string → uint64 copies held
	bucketEndpoints = []byte("endpoints") // endpoint EID string → nothing
	bucketSigners   = []byte("signers")   // bundle ID string → signature status
)

func openState(dir string) (*nodeState, error) {
	db, err := bolt.Open(filepath.Join(dir, "node.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening node state in %s (is another mulegate using this data directory?): %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNotices, bucketCopies, bucketEndpoints, bucketInbound, bucketSigners} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &nodeState{db: db}, nil
}

func (s *nodeState) Close() error { return s.db.Close() }

// putNotice stores a verified notice. It reports false when the notice was
// already known.
func (s *nodeState) putNotice(n control.Notice) (bool, error) {
	enc, err := control.MarshalNotice(n)
	if err != nil {
		return false, err
	}
	added := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNotices)
		key := []byte(n.Subject.String())
		if b.Get(key) != nil {
			return nil
		}
		added = true
		return b.Put(key, enc)
	})
	return added, err
}

// notice returns the notice about id, if any.
func (s *nodeState) notice(id bundle.ID) (control.Notice, bool, error) {
	var n control.Notice
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNotices).Get([]byte(id.String()))
		if v == nil {
			return nil
		}
		var err error
		n, err = control.UnmarshalNotice(v)
		found = err == nil
		return err
	})
	return n, found, err
}

// notices returns every notice not yet expired at now, and deletes the
// expired ones.
func (s *nodeState) notices(now time.Time) ([]control.Notice, error) {
	var out []control.Notice
	var expired [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNotices).ForEach(func(k, v []byte) error {
			n, err := control.UnmarshalNotice(v)
			if err != nil || (n.Expires != 0 && n.Expires.Time().Before(now)) {
				expired = append(expired, append([]byte(nil), k...))
				return nil
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil || len(expired) == 0 {
		return out, err
	}
	return out, s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range expired {
			if err := tx.Bucket(bucketNotices).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// copies returns the spray-and-wait copies this node holds of id.
func (s *nodeState) copies(id bundle.ID) (uint64, bool) {
	var n uint64
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketCopies).Get([]byte(id.String())); len(v) == 8 {
			n, ok = binary.BigEndian.Uint64(v), true
		}
		return nil
	})
	return n, ok
}

func (s *nodeState) setCopies(id bundle.ID, n uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCopies).Put([]byte(id.String()), binary.BigEndian.AppendUint64(nil, n))
	})
}

func (s *nodeState) forget(id bundle.ID) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSigners).Delete([]byte(id.String())); err != nil {
			return err
		}
		return tx.Bucket(bucketCopies).Delete([]byte(id.String()))
	})
}

// setSigner records who signed a bundle, as verification established.
func (s *nodeState) setSigner(id bundle.ID, status string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSigners).Put([]byte(id.String()), []byte(status))
	})
}

// signer is the signature status recorded for a bundle, or "".
func (s *nodeState) signer(id bundle.ID) string {
	var out string
	_ = s.db.View(func(tx *bolt.Tx) error {
		out = string(tx.Bucket(bucketSigners).Get([]byte(id.String())))
		return nil
	})
	return out
}

func (s *nodeState) addEndpoint(e bundle.EID) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEndpoints).Put([]byte(e.String()), nil)
	})
}

func (s *nodeState) endpoints() ([]bundle.EID, error) {
	var out []bundle.EID
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEndpoints).ForEach(func(k, _ []byte) error {
			e, err := bundle.ParseEID(string(k))
			if err != nil {
				return errors.Join(fmt.Errorf("node state holds a bad endpoint %q", k), err)
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

var bucketInbound = []byte("inbound") // adapter \x00 message ID → creation time, sequence, forget-after (3×uint64)

// inboundID returns the creation timestamp already given to an inbound
// message, if any.
func (s *nodeState) inboundID(adapter, msgID string) (time.Time, uint64, bool) {
	if msgID == "" {
		return time.Time{}, 0, false
	}
	var created time.Time
	var seq uint64
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketInbound).Get([]byte(adapter + "\x00" + msgID))
		if len(v) == 24 {
			created = bundle.DTNTime(binary.BigEndian.Uint64(v)).Time()
			seq, ok = binary.BigEndian.Uint64(v[8:]), true
		}
		return nil
	})
	return created, seq, ok
}

func (s *nodeState) setInboundID(adapter, msgID string, created time.Time, seq uint64, forgetAfter time.Time) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(bundle.FromTime(created)))
	v = binary.BigEndian.AppendUint64(v, seq)
	v = binary.BigEndian.AppendUint64(v, uint64(forgetAfter.Unix()))
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInbound).Put([]byte(adapter+"\x00"+msgID), v)
	})
}

// pruneInbound forgets inbound message IDs whose bundles have expired.
func (s *nodeState) pruneInbound(now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketInbound).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) != 24 || int64(binary.BigEndian.Uint64(v[16:])) < now.Unix() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
