package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

const (
	// headerSlack is room kept below max_payload besides the headers the
	// adapter writes, for what the server or client may add.
	headerSlack = 512
	// objectChunkSize is the object store's chunk size: nats.go's default,
	// and well below any sensible max_payload.
	objectChunkSize = 128 << 10
	// lookupTimeout bounds the JetStream API calls that explain a failed
	// publish.
	lookupTimeout = 3 * time.Second
)

// SubjectFor is the subject a bundle is published to: the route's
// "subject" option, or else the configured template, expanded.
func (st *state) subjectFor(m plugins.Meta) (string, error) {
	subject := m.Options["subject"]
	from := "the route's subject option"
	if subject == "" {
		if st.cfg.Subject == "" {
			return "", errors.New("no subject: give the route a subject option, or the adapter a default subject")
		}
		subject = ExpandSubject(st.cfg.Subject, m)
		from = "the adapter's subject " + strconv.Quote(st.cfg.Subject)
	}
	if err := checkSubject(subject, false); err != nil {
		return "", fmt.Errorf("subject from %s: %v", from, err)
	}
	return subject, nil
}

// OutboundHeaders are the headers a bundle's message carries.
func OutboundHeaders(m plugins.Meta) nats.Header {
	// One array holds every value, to allocate once rather than once a
	// header: this runs for every bundle. Each value's slice is capped at
	// its length, so that an Add to one header cannot overwrite the next.
	vals := make([]string, 0, 7)
	h := make(nats.Header, 7)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(HeaderMsgID, headerValue(m.BundleID))
	set(HeaderSource, headerValue(m.Source))
	set(HeaderDestination, headerValue(m.Destination))
	if m.ReportTo != "" && m.ReportTo != "dtn:none" {
		set(HeaderReportTo, headerValue(m.ReportTo))
	}
	if t := m.Created(); !t.IsZero() {
		set(HeaderCreated, t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	set(HeaderLifetime, strconv.FormatInt(m.Lifetime.Milliseconds(), 10))
	if m.SignatureStatus != "" {
		set(HeaderSignature, headerValue(m.SignatureStatus))
	}
	return h
}

// headerSize is the size of h on the wire.
func headerSize(h nats.Header) int64 {
	n := int64(len("NATS/1.0\r\n\r\n"))
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(": ") + len(v) + len("\r\n"))
		}
	}
	return n
}

func (a *Adapter) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	st, err := a.cur.Get()
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	if res, ok := sdk.CheckMeta(meta, "published idempotently"); !ok {
		return res
	}
	subject, err := st.subjectFor(meta)
	if err != nil {
		return plugins.Rejected(err.Error())
	}
	if err := st.connected(); err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	if err := st.ensureStreams(ctx); err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	hdr := OutboundHeaders(meta)
	room := st.nc.MaxPayload() - headerSize(hdr) - headerSlack
	bucket := st.cfg.ObjectStore.Bucket
	if meta.PayloadLength > room {
		if bucket == "" {
			return plugins.Rejected(fmt.Sprintf("the payload (%d bytes) is larger than the server's max_payload allows (%d bytes), and the object store is off (object_store.bucket is empty)", meta.PayloadLength, room))
		}
		return st.deliverObject(ctx, subject, hdr, meta, payload)
	}

	// Small enough for one message: buffer it, so that it can still go to
	// the object store if the stream's own size limit refuses it.
	data := make([]byte, meta.PayloadLength)
	_, err = io.ReadFull(sdk.ExactPayload(payload, meta.PayloadLength), data)
	if err == nil && meta.PayloadLength == 0 {
		err = sdk.CheckPayloadEnd(payload)
	}
	if err != nil {
		return plugins.RetryLater(0, "the payload did not arrive whole: "+err.Error())
	}
	msg := &nats.Msg{Subject: subject, Header: hdr, Data: data}
	res, tooBig := st.publish(ctx, msg)
	if !tooBig {
		return res
	}
	if bucket == "" {
		return plugins.Rejected(res.Reason + ", and the object store is off (object_store.bucket is empty)")
	}
	hdr = OutboundHeaders(meta) // publish may have added to the headers
	return st.deliverObject(ctx, subject, hdr, meta, bytes.NewReader(data))
}

