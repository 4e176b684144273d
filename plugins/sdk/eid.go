package sdk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mulegate/mulegate/bundle"
)

// MaxEIDLen bounds the endpoint IDs an adapter makes or accepts.
const MaxEIDLen = 1024

// CheckEID tells whether s is an endpoint ID a bundle can be addressed to,
// by the node's own parser (bundle.ParseEID): dtn://node/service or
// ipn:N.S. dtn:none, which is no destination, and IDs longer than
// MaxEIDLen are refused too. An adapter checks with it the destinations
// it reads from a message (a header, object metadata, a configured
// default), so that the node is never handed one it would refuse.
func CheckEID(s string) error {
	switch {
	case len(s) > MaxEIDLen:
		return fmt.Errorf("endpoint ID is longer than %d bytes", MaxEIDLen)
	case s == bundle.None.String():
		return fmt.Errorf("%q is no destination", s)
	}
	_, err := bundle.ParseEID(s)
	return err
}

// DTNEndpoint returns the endpoint ID dtn://node/service, or why the node
// would refuse it: for an adapter that maps a place upstream (a subject,
// an object key) to the node and service it names.
func DTNEndpoint(node, service string) (string, error) {
	if node == "" {
		return "", errors.New("the node name is empty")
	}
	for i := 0; i < len(node); i++ {
		switch c := node[i]; {
		case c >= utf8.RuneSelf:
			return "", errors.New("a node name must be ASCII")
		case c == '/':
			// The parser would read the node name as ending here.
			return "", fmt.Errorf("character %q is not allowed in a node name", c)
		}
	}
	eid := "dtn://" + node + "/" + service
	if _, err := bundle.ParseEID(eid); err != nil {
		return "", err
	}
	return eid, nil
}

// SplitEID returns an endpoint ID's node name and service, for dtn and
// ipn EIDs, as the node splits them to fill {src_node}, {dst_node} and
// {service}; empty strings for anything else. It does not check s.
func SplitEID(s string) (node, service string) {
	if rest, ok := strings.CutPrefix(s, "dtn://"); ok {
		node, service, _ = strings.Cut(rest, "/")
		return node, service
	}
	if rest, ok := strings.CutPrefix(s, "ipn:"); ok {
		node, service, _ = strings.Cut(rest, ".")
		return node, service
	}
	return "", ""
}

// BundleKey is the node's {bundle_key} of a bundle ID: the first 16 bytes
// of its SHA-256, in hex. It names a bundle where its ID cannot go (an
// object key, a Message-ID), the same on every delivery.
func BundleKey(bundleID string) string {
	sum := sha256.Sum256([]byte(bundleID))
	return hex.EncodeToString(sum[:16])
}

// ParseLifetime reads a lifetime written in milliseconds, as BPv7 counts
// it: the value of a header or of object metadata that asks for an
// inbound message's lifetime. ok is false for anything but a positive
// whole number of milliseconds that a time.Duration holds.
func ParseLifetime(s string) (d time.Duration, ok bool) {
	ms, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || ms == 0 || ms > uint64(1<<63-1)/uint64(time.Millisecond) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}
