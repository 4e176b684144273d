package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

const (
	// maxLeases bounds the objects the adapter remembers as offered (or
	// nacked) and not yet settled.
	maxLeases = 65536
	// maxWarned bounds the keys the adapter remembers having warned about.
	maxWarned = 10000
	// listPage is the most keys one ListObjectsV2 asks for.
	listPage = 1000
	// maxMetadata is the most bytes of user metadata (names and values)
	// S3 takes on one object.
	maxMetadata = 2048
	// maxReason is the most bytes of a reason kept in metadata.
	maxReason = 512
)

// inbox is what the adapter remembers about inbound objects between
// fetches.
type inbox struct {
	mu     sync.Mutex
	leases map[string]time.Time // key → not offered again before
	warned map[string]bool      // keys already logged as left alone
	resume string               // the next Fetch lists after this key
}

func (b *inbox) init() {
	b.leases = map[string]time.Time{}
	b.warned = map[string]bool{}
}

// lease reserves key for d unless it is reserved already.
func (b *inbox) lease(key string, d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if until, ok := b.leases[key]; ok && now.Before(until) {
		return false
	}
	if len(b.leases) >= maxLeases {
		for k, until := range b.leases {
			if !now.Before(until) {
				delete(b.leases, k)
			}
		}
		if len(b.leases) >= maxLeases {
			return false // settle some first
		}
	}
	b.leases[key] = now.Add(d)
	return true
}

// hold sets key's lease to d from now, whatever it was.
func (b *inbox) hold(key string, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.leases[key]; ok || len(b.leases) < maxLeases {
		b.leases[key] = time.Now().Add(d)
	}
}

func (b *inbox) unlease(key string) {
	b.mu.Lock()
	delete(b.leases, key)
	b.mu.Unlock()
}

func (b *inbox) leased(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.leases[key]
	return ok && now.Before(until)
}

// firstWarning tells whether key has not been warned about yet, and
// remembers that it has now.
func (b *inbox) firstWarning(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.warned[key] || len(b.warned) >= maxWarned {
		return false
	}
	b.warned[key] = true
	return true
}

func (b *inbox) resumeAfter() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.resume
}

func (b *inbox) setResume(key string) {
	b.mu.Lock()
	b.resume = key
	b.mu.Unlock()
}

func (st *state) inboundConfig() (*Inbound, error) {
	if st.cfg.inbound == nil {
		return nil, fmt.Errorf("%w: this s3 adapter has no inbound block in its configuration", plugins.ErrUnsupported)
	}
	return st.cfg.inbound, nil
}

func (a *Adapter) Fetch(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	in, err := st.inboundConfig()
	if err != nil {
		return err
	}
	err = sdk.LongPoll(ctx, req.Wait, time.Duration(in.PollInterval), nil, func() (int, error) {
		return st.offer(ctx, in, req, fn)
	})
	if errors.Is(err, plugins.ErrFetchLimit) {
		return nil
	}
	return err
}

// offer lists the inbound objects and hands fn those that are not leased,
// in key order, up to the request's limits; it returns how many fn took.
// It lists at most limits.max_scan keys; when there are more, the next
// offer goes on after the last one listed.
func (st *state) offer(ctx context.Context, in *Inbound, req plugins.FetchRequest, fn func(plugins.Inbound) error) (int, error) {
	limit := max(req.MaxMessages, 1)
	taken, scanned := 0, 0
	start := st.inbox.resumeAfter()
	var token, last string
	for scanned < st.cfg.Limits.MaxScan {
		lin := &s3.ListObjectsV2Input{
			Bucket:  aws.String(st.cfg.Bucket),
			Prefix:  aws.String(in.Prefix),
			MaxKeys: aws.Int32(int32(min(listPage, st.cfg.Limits.MaxScan-scanned))),
		}
		if token != "" {
			lin.ContinuationToken = aws.String(token)
		} else if start != "" {
			lin.StartAfter = aws.String(start)
		}
		out, err := st.client.ListObjectsV2(ctx, lin)
		if err != nil {
			return taken, st.unreachable("listing "+in.Prefix, err)
		}
		for _, obj := range out.Contents {
			scanned++
			key := aws.ToString(obj.Key)
			last = key
			ok, err := st.offerListed(ctx, in, req, obj, fn)
			if ok {
				taken++
			}
			if err != nil {
				return taken, err
			}
			if taken >= limit {
				return taken, nil
			}
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			// The end: the next offer starts at the beginning again.
			st.inbox.setResume("")
			return taken, nil
		}
		token = aws.ToString(out.NextContinuationToken)
	}
	st.inbox.setResume(last)
	return taken, nil
}

