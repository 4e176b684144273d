// Package s3 is the built-in "s3" adapter: it delivers bundles as objects
// to an S3 bucket (AWS, or any S3-compatible server: MinIO, versitygw,
// Ceph, Garage, …), one object per bundle under a key that is the same on
// every delivery, and fetches inbound messages from objects put under an
// inbox prefix, deleting each only once the node has stored it. The node
// runs it as `mulegate adapter s3`. README.md beside this file is the
// operator's guide; this comment is the reference.
//
// # Configuration
//
//	endpoint:        URL of an S3-compatible server (default: AWS S3 for the region)
//	region:          the bucket's region (default "us-east-1")
//	bucket:          the bucket (required); it is never created
//	path_style:      address the bucket as <endpoint>/<bucket> rather than
//	                 <bucket>.<endpoint> (needed for most S3-compatible
//	                 servers, and for an endpoint that is an IP address)
//	credentials:     a static access key; without it the AWS SDK's default
//	                 chain is used (environment, shared files, web identity, ECS, EC2)
//	  access_key_id, secret_access_key, session_token (optional)
//	tls:
//	  ca_file:         PEM roots for an https:// endpoint (default: the system's)
//	key:             default key template, when the route gives no key option:
//	                 {src_node}, {dst_node}, {service}, {date}, {seq}, {bundle_key}
//	                 (default "bundles/{src_node}/{date}/{bundle_key}")
//	content_type:    default Content-Type (default "application/octet-stream")
//	checksums:       send CRC32 checksums with uploads (default true; false
//	                 for servers that refuse x-amz-checksum-* headers)
//	part_size:       multipart part size (default "8MiB"; 5MiB to 5GiB)
//	multipart_threshold: payloads larger than this go as multipart
//	                 uploads (default "16MiB"; at most 5GiB)
//	connect_timeout: one TCP (and TLS) connection attempt (default "5s")
//	response_timeout: waiting for the server's answer once a request is
//	                 sent (default "1m")
//	max_attempts:    attempts the SDK makes of one request, for errors
//	                 worth retrying at once (default 3, at most 10)
//	limits:
//	  max_buffer:      payload bytes all deliveries together hold in memory
//	                   (default "128MiB"; at least multipart_threshold and
//	                   part_size × (part_concurrency + 1))
//	  part_concurrency: parts of one upload in flight at once (default 2)
//	  max_scan:        inbound keys one Fetch lists at most (default 10000)
//	inbound:         turns fetching on; without it Fetch is unsupported
//	  prefix:          where inbound objects are put (default "inbox/")
//	  rejected_prefix: where refused objects are moved (default "rejected/")
//	  default_destination: EID for objects directly under prefix
//	  lifetime:        bundle lifetime for inbound messages (default: the node's)
//	  poll_interval:   how often a waiting Fetch lists again (default "2s")
//	  lease:           offer a fetched, unacknowledged object again after this (default "10m")
//	  nack_delay:      offer a nacked object again after this (default "30s")
//
// Sizes are a number of bytes or a string such as "8MiB" or "16MB".
// Configure checks the block and builds the client; it never contacts the
// server, so a server that is down when the adapter starts is reported by
// Check, and deliveries answer Retry until it is back.
//
// # Delivery
//
// A bundle becomes the object at the route's "key" option (the node
// expands its templates: {src_node}, {bundle_key}, …), or else at the
// configured key template, expanded by the adapter (ExpandKey). Either way
// the key is the same on every delivery of the bundle, so a redelivery
// overwrites the same object with the same bytes: S3 is idempotent on the
// bundle ID. The route's "content_type" option sets the Content-Type. The
// object's metadata (x-amz-meta-*) carries the bundle: MetaBundleID,
// MetaSource, MetaDestination, MetaReportTo, MetaCreated, MetaLifetime and
// MetaSignature.
//
// A payload of at most multipart_threshold bytes is read into a buffer
// and sent in one PutObject with its length; a larger one is sent as a
// multipart upload, part_size bytes at a time, with at most
// part_concurrency parts in flight. Either way every request body is a
// buffer the SDK can hash (SigV4's payload hash over plain HTTP, the
// x-amz-checksum-crc32 header when checksums are on) and resend on a
// transient error, and memory is bounded: all deliveries together hold at
// most limits.max_buffer bytes of payload, and a delivery waits for room.
// Nothing is visible until the server has the whole object: a PutObject
// either stores all of it or nothing, and a multipart upload is completed
// only once every part is in, and aborted when anything fails (the
// payload breaks off, the server refuses a part, the node cancels). Before
// a multipart upload the adapter asks whether the key already holds this
// bundle's whole payload (a HEAD: same bundle ID, same size); if it does,
// the delivery is OK without sending it again. After one completes, older
// incomplete uploads of the same key (left by a crash) are aborted.
//
// Deliver answers OK only once S3 answered 200 to PutObject or
// CompleteMultipartUpload. It answers Retry for anything that may pass:
// no connection, timeouts, 5xx, throttling (SlowDown, 503, 429: after the
// server's Retry-After, or 5s), expired or invalid credentials, a clock
// skew, a region mismatch, a multipart upload that vanished; and Reject,
// with S3's code and message, when S3 refuses this object for good: a 4xx
// such as NoSuchBucket, AccessDenied, InvalidArgument, KeyTooLongError,
// EntityTooLarge, MetadataTooLarge, InvalidStorageClass. A key the
// adapter will not write (empty segments, "." or "..", over 1024 bytes,
// under the inbound prefix) is rejected before anything is sent.
//
// # Check
//
// Check is a HeadBucket: the bucket exists and these credentials may use
// it. A bucket that is missing, or denied, makes Check fail, so the node
// holds its queue rather than have every bundle rejected.
//
// # Inbound
//
// Fetch lists the objects under inbound.prefix (in key order, resuming
// where the last Fetch stopped when there are more than limits.max_scan)
// and offers each, its body streamed from GetObject, pinned to the ETag it
// was listed with. Its destination is the EID in its MetaDestination
// metadata, if it has one; otherwise its key says (DestinationForKey):
// "inbox/nodeC/inbox/hello.txt" is dtn://nodeC/inbox, "inbox/nodeC/x.bin"
// is dtn://nodeC/, and "inbox/report.pdf" is default_destination. Its
// MetaLifetime metadata asks for a lifetime. An object with no usable
// destination is moved to inbound.rejected_prefix with the reason in its
// metadata, never dropped and never offered again. An object larger than
// the node takes is left where it is, with a warning.
//
// Each offered object's MessageID is "s3:<bucket>/<key>@<ETag>", and its
// receipt "<ETag>/<key>", which still works after the adapter restarts.
// An offered object is leased: not offered again before Ack or Nack, or
// before inbound.lease passes. Ack deletes it, if it is still the version
// that was offered (a replaced object is kept, and offered). Nack keeps it
// and offers it again after inbound.nack_delay. Reject (the node refuses
// it for good: its destination, lifetime or size) copies it to
// "<rejected_prefix><its path under prefix>" (".1", ".2", … added if that
// is taken), with MetaRejectedReason, MetaRejectedAt and MetaOriginalKey
// beside its own metadata, and only then deletes the original.
package s3

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Version is the s3 adapter's version, reported by Describe.
const Version = "1.0.0"

