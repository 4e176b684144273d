// Package builtin lists the adapters compiled into the mulegate binary.
// The node runs each of them out of process, as `mulegate adapter NAME`,
// exactly like an external adapter; only the executable differs.
//
// Each adapter is a self-contained package with a constructor; it reads and
// validates its own configuration block in Configure, so nothing here knows
// any adapter's fields. To add one, add a line to Modules.
package builtin

import (
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/dir"
	"github.com/mulegate/mulegate/plugins/nats"
	"github.com/mulegate/mulegate/plugins/s3"
	smtpadapter "github.com/mulegate/mulegate/plugins/smtp"
)

// Module is a built-in adapter.
type Module struct {
	// Name is what the configuration calls it: `builtin: dir`.
	Name string
	// Summary is one line for `mulegate adapters`.
	Summary string
	// New returns a fresh, unconfigured adapter that logs to log.
	New func(log *zap.Logger) plugins.Adapter
}

// Modules returns every built-in adapter, sorted by name. It builds the
// list on each call, so that there is no registry to mutate.
func Modules() []Module {
	mods := []Module{
		{Name: "smtp", Summary: "sends bundles as mail through an SMTP server, deduplicated by Message-ID; receives mail on an SMTP server of its own as inbound messages", New: func(log *zap.Logger) plugins.Adapter { return smtpadapter.New(log) }},
		{Name: "nats", Summary: "publishes bundles to NATS JetStream (large payloads via its object store); fetches inbound messages from a durable pull consumer", New: func(log *zap.Logger) plugins.Adapter { return nats.New(log) }},
		{Name: "s3", Summary: "delivers bundles as objects to an S3 bucket (multipart for large payloads); turns objects put under an inbox prefix into inbound messages", New: func(log *zap.Logger) plugins.Adapter { return s3.New(log) }},
		{
			Name:    "dir",
			Summary: "delivers bundles as files into a directory; turns files dropped into an inbox into inbound messages",
			New:     func(log *zap.Logger) plugins.Adapter { return dir.New(log) },
		},
	}
	slices.SortFunc(mods, func(a, b Module) int { return strings.Compare(a.Name, b.Name) })
	return mods
}

// Lookup returns the built-in adapter called name.
func Lookup(name string) (Module, error) {
	mods := Modules()
	for _, m := range mods {
		if m.Name == name {
			return m, nil
		}
	}
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.Name
	}
	return Module{}, fmt.Errorf("unknown built-in adapter %q; built-in adapters: %s", name, strings.Join(names, ", "))
}