// offerListed offers one listed object, unless it is leased, a directory
// marker, or larger than the request takes. ok reports that fn took it.
func (st *state) offerListed(ctx context.Context, in *Inbound, req plugins.FetchRequest, obj types.Object, fn func(plugins.Inbound) error) (ok bool, err error) {
	key, etag, size := aws.ToString(obj.Key), aws.ToString(obj.ETag), aws.ToInt64(obj.Size)
	if strings.HasSuffix(key, "/") || st.inbox.leased(key, time.Now()) {
		return false, nil
	}
	if req.MaxBytes > 0 && size > req.MaxBytes {
		// Alone over the cap: offering it would stop this fetch and every
		// later one before it. It waits, and is said to wait, instead.
		if st.inbox.firstWarning(key) {
			st.log.Warn("leaving an inbound object alone: it is larger than the node takes",
				zap.String("key", key), zap.Int64("bytes", size), zap.Int64("max_bytes", req.MaxBytes))
		}
		return false, nil
	}
	if !st.inbox.lease(key, time.Duration(in.Lease)) {
		return false, nil
	}
	taken := false
	defer func() {
		if !taken {
			st.inbox.unlease(key)
		}
	}()
	out, err := st.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.cfg.Bucket), Key: aws.String(key), IfMatch: aws.String(etag)})
	if err != nil {
		if gone(err) || changed(err) {
			return false, nil // deleted or replaced since the listing; the next one shows it
		}
		return false, st.unreachable("reading "+key, err)
	}
	defer out.Body.Close()
	if v := aws.ToString(out.ETag); v != "" {
		etag = v
	}
	dest, derr := st.destination(in, key, out.Metadata)
	if derr != nil {
		_ = out.Body.Close()
		st.noDestination(ctx, in, key, etag, derr)
		taken = true // held back, not offered: see noDestination
		return false, nil
	}
	lifetime := time.Duration(in.Lifetime)
	if l, ok := sdk.ParseLifetime(metaGet(out.Metadata, MetaLifetime)); ok {
		lifetime = l
	}
	err = fn(plugins.Inbound{
		Receipt:       receiptFor(etag, key),
		MessageID:     MessageID(st.cfg.Bucket, key, etag),
		Destination:   dest,
		Lifetime:      lifetime,
		Headers:       inboundHeaders(st.cfg.Bucket, key, etag, out),
		PayloadLength: aws.ToInt64(out.ContentLength),
		Payload:       out.Body,
	})
	if err != nil {
		return false, err
	}
	taken = true
	return true, nil
}

// destination is where an inbound object goes: the EID in its
// MetaDestination metadata, or else its key's, or else, for an object
// directly under the prefix, default_destination.
func (st *state) destination(in *Inbound, key string, md map[string]string) (string, error) {
	if v := metaGet(md, MetaDestination); v != "" {
		if err := sdk.CheckEID(v); err != nil {
			return "", fmt.Errorf("metadata %s: %v", MetaDestination, err)
		}
		return v, nil
	}
	if in.DefaultDestination != "" && !strings.Contains(strings.TrimPrefix(key, in.Prefix), "/") {
		return in.DefaultDestination, nil
	}
	return DestinationForKey(in.Prefix, key)
}

// noDestination sets aside an object that names no destination. If that
// fails, it is left where it is and tried again after nack_delay.
func (st *state) noDestination(ctx context.Context, in *Inbound, key, etag string, why error) {
	reason := "no destination: " + why.Error()
	to, err := st.setAside(ctx, in, key, etag, reason)
	if err != nil {
		st.inbox.hold(key, time.Duration(in.NackDelay))
		st.log.Warn("cannot set aside an inbound object with no destination; leaving it for now",
			zap.String("key", key), zap.String("reason", reason), zap.Error(err))
		return
	}
	st.inbox.unlease(key)
	if to != "" {
		st.log.Warn("set aside an inbound object with no destination", zap.String("key", key), zap.String("to", to), zap.String("reason", reason))
	}
}