// publish publishes msg and waits for its PubAck. tooBig reports that the
// message was refused for its size only, so that the object store can
// take it instead; res.Reason says why.
func (st *state) publish(ctx context.Context, msg *nats.Msg) (res plugins.Result, tooBig bool) {
	start := time.Now()
	ack, err := st.pub.publish(ctx, msg)
	if err == nil {
		if ack.Duplicate {
			st.log.Debug("already published", zap.String("msg_id", msg.Header.Get(HeaderMsgID)), zap.String("stream", ack.Stream))
		}
		return plugins.Delivered(), false
	}
	return st.failed(ctx, msg.Subject, start, err)
}

// failed turns a failed publish into Retry or Reject.
func (st *state) failed(ctx context.Context, subject string, start time.Time, err error) (plugins.Result, bool) {
	if errors.Is(err, nats.ErrMaxPayload) {
		return plugins.Rejected(fmt.Sprintf("the message is larger than the server's max_payload (%d bytes)", st.nc.MaxPayload())), true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return plugins.Rejected("the stream refused the message as too large: " + apiErr.Description), true
		case apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 && apiErr.Code != 409 && apiErr.Code != 429:
			return plugins.Rejected(fmt.Sprintf("JetStream refused the message for %q: %s (error %d)", subject, apiErr.Description, apiErr.ErrorCode)), false
		}
		return plugins.RetryLater(0, fmt.Sprintf("JetStream could not store the message: %s (error %d)", apiErr.Description, apiErr.ErrorCode)), false
	}
	if st.denied.since(subject, start) {
		return plugins.Rejected(fmt.Sprintf("this connection is not permitted to publish to %q", subject)), false
	}
	if ctx.Err() != nil {
		return plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error()), false
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return st.noStream(ctx, subject), false
	}
	if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		return plugins.RetryLater(0, fmt.Sprintf("no room to publish to %q: %d messages waited for their PubAck all of %v", subject, publishWindow, time.Duration(st.cfg.PublishTimeout))), false
	}
	if errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return plugins.RetryLater(0, fmt.Sprintf("no PubAck for %q within %v", subject, time.Duration(st.cfg.PublishTimeout))), false
	}
	return plugins.RetryLater(0, fmt.Sprintf("publishing to %q: %v", subject, err)), false
}

