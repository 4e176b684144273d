package s3_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/benchtest"
	"github.com/mulegate/mulegate/plugins/s3"
	"github.com/mulegate/mulegate/plugins/s3/internal/s3test"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// benchRun numbers the runs apart, so that each writes keys of its own.
var benchRun atomic.Int64

// runBench does work(i) for i in [0, b.N) on inFlight goroutines, and
// reports objects/s, MiB/s, and what each process spent per object.
func runBench(b *testing.B, ps benchtest.Procs, size, inFlight int, work func(i int) error) float64 {
	b.SetBytes(int64(size))
	return ps.Run(b, inFlight, "objects/s", work)
}

// sdkClient is a plain SDK client for srv, tuned as the adapter tunes its
// own (connections kept for 64 in flight, SDK default CRC32 checksums).
func sdkClient(srv *s3test.Server) *awss3.Client {
	tr := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 128
		tr.ExpectContinueTimeout = time.Second
	}).GetTransport()
	c := srv.Client()
	return awss3.New(c.Options(), func(o *awss3.Options) {
		o.HTTPClient = &http.Client{Transport: tr}
		o.RetryMaxAttempts = 3
	})
}

// BenchmarkPutObject compares objects/s through the adapter, across the
// plugin boundary as the node runs it, with the same PutObject made by
// the SDK directly in the node's process: 1 KiB objects with 64 in
// flight, and 16 MiB objects (one PutObject each, at the default
// multipart_threshold) with 4 in flight. Each sub-benchmark gets a fresh
// versitygw process (it slows down as its bucket fills, which made the
// order of the cases decide the comparison), and reports the CPU each
// process spent per object; the adapter in process is there to tell the
// boundary's share.
//
//	go test -run '^$' -bench 'PutObject/1KiB' -benchtime 5000x -count 3 ./plugins/s3
//	go test -run '^$' -bench 'PutObject/16MiB' -benchtime 40x -count 3 ./plugins/s3
func BenchmarkPutObject(b *testing.B) {
	for _, c := range []struct {
		name           string
		size, inFlight int
	}{{"1KiB", 1 << 10, 64}, {"16MiB", 16 << 20, 4}} {
		payload := bytes.Repeat([]byte("mulegate"), c.size/8)
		rates := map[string]float64{}
		meta := func(run int64, i int) plugins.Meta {
			src := "dtn://mule" + strconv.Itoa(i%16) + "/app"
			m := plugins.Meta{
				BundleID: src + "|" + strconv.FormatInt(800000000000+run, 10) + "." + strconv.Itoa(i), Source: src,
				Destination: "dtn://cloud/files/app", CreationTime: uint64(800000000000 + run), Sequence: uint64(i),
				Lifetime: time.Hour, PayloadLength: int64(c.size), SignatureStatus: "unsigned",
			}
			m.Options = map[string]string{"key": fmt.Sprintf("bench/%d/%s", run, sdk.BundleKey(m.BundleID))}
			return m
		}
		deliver := func(b *testing.B, ad plugins.Adapter, ps benchtest.Procs) {
			run := benchRun.Add(1)
			rates[b.Name()] = runBench(b, ps, c.size, c.inFlight, func(i int) error {
				if res := ad.Deliver(b.Context(), meta(run, i), bytes.NewReader(payload)); res.Status != plugins.OK {
					return fmt.Errorf("object %d: %v", i, res)
				}
				return nil
			})
		}
		b.Run(c.name+"/sdk", func(b *testing.B) {
			srv := startServer(b, bucket)
			direct := sdkClient(srv)
			run := benchRun.Add(1)
			rates[b.Name()] = runBench(b, benchtest.Procs{"node": os.Getpid(), "server": srv.PID()}, c.size, c.inFlight, func(i int) error {
				mt := meta(run, i)
				_, err := direct.PutObject(b.Context(), &awss3.PutObjectInput{
					Bucket: aws.String(bucket), Key: aws.String(mt.Options["key"]), Body: bytes.NewReader(payload),
					ContentLength: aws.Int64(int64(c.size)), ContentType: aws.String("application/octet-stream"),
					ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
					Metadata: map[string]string{
						s3.MetaBundleID: mt.BundleID, s3.MetaSource: mt.Source, s3.MetaDestination: mt.Destination,
						s3.MetaCreated: mt.Created().UTC().Format("2006-01-02T15:04:05.000Z07:00"), s3.MetaLifetime: "3600000", s3.MetaSignature: "unsigned",
					},
				})
				return err
			})
		})
		b.Run(c.name+"/adapter", func(b *testing.B) {
			srv := startServer(b, bucket)
			m, ad := startAdapter(b, serverConfig(srv, nil))
			deliver(b, ad, benchtest.Procs{"node": os.Getpid(), "adapter": adapterPID(m), "server": srv.PID()})
		})
		b.Run(c.name+"/adapter-in-process", func(b *testing.B) {
			srv := startServer(b, bucket)
			deliver(b, inProcess(b, serverConfig(srv, nil)), benchtest.Procs{"node": os.Getpid(), "server": srv.PID()})
		})

		prefix := b.Name() + "/" + c.name + "/"
		a, s, ip := rates[prefix+"adapter"], rates[prefix+"sdk"], rates[prefix+"adapter-in-process"]
		if a > 0 && s > 0 {
			b.Logf("%s, %d in flight: adapter %.1f objects/s = %.0f%% of the SDK directly (%.1f/s); in process %.1f/s = %.0f%%",
				c.name, c.inFlight, a, 100*a/s, s, ip, 100*ip/s)
		}
	}
}