// inboundHeaders is what the node learns about a fetched object besides
// its destination: where it was, and its metadata as "meta.<name>".
func inboundHeaders(bucket, key, etag string, out *s3.GetObjectOutput) map[string]string {
	h := map[string]string{
		"bucket":   bucket,
		"key":      strings.ToValidUTF8(key, "\uFFFD"),
		"filename": strings.ToValidUTF8(path.Base(key), "\uFFFD"),
		"etag":     etag,
	}
	if out.LastModified != nil {
		h["last_modified"] = out.LastModified.UTC().Format(time.RFC3339)
	}
	if ct := aws.ToString(out.ContentType); ct != "" {
		h["content_type"] = ct
	}
	for k, v := range out.Metadata {
		h["meta."+strings.ToLower(k)] = strings.ToValidUTF8(ParseMetaValue(v), "\uFFFD")
	}
	return h
}

func (a *Adapter) receipt(rs string) (*state, *Inbound, string, string, error) {
	st, err := a.cur.Get()
	if err != nil {
		return nil, nil, "", "", err
	}
	in, err := st.inboundConfig()
	if err != nil {
		return nil, nil, "", "", err
	}
	etag, key, err := parseReceipt(rs, in.Prefix)
	if err != nil {
		return nil, nil, "", "", err
	}
	return st, in, etag, key, nil
}

// Ack deletes the acknowledged object, if it is still the version that
// was offered.
func (a *Adapter) Ack(ctx context.Context, rs string) error {
	st, _, etag, key, err := a.receipt(rs)
	if err != nil {
		return err
	}
	defer st.inbox.unlease(key)
	err = st.deleteVersion(ctx, key, etag)
	if errors.Is(err, errReplaced) {
		st.log.Warn("an acknowledged inbound object was replaced after it was fetched; keeping the new one", zap.String("key", key))
		return nil
	}
	return err
}

// errReplaced: the object under a receipt's key is another version now.
var errReplaced = errors.New("the object was replaced")

// deleteVersion deletes key if it still is the version with etag. An
// object that is gone already is fine; one that was replaced is kept
// (errReplaced).
func (st *state) deleteVersion(ctx context.Context, key, etag string) error {
	_, err := st.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.cfg.Bucket), Key: aws.String(key), IfMatch: aws.String(etag)})
	switch {
	case err == nil:
	case gone(err):
		return nil // acknowledged twice, or removed by hand: either way gone
	case changed(err):
		return errReplaced
	default:
		return st.unreachable("looking up "+key, err)
	}
	// If-Match closes the gap between the HEAD and the DELETE where the
	// server supports conditional deletes; one that refuses the header
	// gets plain deletes from then on.
	din := &s3.DeleteObjectInput{Bucket: aws.String(st.cfg.Bucket), Key: aws.String(key)}
	if !st.noConditionalDelete.Load() {
		din.IfMatch = aws.String(etag)
	}
	_, err = st.client.DeleteObject(ctx, din)
	if e := inspect(err); err != nil && din.IfMatch != nil && (e.status == http.StatusNotImplemented || e.code == "NotImplemented") {
		st.noConditionalDelete.Store(true)
		din.IfMatch = nil
		_, err = st.client.DeleteObject(ctx, din)
	}
	switch {
	case err == nil, gone(err):
		return nil
	case changed(err):
		return errReplaced
	}
	return st.unreachable("deleting "+key, err)
}

// Nack keeps the object and offers it again after nack_delay.
func (a *Adapter) Nack(_ context.Context, rs, reason string) error {
	st, in, _, key, err := a.receipt(rs)
	if err != nil {
		return err
	}
	st.inbox.hold(key, time.Duration(in.NackDelay))
	st.log.Info("the node could not take an inbound object; offering it again later",
		zap.String("key", key), zap.String("reason", reason), zap.Duration("after", time.Duration(in.NackDelay)))
	return nil
}

