package s3

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/mulegate/mulegate/plugins"
)

// throttleDelay is how long a delivery refused for throttling waits when
// the server does not say (Retry-After).
const throttleDelay = 5 * time.Second

// s3Error is what an SDK error says: whether the server answered, and if
// so its HTTP status, S3 error code and message.
type s3Error struct {
	answered bool
	status   int
	code     string
	message  string
	header   http.Header
}

// inspect reads an error from the S3 client.
func inspect(err error) s3Error {
	var e s3Error
	if err == nil {
		return e
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.HTTPStatusCode() != 0 {
		e.answered = true
		e.status = re.HTTPStatusCode()
		e.header = re.Response.Header
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.code, e.message = ae.ErrorCode(), ae.ErrorMessage()
	}
	if !e.answered {
		e.message = rootCause(err)
	}
	return e
}

// rootCause is the most telling part of an error that got no answer:
// the network's own words ("dial tcp 127.0.0.1:9000: connect: connection
// refused") rather than the SDK's layers around them, or, for a server
// certificate the client refused, what to do about it.
func rootCause(err error) string {
	if why := certProblem(err); why != "" {
		return why
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	var oe *smithy.OperationError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// certProblem says why the server's certificate was refused and which
// setting fixes it, "" if err is not about the certificate or the x509
// error says enough (an expired certificate). The bare x509 error names
// neither the adapter's setting nor the CA it wants, and a private CA
// missing from tls.ca_file is the common case.
func certProblem(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		issuer := ""
		if unknown.Cert != nil {
			issuer = fmt.Sprintf(" (%q)", unknown.Cert.Issuer.String())
		}
		return fmt.Sprintf("the server's certificate is not trusted: %v; set tls.ca_file to a PEM file holding the certificate of the CA that issued it%s",
			unknown, issuer)
	case errors.As(err, &host):
		return fmt.Sprintf("the server's certificate does not match the endpoint: %v; use a host name or address in endpoint that the certificate holds", host)
	}
	return ""
}

func (e s3Error) String() string {
	switch {
	case !e.answered:
		return e.message
	case e.code != "" && e.message != "":
		return fmt.Sprintf("%s: %s (HTTP %d)", e.code, e.message, e.status)
	case e.code != "":
		return fmt.Sprintf("%s (HTTP %d)", e.code, e.status)
	}
	return fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status))
}

func (e s3Error) regionHint() string {
	if r := e.header.Get("X-Amz-Bucket-Region"); r != "" {
		return "; it is in " + strconv.Quote(r)
	}
	return ""
}

// Error codes of 4xx answers that a retry can get past: S3 was busy or
// timed out, the request was garbled on the way, the credentials or the
// clock are wrong (an operator fixes them, and Check fails meanwhile), or
// an upload vanished and starts again.
var retryable4xx = map[string]bool{
	"RequestTimeout": true, "SlowDown": true, "Throttling": true, "ThrottlingException": true,
	"RequestLimitExceeded": true, "TooManyRequests": true, "RequestThrottled": true,
	"BadDigest": true, "InvalidDigest": true, "IncompleteBody": true, "XAmzContentSHA256Mismatch": true,
	"RequestTimeTooSkewed": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true, "AuthorizationHeaderMalformed": true,
	"PermanentRedirect": true, "TemporaryRedirect": true, "IllegalLocationConstraintException": true,
	"NoSuchUpload": true, "OperationAborted": true, "ConditionalRequestConflict": true,
}

var throttleCodes = map[string]bool{
	"SlowDown": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"TooManyRequests": true, "RequestThrottled": true,
}

// failed turns an error from the S3 client during a delivery to key into
// Retry or Reject.
func (st *state) failed(ctx context.Context, op, key string, err error) plugins.Result {
	if ctx.Err() != nil {
		return plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
	}
	e := inspect(err)
	where := fmt.Sprintf("%s of %s/%s", op, st.cfg.Bucket, key)
	switch {
	case !e.answered:
		return plugins.RetryLater(0, fmt.Sprintf("%s: no answer from %s: %s", where, st.where, e.message))
	case e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable || throttleCodes[e.code]:
		return plugins.RetryLater(retryAfter(e.header), fmt.Sprintf("%s: S3 is throttling: %s", where, e))
	case e.status >= 500, e.status == http.StatusRequestTimeout, e.status == http.StatusConflict, retryable4xx[e.code]:
		return plugins.RetryLater(0, fmt.Sprintf("%s: %s", where, e))
	case e.code == "NoSuchBucket" || (e.status == http.StatusNotFound && e.code == ""):
		return plugins.Rejected(fmt.Sprintf("%s: bucket %q does not exist at %s (%s)", where, st.cfg.Bucket, st.where, e))
	case e.status >= 400 && e.status < 500:
		return plugins.Rejected(fmt.Sprintf("%s: S3 refused it: %s", where, e))
	}
	return plugins.RetryLater(0, fmt.Sprintf("%s: %s", where, e))
}

// retryAfter reads a Retry-After header (seconds, or an HTTP date), capped
// at ten minutes; throttleDelay without one.
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return throttleDelay
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, time.Second), 10*time.Minute)
}

// gone tells whether err says the object (or the upload) is not there.
func gone(err error) bool {
	if err == nil {
		return false
	}
	e := inspect(err)
	return e.answered && (e.status == http.StatusNotFound || e.code == "NoSuchKey" || e.code == "NoSuchUpload")
}

// changed tells whether err is a failed If-Match: the object is another
// version now.
func changed(err error) bool {
	if err == nil {
		return false
	}
	e := inspect(err)
	return e.answered && (e.status == http.StatusPreconditionFailed || e.code == "PreconditionFailed")
}

// unreachable wraps an error from a request outside Deliver: the service
// could not be reached, or refused.
func (st *state) unreachable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := inspect(err)
	if !e.answered || e.status >= 500 || e.status == http.StatusForbidden {
		return fmt.Errorf("%w: %s: %s", plugins.ErrUnreachable, op, e)
	}
	return fmt.Errorf("%s: %s", op, e)
}
