package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// cleanupTimeout bounds the requests that tidy up after a delivery
// (aborting an upload), which run even when the delivery was cancelled.
const cleanupTimeout = 10 * time.Second

// KeyFor is where a bundle lands: the route's "key" option, or else the
// configured key template expanded (see ExpandKey). It fails for a key
// the adapter will not write.
func (a *Adapter) KeyFor(m plugins.Meta) (string, error) {
	st, err := a.cur.Get()
	if err != nil {
		return "", err
	}
	return st.keyFor(m)
}

func (st *state) keyFor(m plugins.Meta) (string, error) {
	key, from := m.Options["key"], "the route's key option"
	if key == "" {
		key, from = expandKey(st.cfg.Key, m), fmt.Sprintf("the adapter's key template %q", st.cfg.Key)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("object key from %s: %v", from, err)
	}
	if in := st.cfg.inbound; in != nil {
		for _, p := range []struct{ name, prefix string }{{"inbound.prefix", in.Prefix}, {"inbound.rejected_prefix", in.RejectedPrefix}} {
			if strings.HasPrefix(key, p.prefix) {
				return "", fmt.Errorf("object key %q from %s is under %s %q, where the adapter fetches or sets aside inbound objects: route these bundles to another key", key, from, p.name, p.prefix)
			}
		}
	}
	return key, nil
}

func (a *Adapter) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	st, err := a.cur.Get()
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	if res, ok := sdk.CheckMeta(meta, "delivered idempotently"); !ok {
		return res
	}
	key, err := st.keyFor(meta)
	if err != nil {
		return plugins.Rejected(err.Error())
	}
	ctype := st.cfg.ContentType
	if v := meta.Options["content_type"]; v != "" {
		if !printableASCII(v) {
			return plugins.Rejected(fmt.Sprintf("the route's content_type option %q is not printable ASCII", v))
		}
		ctype = v
	}
	o := object{key: key, contentType: ctype, metadata: objectMetadata(meta)}
	if meta.PayloadLength <= int64(st.cfg.MultipartThreshold) {
		return st.putSingle(ctx, o, meta, payload)
	}
	return st.putMultipart(ctx, o, meta, payload)
}

// object is what a delivery writes besides the bytes.
type object struct {
	key, contentType string
	metadata         map[string]string
}