// Reject sets the object aside for good: it is copied under
// rejected_prefix, keeping its path under prefix, with the node's reason
// in its metadata, and only then deleted. A crash between the two steps
// leaves both; the original is then offered (and rejected) again, and
// the second copy gets a numbered name. An object that is gone already
// is fine; one replaced since it was fetched is kept, to be offered.
func (a *Adapter) Reject(ctx context.Context, rs, reason string) error {
	st, in, etag, key, err := a.receipt(rs)
	if err != nil {
		return err
	}
	defer st.inbox.unlease(key)
	to, err := st.setAside(ctx, in, key, etag, reason)
	if err != nil {
		return err
	}
	if to != "" {
		st.log.Warn("the node refused an inbound object for good; moved it aside",
			zap.String("key", key), zap.String("to", to), zap.String("reason", reason))
	}
	return nil
}

// setAside copies the object at key, if it is still the version with
// etag, under the rejected prefix with reason in its metadata, and then
// deletes it. to is where it went; "" when there was nothing to move (it
// is gone, or was replaced and stays to be offered).
func (st *state) setAside(ctx context.Context, in *Inbound, key, etag, reason string) (to string, err error) {
	bucket := aws.String(st.cfg.Bucket)
	head, err := st.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: bucket, Key: aws.String(key), IfMatch: aws.String(etag)})
	switch {
	case err == nil:
	case gone(err):
		return "", nil
	case changed(err):
		st.log.Warn("an inbound object was replaced after it was fetched; keeping the new one, which will be offered", zap.String("key", key))
		return "", nil
	default:
		return "", st.unreachable("looking up "+key, err)
	}
	if n := aws.ToInt64(head.ContentLength); n > maxSinglePut {
		return "", fmt.Errorf("%s is %d bytes, more than one CopyObject moves (5GiB): move it aside by hand", key, n)
	}
	rel := strings.TrimPrefix(key, in.Prefix)
	target, err := st.freeKey(ctx, in.RejectedPrefix+rel)
	if err != nil {
		return "", err
	}
	cin := &s3.CopyObjectInput{
		Bucket:            bucket,
		Key:               aws.String(target),
		CopySource:        aws.String((&url.URL{Path: st.cfg.Bucket + "/" + key}).EscapedPath()),
		CopySourceIfMatch: aws.String(etag),
		MetadataDirective: types.MetadataDirectiveReplace,
		Metadata:          rejectedMetadata(head.Metadata, key, reason, time.Now()),
		ContentType:       head.ContentType,
	}
	if _, err := st.client.CopyObject(ctx, cin); err != nil {
		if gone(err) || changed(err) {
			return "", nil
		}
		return "", st.unreachable(fmt.Sprintf("copying %s to %s", key, target), err)
	}
	if err := st.deleteVersion(ctx, key, etag); err != nil && !errors.Is(err, errReplaced) {
		return "", fmt.Errorf("copied %s to %s, but %w", key, target, err)
	}
	return target, nil
}

// freeKey returns key, or key with ".1", ".2", … added, whichever is the
// first that holds no object: an earlier rejected object of the same name
// is kept.
func (st *state) freeKey(ctx context.Context, key string) (string, error) {
	for i := range 1000 {
		cand := key
		if i > 0 {
			cand = fmt.Sprintf("%s.%d", key, i)
		}
		_, err := st.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.cfg.Bucket), Key: aws.String(cand)})
		if gone(err) {
			return cand, nil
		}
		if err != nil {
			return "", st.unreachable("looking up "+cand, err)
		}
	}
	return "", fmt.Errorf("%s: a thousand rejected objects of that name already; clear them", key)
}

// rejectedMetadata is a rejected object's metadata: the reason, when, and
// the original key first, then as much of its own metadata as S3's 2 KiB
// leave room for.
func rejectedMetadata(orig map[string]string, key, reason string, at time.Time) map[string]string {
	md := map[string]string{
		MetaRejectedReason: MetaValue(truncate(reason, maxReason)),
		MetaRejectedAt:     at.UTC().Format(time.RFC3339),
		MetaOriginalKey:    MetaValue(truncate(key, maxKeyLen)),
	}
	used := 0
	for k, v := range md {
		used += len(k) + len(v)
	}
	for k, v := range orig {
		k = strings.ToLower(k)
		if _, ours := md[k]; ours || used+len(k)+len(v) > maxMetadata {
			continue
		}
		md[k] = v
		used += len(k) + len(v)
	}
	return md
}

// truncate cuts s to at most n bytes, on a character boundary, marking
// the cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
