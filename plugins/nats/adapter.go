// Package nats is the built-in "nats" adapter: it publishes bundles to NATS
// JetStream, deduplicated by bundle ID, and fetches inbound messages from a
// durable pull consumer. The node runs it as `mulegate adapter nats`.
//
// # Configuration
//
//	urls:            ["nats://host:4222", …]   servers (required); nats://, tls://, ws://, wss://
//	name:            connection name shown by the server (default "mulegate-<instance>")
//	auth:            at most one of
//	  creds_file:      a .creds file (JWT and nkey seed)
//	  nkey_seed_file:  a file holding an nkey seed ("SU…")
//	  token:           a token
//	  user, password:  user and password
//	tls:             any key turns TLS on (tls:// URLs do too)
//	  ca_file:         PEM roots for the server (default: the system's)
//	  cert_file, key_file: a client certificate and its key
//	  server_name:     the name to verify instead of the URL's host
//	connect_timeout: one connection attempt (default "5s")
//	publish_timeout: waiting for one PubAck, and for room to publish when
//	                 256 messages already wait for theirs (default "10s")
//	subject:         default subject template when the route gives no
//	                 subject option: {src_node}, {dst_node}, {service},
//	                 {date}, {seq} (e.g. "logs.{src_node}.{service}")
//	streams:         streams to create when missing (existing ones are left as they are):
//	  - name:          stream name (required)
//	    subjects:      its subjects (required), wildcards allowed
//	    storage:       "file" (default) or "memory"
//	    max_age:       how long messages are kept (default: forever)
//	    duplicates:    the deduplication window (server default 2m); make it
//	                   cover the node's retry horizon
//	    replicas:      1–5 (default 1)
//	object_store:    where payloads too large for one message go
//	  bucket:          bucket, created when missing (default "mulegate-payloads";
//	                   "" turns the object store off: such bundles are rejected)
//	  storage, max_age, replicas: as for streams
//	inbound:         fetch configuration; without it Fetch is unsupported
//	  stream:          the stream to consume (required)
//	  consumer:        durable pull consumer name, created or updated (default "mulegate")
//	  subjects:        filter subjects (default ["<prefix>.>"])
//	  prefix:          subject prefix of the mapping below (default "to"; may be "")
//	  destination_header: header naming the destination EID (default
//	                   "Mulegate-Destination"; "" ignores headers)
//	  batch:           messages per pull request (default 64, at most 4096)
//	  max_ack_pending: messages fetched but not yet acknowledged (default 1024)
//	  ack_wait:        redelivery after this without an Ack (default "1m")
//	  nack_delay:      redelivery after a Nack (default "5s"; "0s": at once)
//	  dead_letter:     subject (bound to a stream) for messages with no
//	                   destination, and for those the node rejects; empty:
//	                   they are terminated with the reason instead
//	  lifetime:        bundle lifetime asked for inbound messages (default: the node's)
//
// The connection is made in the background and retried forever: a server
// that is down when the adapter starts, or goes down later, makes Check
// fail and deliveries answer Retry until it is back. Configure never fails
// for connectivity.
//
// # Delivery
//
// A bundle is published to the route's "subject" option (the node expands
// its templates), or else to the configured subject template. Its headers:
//
//	Nats-Msg-Id            the bundle ID: JetStream drops redeliveries within the duplicates window
//	Mulegate-Source        the source EID
//	Mulegate-Destination   the destination EID
//	Mulegate-Report-To     the report-to EID, unless none
//	Mulegate-Created       the creation time, RFC 3339 UTC with milliseconds (absent without a clock)
//	Mulegate-Lifetime      the lifetime in milliseconds
//	Mulegate-Signature     the node's verdict on the signature, when checked
//
// Deliver answers OK only once the PubAck for its own message arrived (a
// duplicate's too). Deliveries that run at the same time are published
// together, asynchronously, in as few writes as possible; at most 256
// messages wait for their PubAck at once, and a delivery that finds no
// room waits for some, up to publish_timeout.
//
// No PubAck in time, no room in time, no responders, or no connection:
// Retry. A refusal that no retry can change (the subject is bound to no
// stream, a message too large with the object store off, no permission to
// publish, a sealed stream, any other 4xx from JetStream): Reject, with
// the server's reason.
//
// A payload that does not fit in one message (the server's max_payload,
// learnt from the connection, less the headers; or the stream's
// max_msg_size) is streamed into the object store bucket under ObjectName
// (the bundle ID), and a reference message is published in its place: the
// same headers plus Mulegate-Object ("<bucket>/<name>"),
// Mulegate-Object-Size and Mulegate-Object-Digest, and a small JSON body
// (ObjectRef). A redelivery finds the complete object and publishes the
// reference again, which JetStream deduplicates.
//
// # Inbound
//
// Fetch pulls from the durable consumer. A message's destination is the
// EID in its destination header, if it has one; otherwise its subject
// says: "<prefix>.<node>.<a>.<b>" is dtn://<node>/<a>/<b> (so
// "to.nodeC.inbox" is dtn://nodeC/inbox) and "<prefix>.<node>" is
// dtn://<node>/. ipn endpoints and node names with dots need the header.
// A message with no usable destination is set aside: republished to
// dead_letter with a Mulegate-Dead-Reason header and then terminated, or,
// without dead_letter, terminated with that reason (the server announces
// a termination, with its reason, in a MSG_TERMINATED advisory): never
// dropped silently, never offered again. A
// reference message (Mulegate-Object) is offered with the object's bytes,
// streamed and checked against its digest; only references into the
// adapter's own bucket are followed, others are dead letters.
//
// Each offered message's MessageID is "nats:<stream>:<stream sequence>",
// and its receipt is its JetStream ack subject. The message stays pending
// on the consumer until the node Acks it (a double ack, confirmed by the
// server) or Nacks it (redelivered after nack_delay); a message the node
// neither acks nor nacks is redelivered after ack_wait. A message the node
// Rejects (it can never become a bundle there: its destination, lifetime
// or size is refused by the node's limits or policy) is set aside as one
// with no destination is, with the node's reason. Receipts are kept
// in a table bounded by max_ack_pending and ack_wait; a receipt that has
// left the table (or one from before an adapter restart) is still acked by
// its ack subject (and rejected: the message is read back from the stream
// by the sequence the ack subject names), and one that is not an ack subject of this consumer is
// unknown (plugins.ErrUnknownReceipt).
package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Version is the nats adapter's version, reported by Describe.
const Version = "1.0.0"

