package smtp_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/smtp"
	"github.com/mulegate/mulegate/plugins/smtp/internal/mailpittest"
)

// benchRun numbers the bundles of each run apart.
var benchRun atomic.Int64

func benchMeta(run int64, i int) (plugins.Meta, []byte) {
	meta := testMeta(i, "dtn://cloud/mail/bench@example.org", 0)
	meta.BundleID = fmt.Sprintf("%s|%d.%d", meta.Source, 900000000000+run, i)
	body := []byte(strings.Repeat(fmt.Sprintf("reading %06d: 21.5 C, 1013 hPa, wind 3 m/s\n", i), 24)[:1024])
	meta.PayloadLength = int64(len(body))
	return meta, body
}

// parallel runs work(i) for i in [0, n) on workers goroutines and returns
// the rate in messages a second.
func parallel(b *testing.B, n, workers int, work func(w, i int) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() != nil {
					return
				}
				if err := work(w, i); err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.Fatal(*e)
	}
	rate := float64(n) / time.Since(start).Seconds()
	b.ReportMetric(rate, "msgs/s")
	return rate
}

// BenchmarkDeliver1KiB: 1 KiB bodies, wrapped by the adapter, through the
// adapter as the node runs it (its own process, go-plugin), the adapter in
// process, and go-smtp's client sending the very same messages (made by
// smtp.Compose) straight to the same kind of mailpit, with as many
// connections as the adapter may open; one at a time and eight in flight.
// Each case gets a fresh mailpit. The ratios are logged at the end:
//
//	go test -run '^$' -bench Deliver1KiB -benchtime 2000x -count 1 -v ./plugins/smtp
func BenchmarkDeliver1KiB(b *testing.B) {
	rates := map[string]float64{}
	for _, inFlight := range []int{1, 8} {
		cfg := func(srv *mailpittest.Server) obj {
			return outbound(srv, obj{"max_connections": inFlight})
		}
		b.Run(fmt.Sprintf("go-smtp/in_flight=%d", inFlight), func(b *testing.B) {
			srv := mailpittest.Start(b)
			run := benchRun.Add(1)
			clients := make([]*gosmtp.Client, inFlight)
			for w := range clients {
				c, err := gosmtp.Dial(srv.SMTPAddr())
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Hello("bench.example"); err != nil {
					b.Fatal(err)
				}
				clients[w] = c
				defer c.Close()
			}
			conf := smtp.Config{Domain: "gw.example.org"}
			b.ResetTimer()
			rates[b.Name()] = parallel(b, b.N, inFlight, func(w, i int) error {
				meta, body := benchMeta(run, i)
				var msg bytes.Buffer
				env, err := smtp.Compose(&msg, meta, bytes.NewReader(body), conf, nil, false)
				if err != nil {
					return err
				}
				return clients[w].SendMail(env.From, env.To, &msg)
			})
		})
		b.Run(fmt.Sprintf("adapter/in_flight=%d", inFlight), func(b *testing.B) {
			srv := mailpittest.Start(b)
			_, ad := startAdapter(b, cfg(srv))
			run := benchRun.Add(1)
			b.ResetTimer()
			rates[b.Name()] = parallel(b, b.N, inFlight, func(_, i int) error {
				meta, body := benchMeta(run, i)
				if res := ad.Deliver(b.Context(), meta, bytes.NewReader(body)); res.Status != plugins.OK {
					return fmt.Errorf("bundle %d: %v", i, res)
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("in_process/in_flight=%d", inFlight), func(b *testing.B) {
			srv := mailpittest.Start(b)
			ad := inProcess(b, cfg(srv))
			run := benchRun.Add(1)
			b.ResetTimer()
			rates[b.Name()] = parallel(b, b.N, inFlight, func(_, i int) error {
				meta, body := benchMeta(run, i)
				if res := ad.Deliver(b.Context(), meta, bytes.NewReader(body)); res.Status != plugins.OK {
					return fmt.Errorf("bundle %d: %v", i, res)
				}
				return nil
			})
		})
	}
	for _, inFlight := range []int{1, 8} {
		direct := rates[fmt.Sprintf("%s/go-smtp/in_flight=%d", b.Name(), inFlight)]
		via := rates[fmt.Sprintf("%s/adapter/in_flight=%d", b.Name(), inFlight)]
		inproc := rates[fmt.Sprintf("%s/in_process/in_flight=%d", b.Name(), inFlight)]
		if direct > 0 {
			b.Logf("in flight %d: go-smtp %.0f msgs/s; adapter %.0f msgs/s (%.0f%%); in process %.0f msgs/s (%.0f%%)",
				inFlight, direct, via, 100*via/direct, inproc, 100*inproc/direct)
		}
	}
}
