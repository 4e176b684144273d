package dir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// sidecar is the metadata written beside each delivered payload. It holds
// nothing that changes between deliveries of one bundle, so a redelivery
// rewrites it byte for byte.
type sidecar struct {
	File            string            `json:"file"`
	BundleID        string            `json:"bundle_id"`
	Source          string            `json:"source"`
	Destination     string            `json:"destination"`
	ReportTo        string            `json:"report_to,omitempty"`
	CreationTimeMs  uint64            `json:"creation_time_ms"`
	Created         string            `json:"created,omitempty"`
	Sequence        uint64            `json:"sequence"`
	LifetimeMs      int64             `json:"lifetime_ms"`
	PayloadLength   int64             `json:"payload_length"`
	Flags           uint64            `json:"flags"`
	HopCount        uint32            `json:"hop_count,omitempty"`
	HopLimit        uint32            `json:"hop_limit,omitempty"`
	SignatureStatus string            `json:"signature_status,omitempty"`
	Route           string            `json:"route,omitempty"`
	Options         map[string]string `json:"options,omitempty"`
}

// SidecarName is where the metadata of the delivery at name (relative to
// out) is written.
func SidecarName(name string) string { return path.Join(".meta", name+".json") }

// DeliveryName is where a bundle with this ID and route options lands,
// relative to out.
func DeliveryName(bundleID string, options map[string]string) string {
	return deliveryName(bundleID, options["name"])
}

func (a *Adapter) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	st, err := a.cur.Get()
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	if st.out == nil {
		return plugins.Rejected("this dir adapter has no out directory: set out in its configuration, or route these bundles elsewhere")
	}
	if res, ok := sdk.CheckMeta(meta, "delivered idempotently"); !ok {
		return res
	}
	name := DeliveryName(meta.BundleID, meta.Options)
	if err := a.write(ctx, st, name, meta, payload); err != nil {
		if ctx.Err() != nil {
			return plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
		}
		if conflict(err) {
			return plugins.Rejected(fmt.Sprintf("%q conflicts with an existing file or directory in out (check the route's name option): %v", name, err))
		}
		a.log.Warn("delivery failed; the node will retry", zap.String("bundle", meta.BundleID), zap.Error(err))
		return plugins.RetryLater(0, err.Error())
	}
	return plugins.Delivered()
}

// conflict tells a name clash, which no retry resolves, from a transient
// failure such as a full disk.
func conflict(err error) bool {
	return errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) ||
		errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY)
}

func (a *Adapter) write(ctx context.Context, st *state, name string, meta plugins.Meta, payload io.Reader) (err error) {
	var temps []string
	defer func() {
		if err != nil {
			for _, t := range temps {
				_ = st.out.Remove(t)
			}
		}
	}()
	dir := path.Dir(name)
	if err := st.out.MkdirAll(dir, 0o750); err != nil {
		return err
	}

	withSidecar := st.cfg.Sidecar == nil || *st.cfg.Sidecar
	var metaName, metaTmp string
	if withSidecar {
		metaName = SidecarName(name)
		if err := st.out.MkdirAll(path.Dir(metaName), 0o750); err != nil {
			return err
		}
		data, err := json.MarshalIndent(sidecarFor(name, meta), "", "  ")
		if err != nil {
			return err
		}
		metaTmp, err = writeTemp(st.out, path.Dir(metaName), func(f *os.File) error {
			_, err := f.Write(append(data, '\n'))
			return err
		})
		if err != nil {
			return fmt.Errorf("writing metadata: %w", err)
		}
		temps = append(temps, metaTmp)
	}

	tmp, err := writeTemp(st.out, dir, func(f *os.File) error {
		return sdk.CopyPayload(f, payload, meta.PayloadLength)
	})
	if err != nil {
		return fmt.Errorf("writing payload: %w", err)
	}
	temps = append(temps, tmp)

	// Last chance to back out: once renamed, the delivery is visible.
	if err := ctx.Err(); err != nil {
		return err
	}
	if withSidecar {
		if err := st.out.Rename(metaTmp, metaName); err != nil {
			return err
		}
	}
	if err := st.out.Rename(tmp, name); err != nil {
		return err
	}
	temps = nil
	if withSidecar {
		if err := syncDir(st.out, path.Dir(metaName)); err != nil {
			return err
		}
	}
	return syncDir(st.out, dir)
}

// writeTemp creates a hidden temporary file in dir, fills it, and fsyncs
// it. The name carries the PID so that a later process can tell an
// abandoned file from one still being written.
func writeTemp(root *os.Root, dir string, fill func(*os.File) error) (string, error) {
	name := path.Join(dir, fmt.Sprintf("%s%d-%016x", tempPrefix, os.Getpid(), rand.Uint64()))
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = root.Remove(name)
		return "", err
	}
	return name, nil
}

// syncDir makes a rename in dir durable.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func sidecarFor(name string, m plugins.Meta) sidecar {
	s := sidecar{
		File:            name,
		BundleID:        m.BundleID,
		Source:          m.Source,
		Destination:     m.Destination,
		ReportTo:        m.ReportTo,
		CreationTimeMs:  m.CreationTime,
		Sequence:        m.Sequence,
		LifetimeMs:      m.Lifetime.Milliseconds(),
		PayloadLength:   m.PayloadLength,
		Flags:           m.Flags,
		HopCount:        m.HopCount,
		HopLimit:        m.HopLimit,
		SignatureStatus: m.SignatureStatus,
		Route:           m.Route,
		Options:         m.Options,
	}
	if t := m.Created(); !t.IsZero() {
		s.Created = t.UTC().Format(time.RFC3339Nano)
	}
	return s
}
