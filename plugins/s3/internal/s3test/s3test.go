// Package s3test starts the S3 server the s3 adapter's tests talk to: a
// versitygw process (the binary scripts/test-servers installs, run by
// servertest) serving a temporary directory over loopback, on a fixed
// port and directory, so that a test can kill the server and start it
// again. It speaks plain HTTP, or HTTPS (NewTLSServer) with a
// certificate from a throwaway CA made for the test.
package s3test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/internal/testpki"
)

// The root credentials every test server takes.
const (
	AccessKey = "mulegate-test"
	SecretKey = "mulegate-test-secret"
	Region    = "us-east-1"
)

// Server is a versitygw process serving a directory (each subdirectory a
// bucket) on loopback.
type Server struct {
	*servertest.Process // Dir, PID, Kill
	t                   testing.TB
	port                int
	ca                  *testpki.CA    // nil: plain HTTP
	cert                testpki.Server // the server's, signed by ca
	http                *http.Client   // for Client: nil for plain HTTP, else trusting ca
}

// NewServer prepares a versitygw on a free port with a temporary
// directory; Start runs it. The test's cleanup kills it, and shows its
// log if the test failed. Without versitygw, it skips the test, or fails
// it under `make test`.
func NewServer(t testing.TB) *Server {
	t.Helper()
	servertest.BinaryOrSkip(t, "versitygw")
	return &Server{Process: servertest.NewProcess(t, "versitygw"), t: t, port: servertest.FreePort(t)}
}

// NewTLSServer is NewServer for a server that speaks HTTPS only, with a
// certificate for 127.0.0.1 (not localhost) signed by a CA made for the
// test (CAFile). Its URL is https://…, and its Client trusts that CA.
func NewTLSServer(t testing.TB) *Server {
	t.Helper()
	s := NewServer(t)
	// For 127.0.0.1 only, so that a test reaching the server as
	// localhost sees a name the certificate does not hold.
	s.ca = testpki.NewCA(t, "mulegate s3test CA")
	s.cert = s.ca.IssueServer(t, "127.0.0.1")
	// One transport for the server's life, so that clients share its
	// connections as they share http.DefaultTransport's over plain HTTP.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: s.ca.Pool, MinVersion: tls.VersionTLS12}
	t.Cleanup(tr.CloseIdleConnections)
	s.http = &http.Client{Transport: tr}
	return s
}

// StartServer starts a fresh server with one bucket.
func StartServer(t testing.TB, bucket string) *Server {
	t.Helper()
	s := NewServer(t)
	s.Start()
	s.CreateBucket(bucket)
	return s
}

// StartTLSServer starts a fresh HTTPS server (NewTLSServer) with one
// bucket.
func StartTLSServer(t testing.TB, bucket string) *Server {
	t.Helper()
	s := NewTLSServer(t)
	s.Start()
	s.CreateBucket(bucket)
	return s
}

// URL is the server's endpoint: https:// for a TLS server.
func (s *Server) URL() string {
	scheme := "http"
	if s.ca != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
}

// CAFile is the PEM file of the CA that signed a TLS server's
// certificate, "" for a plain HTTP server.
func (s *Server) CAFile() string {
	if s.ca == nil {
		return ""
	}
	return s.ca.File
}

// Start runs versitygw and waits until it answers. Kill stops it
// abruptly, as a crash would; Start starts it again on the same port and
// directory.
func (s *Server) Start() {
	s.t.Helper()
	client := s.Client()
	args := []string{"--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", fmt.Sprintf("127.0.0.1:%d", s.port), "--quiet"}
	if s.ca != nil {
		args = append(args, "--cert", s.cert.CertFile, "--key", s.cert.KeyFile)
	}
	// Ready once a client that trusts the CA gets an answer: the
	// handshake works as well as the listener.
	s.Run(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		return err
	}, append(args, "posix", s.Dir())...)
}

// Client is a plain SDK client for the server, for a test to look at the
// bucket with; for a TLS server, it trusts the test's CA (and no other).
// It retries nothing, so that a test sees what happened.
func (s *Server) Client() *s3.Client {
	o := s3.Options{
		Region:           Region,
		BaseEndpoint:     aws.String(s.URL()),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RetryMaxAttempts: 1,
		// Tests stream large generated bodies; their own reads check the
		// bytes.
		DisableLogOutputChecksumValidationSkipped: true,
	}
	if s.http != nil {
		o.HTTPClient = s.http
	}
	return s3.New(o)
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(name string) {
	s.t.Helper()
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		s.t.Fatalf("creating bucket %s: %v", name, err)
	}
}

// Put stores an object with metadata.
func (s *Server) Put(bucket, key string, body []byte, metadata map[string]string) {
	s.t.Helper()
	_, err := s.Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(string(body)), Metadata: metadata,
	})
	if err != nil {
		s.t.Fatalf("putting %s/%s: %v", bucket, key, err)
	}
}

// Object is an object read back: its bytes, metadata and ETag.
type Object struct {
	Body        []byte
	Metadata    map[string]string
	ContentType string
	ETag        string
}

// Get reads an object back; ok is false when there is none.
func (s *Server) Get(bucket, key string) (Object, bool) {
	s.t.Helper()
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		var nsk interface{ ErrorCode() string }
		if errors.As(err, &nsk) && (nsk.ErrorCode() == "NoSuchKey" || nsk.ErrorCode() == "NotFound") {
			return Object{}, false
		}
		s.t.Fatalf("getting %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	if err != nil {
		s.t.Fatalf("reading %s/%s: %v", bucket, key, err)
	}
	return Object{Body: body, Metadata: out.Metadata, ContentType: aws.ToString(out.ContentType), ETag: aws.ToString(out.ETag)}, true
}

// ETag is an object's ETag, "" when there is none.
func (s *Server) ETag(bucket, key string) string {
	s.t.Helper()
	out, err := s.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return ""
	}
	return aws.ToString(out.ETag)
}

// Keys lists every key in bucket under prefix.
func (s *Server) Keys(bucket, prefix string) []string {
	s.t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			s.t.Fatalf("listing %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Uploads lists the incomplete multipart uploads in bucket.
func (s *Server) Uploads(bucket string) []string {
	s.t.Helper()
	out, err := s.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		s.t.Fatalf("listing uploads in %s: %v", bucket, err)
	}
	var ids []string
	for _, u := range out.Uploads {
		ids = append(ids, aws.ToString(u.Key)+" "+aws.ToString(u.UploadId))
	}
	return ids
}