// noStream explains a publish nobody answered: a subject that no stream
// stores is refused for good; anything else (a server restarting, a
// stream leader moving) is worth a retry.
func (st *state) noStream(ctx context.Context, subject string) plugins.Result {
	for _, sc := range st.cfg.Streams {
		for _, f := range sc.Subjects {
			if subjectMatches(f, subject) {
				// Ours to create: perhaps it was deleted behind our back.
				st.streamsMissing()
				return plugins.RetryLater(0, fmt.Sprintf("stream %q did not answer for %q; it will be created again if it is missing", sc.Name, subject))
			}
		}
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	_, err := st.js.StreamNameBySubject(lctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return plugins.Rejected(fmt.Sprintf("subject %q is not bound to any JetStream stream: add it to a stream's subjects (or list a stream under the adapter's streams), or route these bundles to another subject", subject))
	}
	why := "JetStream did not answer"
	if err != nil {
		why += ": " + err.Error()
	}
	return plugins.RetryLater(0, fmt.Sprintf("no PubAck for %q: %s", subject, why))
}

// deliverObject streams the payload into the object store and publishes a
// reference to it.
func (st *state) deliverObject(ctx context.Context, subject string, hdr nats.Header, meta plugins.Meta, payload io.Reader) plugins.Result {
	bucket := st.cfg.ObjectStore.Bucket
	obs, err := st.objectStore(ctx, true)
	if err != nil {
		return plugins.RetryLater(0, fmt.Sprintf("object store bucket %q: %v", bucket, err))
	}
	name := ObjectName(meta.BundleID)
	info, ok := st.storedObject(ctx, obs, bucket, name, meta)
	if !ok {
		objHdr := nats.Header{}
		for k, v := range hdr {
			if k != HeaderMsgID {
				objHdr[k] = v
			}
		}
		r := sdk.ExactPayload(payload, meta.PayloadLength)
		info, err = obs.Put(ctx, jetstream.ObjectMeta{
			Name:        name,
			Description: "payload of bundle " + meta.BundleID,
			Headers:     objHdr,
			Metadata:    map[string]string{"bundle_id": meta.BundleID},
			Opts:        &jetstream.ObjectMetaOptions{ChunkSize: chunkSize(st.nc.MaxPayload())},
		}, fullReader{r})
		switch {
		case r.Err() != nil:
			return plugins.RetryLater(0, "the payload did not arrive whole: "+r.Err().Error())
		case err != nil && ctx.Err() != nil:
			return plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
		case err != nil:
			return putFailed(bucket, err)
		case info.Size != uint64(meta.PayloadLength):
			return plugins.RetryLater(0, fmt.Sprintf("the object store holds %d bytes of the %d-byte payload", info.Size, meta.PayloadLength))
		}
	}
	ref := ObjectRef{Bucket: bucket, Name: name, Size: info.Size, Digest: info.Digest, BundleID: meta.BundleID}
	body, err := json.Marshal(ref)
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	hdr.Set(HeaderObject, bucket+"/"+headerValue(name))
	hdr.Set(HeaderObjectSize, strconv.FormatUint(info.Size, 10))
	hdr.Set(HeaderObjectDigest, info.Digest)
	res, tooBig := st.publish(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: body})
	if tooBig {
		return plugins.Rejected("even the reference message is too large: " + res.Reason)
	}
	return res
}

// putFailed turns a failed object store Put into Retry, or Reject when
// JetStream refused it for good.
func putFailed(bucket string, err error) plugins.Result {
	why := fmt.Sprintf("storing the payload in object store bucket %q: %v", bucket, err)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 && apiErr.Code != 409 && apiErr.Code != 429 {
		return plugins.Rejected(why)
	}
	return plugins.RetryLater(0, why)
}

// chunkSize is the object store's chunk size under this max_payload: each
// chunk is one message, with a few headers.
func chunkSize(maxPayload int64) uint32 {
	return uint32(min(objectChunkSize, max(maxPayload-1024, 512)))
}

// storedObject tells whether the bucket already holds this bundle's whole
// payload, from an earlier delivery: the object's metadata names the
// bundle, its size matches, and all its chunks are in the bucket's stream
// (a Put that failed half way may leave the metadata without chunks).
func (st *state) storedObject(ctx context.Context, obs jetstream.ObjectStore, bucket, name string, meta plugins.Meta) (*jetstream.ObjectInfo, bool) {
	info, err := obs.GetInfo(ctx, name)
	if err != nil || info.Deleted || info.Size != uint64(meta.PayloadLength) || info.Metadata["bundle_id"] != meta.BundleID {
		return nil, false
	}
	stream, err := st.js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, false
	}
	chunks := "$O." + bucket + ".C." + info.NUID
	si, err := stream.Info(ctx, jetstream.WithSubjectFilter(chunks))
	if err != nil || si.State.Subjects[chunks] != uint64(info.Chunks) {
		return nil, false
	}
	st.log.Debug("payload already in the object store", zap.String("bundle", meta.BundleID))
	return info, true
}

// fullReader fills each buffer it is given, so that the object store
// writes full chunks even when the payload arrives in smaller pieces.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, idle := 0, 0
	for n < len(p) {
		m, err := f.r.Read(p[n:])
		n += m
		switch {
		case errors.Is(err, io.EOF) && n > 0:
			return n, nil // a short last chunk; the next Read says EOF
		case err != nil:
			return n, err
		case m == 0:
			if idle++; idle > 100 {
				return n, io.ErrNoProgress
			}
		}
	}
	return n, nil
}
