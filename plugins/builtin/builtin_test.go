package builtin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/plugins"
)

// Every built-in describes itself under the name it is registered with and
// validates its own configuration: an empty block is either fine or
// answered with ConfigErrors, never with a crash or another error.
func TestModulesDescribeThemselves(t *testing.T) {
	mods := Modules()
	if len(mods) == 0 {
		t.Fatal("no built-in adapters")
	}
	for _, m := range mods {
		t.Run(m.Name, func(t *testing.T) {
			ad := m.New(nil)
			d, err := ad.Describe(t.Context())
			if err != nil || d.Name != m.Name || d.Version == "" || (!d.Deliver && !d.Fetch) {
				t.Errorf("Describe = %+v, %v", d, err)
			}
			var ce plugins.ConfigErrors
			if err := ad.Configure(t.Context(), json.RawMessage(`{"no_such_key_anywhere": 1}`)); !errors.As(err, &ce) || !ce.Has("no_such_key_anywhere") {
				t.Errorf("Configure with an unknown key = %v, want a ConfigError naming it", err)
			}
			if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrNotConfigured) {
				t.Errorf("Check before Configure = %v, want ErrNotConfigured", err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	if m, err := Lookup("dir"); err != nil || m.Name != "dir" {
		t.Errorf("Lookup(dir) = %+v, %v", m, err)
	}
	if _, err := Lookup("nosuch"); err == nil || !strings.Contains(err.Error(), "dir") {
		t.Errorf("Lookup(nosuch) = %v, want an error listing the built-ins", err)
	}
}