// checkTimeout bounds Check's HeadBucket.
const checkTimeout = 5 * time.Second

// Adapter is the s3 adapter. The zero value is not usable; call New.
type Adapter struct {
	log *zap.Logger
	cur sdk.Current[*state]
}

var (
	_ plugins.Adapter  = (*Adapter)(nil)
	_ plugins.Rejecter = (*Adapter)(nil)
)

// New returns an unconfigured s3 adapter.
func New(log *zap.Logger) *Adapter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Adapter{log: log}
}

func (a *Adapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "s3", Version: Version, Deliver: true, Fetch: true}, nil
}

// state is one configuration in force, with its client.
type state struct {
	cfg    *settings
	log    *zap.Logger
	client *s3.Client
	tr     *http.Transport
	where  string // the server, for messages

	// mem bounds the payload bytes held by all deliveries at once.
	mem *semaphore.Weighted
	// parts holds part_size buffers for multipart uploads.
	parts sync.Pool

	inbox inbox
	// noConditionalDelete is set once the server refused a DeleteObject
	// with If-Match.
	noConditionalDelete atomic.Bool
}

func (a *Adapter) Configure(ctx context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	client, tr, err := cfg.newClient(ctx)
	if err != nil {
		return err
	}
	st := &state{cfg: cfg, log: a.log, client: client, tr: tr, mem: semaphore.NewWeighted(int64(cfg.Limits.MaxBuffer))}
	st.where = "AWS S3 in " + cfg.Region
	if cfg.Endpoint != "" {
		st.where = cfg.Endpoint
	}
	partSize := int(cfg.PartSize)
	st.parts.New = func() any { b := make([]byte, partSize); return &b }
	st.inbox.init()

	a.cur.Swap(st)
	creds := "the AWS SDK's default chain"
	if cfg.Credentials != nil {
		creds = "a static access key"
	}
	a.log.Info("configured", zap.String("server", st.where), zap.String("bucket", cfg.Bucket),
		zap.String("credentials", creds), zap.Bool("fetch", cfg.inbound != nil))
	return nil
}

// Check reports S3 reachable when HeadBucket succeeds: the server answers,
// the bucket exists, and these credentials may use it.
func (a *Adapter) Check(ctx context.Context) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	_, err = st.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(st.cfg.Bucket)})
	if err == nil {
		return nil
	}
	e := inspect(err)
	var why string
	switch {
	case !e.answered:
		why = fmt.Sprintf("cannot reach %s: %s", st.where, e.message)
	case e.status == http.StatusNotFound:
		why = fmt.Sprintf("bucket %q does not exist at %s", st.cfg.Bucket, st.where)
	case e.status == http.StatusForbidden:
		why = fmt.Sprintf("access to bucket %q at %s is denied (HTTP 403): check the credentials, the bucket's policy and the clock", st.cfg.Bucket, st.where)
	case e.status == http.StatusMovedPermanently || e.code == "AuthorizationHeaderMalformed":
		why = fmt.Sprintf("bucket %q is not in region %q (HTTP %d%s): set region", st.cfg.Bucket, st.cfg.Region, e.status, e.regionHint())
	default:
		why = fmt.Sprintf("HeadBucket %q at %s: %s", st.cfg.Bucket, st.where, e)
	}
	return fmt.Errorf("%w: %s", plugins.ErrUnreachable, why)
}

// Close closes the client's idle connections. Objects fetched and not
// acknowledged stay in the bucket and are offered again.
func (a *Adapter) Close() error { return a.cur.Close() }

// Close closes the client's idle connections.
func (st *state) Close() error {
	st.tr.CloseIdleConnections()
	return nil
}