// checkTimeout bounds Check's round trip to JetStream.
const checkTimeout = 3 * time.Second

// Adapter is the nats adapter. The zero value is not usable; call New.
type Adapter struct {
	log *zap.Logger
	cur sdk.Current[*state]
}

var _ plugins.Adapter = (*Adapter)(nil)

// New returns an unconfigured nats adapter.
func New(log *zap.Logger) *Adapter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Adapter{log: log}
}

func (a *Adapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "nats", Version: Version, Deliver: true, Fetch: true}, nil
}

// state is one configuration in force, with its connection.
type state struct {
	cfg *settings
	log *zap.Logger
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *pipeline // publishes the deliveries' messages

	denied denials

	streamsMu    sync.Mutex
	streamsReady atomic.Bool

	objMu sync.Mutex
	obs   jetstream.ObjectStore // the object store bucket, once opened

	consMu sync.Mutex
	cons   jetstream.Consumer

	receipts receipts

	connMu  sync.Mutex
	connErr error // why the last connection attempt failed; nil once connected
}

func (st *state) setConnErr(err error) (first bool) {
	st.connMu.Lock()
	defer st.connMu.Unlock()
	first = st.connErr == nil && err != nil
	st.connErr = err
	return first
}

func (st *state) lastConnErr() error {
	st.connMu.Lock()
	defer st.connMu.Unlock()
	if st.connErr != nil {
		return st.connErr
	}
	return st.nc.LastError()
}

func (a *Adapter) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	st := &state{cfg: cfg, log: a.log}
	if cfg.Inbound != nil {
		st.receipts.init(cfg.Inbound.MaxAckPending, time.Duration(cfg.Inbound.AckWait))
	}
	opts := slices.Concat(cfg.opts, []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				st.setConnErr(err)
				a.log.Warn("disconnected from NATS; reconnecting in the background", zap.Error(err))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if st.setConnErr(err) {
				a.log.Warn("cannot connect to NATS; retrying in the background", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			st.setConnErr(nil)
			a.log.Info("connected to NATS", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			st.setConnErr(nil)
			a.log.Info("connected to NATS", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if subj, ok := publishDenied(err); ok {
				st.denied.record(subj)
			}
			a.log.Warn("NATS error", zap.Error(err))
		}),
	})
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		// With RetryOnFailedConnect, only unusable options get here.
		return plugins.ConfigErrors{{Key: "urls", Message: fmt.Sprintf("cannot set up the connection: %v", err)}}
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(time.Duration(cfg.PublishTimeout)))
	if err != nil {
		nc.Close()
		return err
	}
	pub, err := newPipeline(nc, publishWindow, time.Duration(cfg.PublishTimeout), time.Duration(cfg.PublishTimeout))
	if err != nil {
		nc.Close()
		return err
	}
	st.nc, st.js, st.pub = nc, js, pub

	a.cur.Swap(st)
	a.log.Info("configured", zap.Strings("urls", cfg.URLs), zap.Bool("connected", nc.IsConnected()))
	return nil
}

