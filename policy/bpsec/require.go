package bpsec

import (
	"errors"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy"
)

// RequireConfig says which bundles must carry a valid signature from their
// source. The YAML shape:
//
//	signatures:
//	  require_all: false
//	  require_for:              # destination patterns (policy.EIDPattern)
//	    - dtn://cloud/**
//	    - ipn:12.*
type RequireConfig struct {
	RequireAll bool     `yaml:"require_all,omitempty" json:"require_all,omitempty"`
	RequireFor []string `yaml:"require_for,omitempty" json:"require_for,omitempty"`
}

// Requirement is the signature policy. A nil *Requirement requires nothing.
type Requirement struct {
	all      bool
	patterns []policy.EIDPattern
}

// NewRequirement checks c. Errors name the key, as
// "signatures.require_for[1]: …".
func NewRequirement(c RequireConfig) (*Requirement, error) {
	r := &Requirement{all: c.RequireAll}
	var errs []error
	for i, s := range c.RequireFor {
		p, err := policy.ParseEIDPattern(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("signatures.require_for[%d]: %w", i, err))
			continue
		}
		r.patterns = append(r.patterns, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Required reports whether a bundle to dst must be signed. Status reports
// and other administrative records are bundles like any other: a node that
// requires signatures for every bundle must sign the records it sends.
func (r *Requirement) Required(dst bundle.EID) bool {
	if r == nil {
		return false
	}
	if r.all {
		return true
	}
	for _, p := range r.patterns {
		if p.Match(dst) {
			return true
		}
	}
	return false
}