// putSingle buffers the payload and sends it in one PutObject.
func (st *state) putSingle(ctx context.Context, o object, meta plugins.Meta, payload io.Reader) plugins.Result {
	n := meta.PayloadLength
	if err := st.mem.Acquire(ctx, n); err != nil {
		return plugins.RetryLater(0, "delivery cancelled while waiting for room in limits.max_buffer: "+err.Error())
	}
	defer st.mem.Release(n)
	buf := make([]byte, n)
	if err := readPart(payload, buf, 0, n); err != nil {
		return plugins.RetryLater(0, "the payload did not arrive whole: "+err.Error())
	}
	if err := sdk.CheckPayloadEnd(payload); err != nil {
		return plugins.RetryLater(0, "the payload did not arrive whole: "+err.Error())
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(st.cfg.Bucket),
		Key:           aws.String(o.key),
		Body:          bytes.NewReader(buf),
		ContentLength: aws.Int64(n),
		ContentType:   aws.String(o.contentType),
		Metadata:      o.metadata,
	}
	if st.cfg.checksums {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	if _, err := st.client.PutObject(ctx, in); err != nil {
		res := st.failed(ctx, "PutObject", o.key, err)
		st.logFailure(meta, o.key, res)
		return res
	}
	return plugins.Delivered()
}

// putMultipart streams the payload as a multipart upload, part by part,
// and completes it only once every part is in; on any failure it aborts
// the upload, so that no half object is ever visible.
func (st *state) putMultipart(ctx context.Context, o object, meta plugins.Meta, payload io.Reader) plugins.Result {
	size := meta.PayloadLength
	partSize := int64(st.cfg.PartSize)
	if parts := (size + partSize - 1) / partSize; parts > maxParts {
		// More than S3's 10,000 parts: larger parts, whole MiBs.
		partSize = ((size+maxParts-1)/maxParts + 1<<20 - 1) &^ (1<<20 - 1)
		if need := partSize * int64(st.cfg.Limits.PartConcurrency+1); need > int64(st.cfg.Limits.MaxBuffer) || partSize > maxPartSize {
			return plugins.Rejected(fmt.Sprintf("a %d-byte payload needs parts of %d bytes (S3 takes at most %d parts), more than limits.max_buffer (%v) holds %d+1 of",
				size, partSize, maxParts, st.cfg.Limits.MaxBuffer, st.cfg.Limits.PartConcurrency))
		}
	}
	if st.stored(ctx, o.key, meta) {
		st.log.Debug("payload already in the bucket", zap.String("bundle", meta.BundleID), zap.String("key", o.key))
		return plugins.Delivered()
	}
	started := time.Now()
	cin := &s3.CreateMultipartUploadInput{
		Bucket:      aws.String(st.cfg.Bucket),
		Key:         aws.String(o.key),
		ContentType: aws.String(o.contentType),
		Metadata:    o.metadata,
	}
	if st.cfg.checksums {
		cin.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	created, err := st.client.CreateMultipartUpload(ctx, cin)
	if err != nil {
		res := st.failed(ctx, "CreateMultipartUpload", o.key, err)
		st.logFailure(meta, o.key, res)
		return res
	}
	uploadID := aws.ToString(created.UploadId)
	completed := false
	defer func() {
		if !completed {
			st.abort(o.key, uploadID)
		}
	}()
	parts, res := st.uploadParts(ctx, o.key, uploadID, partSize, size, payload)
	if res.Status != plugins.OK {
		st.logFailure(meta, o.key, res)
		return res
	}
	// Last chance to back out: once completed, the object is visible.
	if err := ctx.Err(); err != nil {
		return plugins.RetryLater(0, "delivery cancelled: "+err.Error())
	}
	_, err = st.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(st.cfg.Bucket),
		Key:             aws.String(o.key),
		UploadId:        aws.String(uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		res := st.failed(ctx, "CompleteMultipartUpload", o.key, err)
		st.logFailure(meta, o.key, res)
		return res
	}
	completed = true
	st.abortOlderUploads(o.key, uploadID, started)
	return plugins.Delivered()
}

// part is one part of a multipart upload, filled and waiting to be sent.
type part struct {
	num int32
	buf *[]byte
	n   int64
	mem int64 // bytes held in st.mem for it
}

// uploadParts reads the payload part by part and uploads the parts, at
// most part_concurrency at once, while the next one is read. It returns
// the completed parts in order, or the Result of the first failure.
func (st *state) uploadParts(ctx context.Context, key, uploadID string, partSize, size int64, payload io.Reader) ([]types.CompletedPart, plugins.Result) {
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A part whose request is under way when the delivery fails or is
	// cancelled is let finish, for up to cleanupTimeout more, and only
	// then is the upload aborted: S3 may still store a part whose request
	// was cut off (the server goes on writing it), and a part stored
	// after the abort brings the upload back, holding its storage out of
	// sight. (versitygw did, in one run out of two.)
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pcancel()
	stopGrace := context.AfterFunc(uctx, func() {
		grace := time.AfterFunc(cleanupTimeout, pcancel)
		context.AfterFunc(pctx, func() { grace.Stop() })
	})
	defer stopGrace()
	var (
		mu   sync.Mutex
		fail *plugins.Result
	)
	setFail := func(r plugins.Result) {
		mu.Lock()
		if fail == nil {
			fail = &r
		}
		mu.Unlock()
		cancel()
	}
	release := func(p part) {
		if int64(len(*p.buf)) == int64(st.cfg.PartSize) {
			st.parts.Put(p.buf)
		}
		st.mem.Release(p.mem)
	}
	nparts := (size + partSize - 1) / partSize
	done := make([]types.CompletedPart, nparts)
	jobs := make(chan part)
	var wg sync.WaitGroup
	for range st.cfg.Limits.PartConcurrency {
		wg.Go(func() {
			for p := range jobs {
				if uctx.Err() == nil {
					cp, err := st.uploadPart(pctx, key, uploadID, p)
					if err != nil {
						setFail(st.failed(ctx, fmt.Sprintf("UploadPart %d", p.num), key, err))
					} else {
						done[p.num-1] = cp
					}
				}
				release(p)
			}
		})
	}
	for num, off := int32(1), int64(0); off < size && uctx.Err() == nil; num++ {
		n := min(partSize, size-off)
		if err := st.mem.Acquire(uctx, partSize); err != nil {
			setFail(plugins.RetryLater(0, "delivery cancelled while waiting for room in limits.max_buffer: "+err.Error()))
			break
		}
		p := part{num: num, n: n, mem: partSize}
		if partSize == int64(st.cfg.PartSize) {
			p.buf = st.parts.Get().(*[]byte)
		} else {
			b := make([]byte, partSize)
			p.buf = &b
		}
		if err := readPart(payload, (*p.buf)[:n], off, size); err != nil {
			release(p)
			setFail(plugins.RetryLater(0, "the payload did not arrive whole: "+err.Error()))
			break
		}
		select {
		case jobs <- p:
			off += n
		case <-uctx.Done():
			release(p)
		}
	}
	close(jobs)
	wg.Wait()
	if fail == nil && ctx.Err() != nil {
		return nil, plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
	}
	if fail == nil {
		if err := sdk.CheckPayloadEnd(payload); err != nil {
			return nil, plugins.RetryLater(0, "the payload did not arrive whole: "+err.Error())
		}
	}
	if fail != nil {
		return nil, *fail
	}
	return done, plugins.Delivered()
}

func (st *state) uploadPart(ctx context.Context, key, uploadID string, p part) (types.CompletedPart, error) {
	in := &s3.UploadPartInput{
		Bucket:        aws.String(st.cfg.Bucket),
		Key:           aws.String(key),
		UploadId:      aws.String(uploadID),
		PartNumber:    aws.Int32(p.num),
		Body:          bytes.NewReader((*p.buf)[:p.n]),
		ContentLength: aws.Int64(p.n),
	}
	if st.cfg.checksums {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	out, err := st.client.UploadPart(ctx, in)
	if err != nil {
		return types.CompletedPart{}, err
	}
	return types.CompletedPart{PartNumber: aws.Int32(p.num), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32}, nil
}

// stored tells whether key already holds this bundle's whole payload,
// from an earlier delivery: its metadata names the bundle and its size
// matches. (A multipart upload is visible only once complete.)
func (st *state) stored(ctx context.Context, key string, meta plugins.Meta) bool {
	out, err := st.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		return false
	}
	return aws.ToInt64(out.ContentLength) == meta.PayloadLength && metaGet(out.Metadata, MetaBundleID) == meta.BundleID
}

// metaGet reads a metadata value, whatever the case of its name.
func metaGet(md map[string]string, name string) string {
	if v, ok := md[name]; ok {
		return ParseMetaValue(v)
	}
	for k, v := range md {
		if strings.EqualFold(k, name) {
			return ParseMetaValue(v)
		}
	}
	return ""
}

// abort aborts a multipart upload that will not be completed, so that S3
// drops its parts. It runs even when the delivery was cancelled. If it
// fails (the server is down), the upload stays, invisible, until the next
// delivery to the same key completes (abortOlderUploads) or a lifecycle
// rule removes it.
func (st *state) abort(key, uploadID string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := st.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(st.cfg.Bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
	})
	if err != nil && !gone(err) {
		st.log.Warn("cannot abort an unfinished multipart upload; it stays, invisible, until the next delivery to this key completes",
			zap.String("key", key), zap.String("upload_id", uploadID), zap.String("error", inspect(err).String()))
	}
}

// abortOlderUploads aborts the incomplete uploads of key begun before
// ours: left by an attempt that was cut off (a crash, a server that went
// down), they would otherwise hold their parts' storage forever. Uploads
// begun after ours (another gateway delivering the same bundle now) are
// left alone.
func (st *state) abortOlderUploads(key, ours string, started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	out, err := st.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(st.cfg.Bucket), Prefix: aws.String(key)})
	if err != nil {
		st.log.Debug("cannot list multipart uploads", zap.String("key", key), zap.String("error", inspect(err).String()))
		return
	}
	for _, u := range out.Uploads {
		id := aws.ToString(u.UploadId)
		if aws.ToString(u.Key) != key || id == ours || u.Initiated == nil || !u.Initiated.Before(started) {
			continue
		}
		st.abort(key, id)
		st.log.Info("aborted an incomplete upload left by an earlier attempt", zap.String("key", key), zap.String("upload_id", id))
	}
}

func (st *state) logFailure(meta plugins.Meta, key string, res plugins.Result) {
	if res.Status == plugins.Reject {
		st.log.Warn("S3 refused a bundle for good", zap.String("bundle", meta.BundleID), zap.String("key", key), zap.String("reason", res.Reason))
	} else {
		st.log.Info("delivery failed; the node will retry", zap.String("bundle", meta.BundleID), zap.String("key", key), zap.String("reason", res.Reason))
	}
}

// readPart fills buf from the payload, whose bytes [off, off+len(buf))
// these are of size.
func readPart(r io.Reader, buf []byte, off, size int64) error {
	k, err := io.ReadFull(r, buf)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("it ended after %d of %d bytes: %w", off+int64(k), size, io.ErrUnexpectedEOF)
	}
	return err
}
