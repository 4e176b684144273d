package sdk

import (
	"fmt"

	"github.com/mulegate/mulegate/plugins"
)

// CheckMeta refuses a bundle that no adapter can deliver: one without an
// ID, by which a redelivery would be recognised, and one with a negative
// payload length. ok is false for such a bundle, with the Rejected result
// to answer; idFor says what the adapter needs the ID for, as in "the
// bundle has no ID, so it cannot be <idFor>" ("delivered idempotently").
func CheckMeta(m plugins.Meta, idFor string) (res plugins.Result, ok bool) {
	switch {
	case m.BundleID == "":
		return plugins.Rejected("the bundle has no ID, so it cannot be " + idFor), false
	case m.PayloadLength < 0:
		return plugins.Rejected(fmt.Sprintf("negative payload length %d", m.PayloadLength)), false
	}
	return plugins.Result{}, true
}