// Check reports NATS reachable when the connection is up and JetStream
// answers, and the configured streams exist (or could be created).
func (a *Adapter) Check(ctx context.Context) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if err := st.connected(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if _, err := st.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("%w: JetStream does not answer: %v", plugins.ErrUnreachable, err)
	}
	if err := st.ensureStreams(ctx); err != nil {
		return fmt.Errorf("%w: %v", plugins.ErrUnreachable, err)
	}
	return nil
}

// connected returns nil when the connection is up, and otherwise an error
// wrapping plugins.ErrUnreachable with the last connection error.
func (st *state) connected() error {
	if st.nc.IsConnected() {
		return nil
	}
	why := st.nc.Status().String()
	if err := st.lastConnErr(); err != nil {
		why += ": " + err.Error()
	}
	return fmt.Errorf("%w: not connected to NATS at %s (%s)", plugins.ErrUnreachable, strings.Join(st.cfg.URLs, ", "), strings.ToLower(why))
}

// Close closes the connection. Messages fetched and not acknowledged are
// redelivered after ack_wait.
func (a *Adapter) Close() error { return a.cur.Close() }

// Close stops publishing and closes the connection.
func (st *state) Close() error {
	st.pub.close()
	st.nc.Close()
	return nil
}

// ensureStreams creates the configured streams that are missing, once per
// configuration (and again after a publish found no stream).
func (st *state) ensureStreams(ctx context.Context) error {
	if len(st.cfg.Streams) == 0 || st.streamsReady.Load() {
		return nil
	}
	st.streamsMu.Lock()
	defer st.streamsMu.Unlock()
	if st.streamsReady.Load() {
		return nil
	}
	for _, sc := range st.cfg.Streams {
		_, err := st.js.Stream(ctx, sc.Name)
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("looking up stream %q: %v", sc.Name, err)
		}
		storage, _ := storageType(sc.Storage)
		_, err = st.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        sc.Name,
			Description: "created by mulegate",
			Subjects:    sc.Subjects,
			Storage:     storage,
			MaxAge:      time.Duration(sc.MaxAge),
			Duplicates:  time.Duration(sc.Duplicates),
			Replicas:    max(sc.Replicas, 1),
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("creating stream %q: %v", sc.Name, err)
		}
		if err == nil {
			st.log.Info("created stream", zap.String("stream", sc.Name), zap.Strings("subjects", sc.Subjects))
		}
	}
	st.streamsReady.Store(true)
	return nil
}

// streamsMissing makes the next delivery look for the configured streams
// again.
func (st *state) streamsMissing() {
	st.streamsReady.Store(false)
}

// objectStore returns the configured bucket's handle, creating the bucket
// when it is missing and create is set.
func (st *state) objectStore(ctx context.Context, create bool) (jetstream.ObjectStore, error) {
	bucket := st.cfg.ObjectStore.Bucket
	st.objMu.Lock()
	defer st.objMu.Unlock()
	if st.obs != nil {
		return st.obs, nil
	}
	obs, err := st.js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		oc := st.cfg.ObjectStore
		storage, _ := storageType(oc.Storage)
		obs, err = st.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      bucket,
			Description: "bundle payloads too large for one message, published by mulegate",
			TTL:         time.Duration(oc.MaxAge),
			Storage:     storage,
			Replicas:    max(oc.Replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = st.js.ObjectStore(ctx, bucket)
		}
		if err == nil {
			st.log.Info("created object store bucket", zap.String("bucket", bucket))
		}
	}
	if err != nil {
		return nil, err
	}
	st.obs = obs
	return obs, nil
}

// denials remembers the subjects the server refused to let this
// connection publish to, and when. The server says so asynchronously, so
// a publish that timed out looks here to tell a refusal from a slow server.
type denials struct {
	mu   sync.Mutex
	when map[string]time.Time
}

const maxDenials = 1024

func (d *denials) record(subject string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.when == nil || len(d.when) >= maxDenials {
		d.when = map[string]time.Time{}
	}
	d.when[subject] = time.Now()
}

// since tells whether subject was refused at or after t.
func (d *denials) since(subject string, t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.when[subject]
	return ok && !w.Before(t)
}

var publishDeniedRe = regexp.MustCompile(`(?i)permissions violation for publish to "?([^"\s]+)"?`)

// publishDenied recognises the server's refusal to let us publish to a
// subject.
func publishDenied(err error) (string, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return "", false
	}
	m := publishDeniedRe.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	return m[1], true
}
