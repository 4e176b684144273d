// Package s3test starts the S3 server the s3 adapter's tests talk to: a
// versitygw process (the binary scripts/test-servers installs) serving a
// temporary directory over loopback, on a fixed port and directory, so
// that a test can kill the server and start it again.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The root credentials every test server takes.
const (
	AccessKey = "mulegate-test"
	SecretKey = "mulegate-test-secret"
	Region    = "us-east-1"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a versitygw process serving a directory (each subdirectory a
// bucket) on loopback.
type Server struct {
	t    testing.TB
	port int
	dir  string
	logf string
	cmd  *exec.Cmd
	done chan struct{}
}

// NewServer prepares a versitygw on a free port with a temporary
// directory; Start runs it. The test's cleanup kills it, and shows its
// log if the test failed.
func NewServer(t testing.TB) *Server {
	t.Helper()
	Binary(t) // skip or fail now if there is none
	tmp := t.TempDir()
	s := &Server{t: t, port: FreePort(t), dir: filepath.Join(tmp, "data"), logf: filepath.Join(tmp, "versitygw.log")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			if data, err := os.ReadFile(s.logf); err == nil && len(data) > 0 {
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				t.Logf("last lines of the versitygw log:\n%s", strings.Join(lines[max(0, len(lines)-20):], "\n"))
			}
		}
	})
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

// URL is the server's endpoint.
func (s *Server) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.port) }

// Dir is the directory the server keeps its buckets in.
func (s *Server) Dir() string { return s.dir }

// PID is the running server's process ID, 0 when it is not running.
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Start runs versitygw and waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(Binary(s.t), "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", fmt.Sprintf("127.0.0.1:%d", s.port), "--quiet", "posix", s.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	client := s.Client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			data, _ := os.ReadFile(s.logf)
			s.t.Fatalf("versitygw exited at start: %v\n%s", cmd.ProcessState, data)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw on port %d not ready: %v", s.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server abruptly, as a crash would; Start starts it again
// on the same port and directory.
func (s *Server) Kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

// Client is a plain SDK client for the server, for a test to look at the
// bucket with. It retries nothing, so that a test sees what happened.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:           Region,
		BaseEndpoint:     aws.String(s.URL()),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RetryMaxAttempts: 1,
		// Tests stream large generated bodies; their own reads check the
		// bytes.
		DisableLogOutputChecksumValidationSkipped: true,
	})
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

// Binary finds versitygw in $MULEGATE_TOOLS_BIN, on $PATH, or in the
// module's .cache/bin, where scripts/test-servers installs it. Missing,
// it fails the test when MULEGATE_TOOLS_BIN is set (as `make test` sets
// it, after installing the servers), and skips it otherwise.
func Binary(t testing.TB) string {
	t.Helper()
	const name = "versitygw"
	tools := os.Getenv("MULEGATE_TOOLS_BIN")
	if tools != "" {
		if p := filepath.Join(tools, name); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if p := filepath.Join(d, ".cache", "bin", name); isExecutable(p) {
			return p
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break
		}
	}
	const msg = "versitygw not found in $MULEGATE_TOOLS_BIN, $PATH or .cache/bin: run ./scripts/test-servers (or make test-servers)"
	if tools != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// ErrNotYet is what a condition returns when it has nothing better to say.
var ErrNotYet = errors.New("not yet")

// Eventually polls cond until it returns nil, and fails the test with
// cond's last error if that takes longer than within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
