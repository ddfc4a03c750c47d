package executor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/openbao-restore/openbao-restore/schemas"
)

type s3Source struct {
	c        *s3.Client
	bucket   string
	partSize int // of an upload: putPartSize (tests make it smaller)
}

// putPartSize is the part of a multipart upload, above S3's smallest (5
// MiB, but for the last) and the one buffer an upload holds.
const putPartSize = 8 << 20

func newS3Source(_ context.Context, cfg *Config) (Source, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // the user's explicit insecureSkipVerify
	if len(cfg.Creds.CACert) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(cfg.Creds.CACert)
		tc.RootCAs = pool
	}
	tr.TLSClientConfig = tc
	o := s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.UsePathStyle,
		HTTPClient:   &http.Client{Transport: tr},
		// The SDK's own retries cover HEAD and the start of GET; the
		// executor's retries wrap whole steps.
		RetryMaxAttempts: 3,
		// Checksums of uploads are irrelevant here (we only read), and
		// "when required" keeps S3-compatible stores that lack the newer
		// trailing checksums working.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		o.BaseEndpoint = aws.String(withScheme(cfg.Endpoint))
	}
	switch {
	case cfg.RoleARN != "":
		p, err := webIdentityProvider(cfg)
		if err != nil {
			return nil, err
		}
		o.Credentials = p
	case !cfg.Creds.AccessKeyID.empty():
		ak, sk, st := cfg.Creds.AccessKeyID.reveal(), cfg.Creds.SecretAccessKey.reveal(), cfg.Creds.SessionToken.reveal()
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk, SessionToken: st, Source: "credentials Secret"}, nil
		})
	default:
		o.Credentials = aws.AnonymousCredentials{}
	}
	return &s3Source{c: s3.New(o), bucket: cfg.Bucket, partSize: putPartSize}, nil
}

func (s *s3Source) URL(key string) string { return "s3://" + s.bucket + "/" + key }

func (s *s3Source) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return ObjectInfo{}, s.classify(err, "HEAD "+s.URL(key))
	}
	return ObjectInfo{Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag)}, nil
}

func (s *s3Source) Open(ctx context.Context, key string, info ObjectInfo) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &key}
	if info.ETag != "" {
		in.IfMatch = aws.String(info.ETag)
	}
	out, err := s.c.GetObject(ctx, in)
	if err != nil {
		return nil, s.classify(err, "GET "+s.URL(key))
	}
	return out.Body, nil
}

func (s *s3Source) List(ctx context.Context, prefix string, max int) ([]Entry, error) {
	var es []Entry
	p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(prefix)})
	for p.HasMorePages() && len(es) < max {
		out, err := p.NextPage(ctx)
		if err != nil {
			return es, s.classify(err, "LIST "+s.URL(prefix))
		}
		for _, o := range out.Contents {
			es = append(es, Entry{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: aws.ToString(o.ETag), Modified: aws.ToTime(o.LastModified)})
		}
	}
	return es, nil
}

// Put streams r in parts of partSize, one part in memory at a time: one
// PutObject when r fits in a part, else a multipart upload, aborted on
// any failure so that no parts are left behind.
func (s *s3Source) Put(ctx context.Context, key string, r io.Reader) error {
	what := "write " + s.URL(key)
	buf := make([]byte, s.partSize)
	n, err := fill(r, buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return putFailure(err, nil)
	}
	if err != nil {
		_, perr := s.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n))})
		if perr != nil {
			return s.classify(perr, what)
		}
		return nil
	}
	up, cerr := s.c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key})
	if cerr != nil {
		return s.classify(cerr, what)
	}
	abort := func(e error) error {
		// Not the request's context: an interrupted upload is aborted too.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = s.c.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId})
		return e
	}
	var parts []types.CompletedPart
	for num := int32(1); ; num++ {
		out, uerr := s.c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(num),
			Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n))})
		if uerr != nil {
			return abort(s.classify(uerr, what))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		if errors.Is(err, io.EOF) {
			break
		}
		n, err = fill(r, buf)
		if err != nil && !errors.Is(err, io.EOF) {
			return abort(putFailure(err, nil))
		}
		if n == 0 {
			break
		}
	}
	_, err = s.c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return abort(s.classify(err, what))
	}
	return nil
}

// classify maps an SDK error to an exit code. It reports the error code and
// HTTP status, never the request (whose headers hold a signature).
func (s *s3Source) classify(err error, what string) error {
	var ee *exitError
	if errors.As(err, &ee) {
		// Our own failure from inside the SDK (the web identity provider).
		return fail(ee.code, err, "%s", what)
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	if tlsErr := tlsFailure(err); tlsErr != "" {
		return fail(schemas.ExitStorage, nil, "%s: TLS verification failed (%s): add the endpoint's CA as %s in the credentials Secret, or set insecureSkipVerify", what, tlsErr, schemas.KeyCACert)
	}
	switch {
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		if code == "NoSuchBucket" {
			return fail(schemas.ExitStorage, nil, "%s: bucket %q does not exist", what, s.bucket)
		}
		return fail(schemas.ExitSnapshot, errNoObject, "%s", what)
	case code == "NoSuchBucket":
		return fail(schemas.ExitStorage, nil, "%s: bucket %q does not exist", what, s.bucket)
	case status == http.StatusPreconditionFailed:
		return transient(nil, "%s: the object changed since it was checked", what)
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" || code == "InvalidToken":
		return fail(schemas.ExitStorage, nil, "%s: access refused by the object store (HTTP %d %s): check the credentials Secret and the bucket policy", what, status, code)
	case status >= 500 || status == http.StatusTooManyRequests || status == 0:
		return transient(errors.New(shortErr(err)), "%s", what)
	default:
		return fail(schemas.ExitStorage, nil, "%s: HTTP %d %s", what, status, code)
	}
}

// tlsFailure names a certificate verification failure: permanent, unlike
// other transport errors, so it must not be retried as transient.
func tlsFailure(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ua):
		return "certificate signed by an unknown authority"
	case errors.As(err, &he):
		return "certificate is not valid for this host"
	case errors.As(err, &ci):
		return "certificate is invalid or expired"
	case errors.As(err, &cv):
		return "certificate verification failed"
	}
	return ""
}

// errNoObject marks a missing object, so the caller can list nearby keys.
var errNoObject = errors.New("no such object")

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i > 0 && len(s) > 300 {
		s = s[i+2:]
	}
	return s
}

// webIdentityProvider exchanges the projected web identity token for role
// credentials with STS AssumeRoleWithWebIdentity (IRSA). The call is
// unsigned, so it needs no STS client: one form POST and its XML answer.
// The token file is re-read on every refresh, because it rotates; the SDK's
// cache refreshes before the credentials expire.
func webIdentityProvider(cfg *Config) (aws.CredentialsProvider, error) {
	endpoint := strings.TrimRight(os.Getenv("AWS_ENDPOINT_URL_STS"), "/")
	if endpoint == "" {
		endpoint = "https://sts." + cfg.Region + ".amazonaws.com"
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	session := "openbao-restore"
	if cfg.PodName != "" {
		session = cfg.PodName
	}
	if len(session) > 64 {
		session = session[:64]
	}
	fetch := func(ctx context.Context) (aws.Credentials, error) {
		tok, err := readSecretFile(cfg.WebIdentityFile)
		if err != nil {
			return aws.Credentials{}, fail(schemas.ExitConfig, nil, "%s %s: %v", schemas.EnvAWSWebIdentityFile, cfg.WebIdentityFile, err)
		}
		form := url.Values{
			"Action":           {"AssumeRoleWithWebIdentity"},
			"Version":          {"2011-06-15"},
			"RoleArn":          {cfg.RoleARN},
			"RoleSessionName":  {session},
			"WebIdentityToken": {tok.reveal()},
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/", strings.NewReader(form.Encode()))
		if err != nil {
			return aws.Credentials{}, fail(schemas.ExitConfig, nil, "STS endpoint %s is not a URL", endpoint)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := hc.Do(req)
		if err != nil {
			return aws.Credentials{}, transient(scrubURLError(err), "STS AssumeRoleWithWebIdentity at %s", endpoint)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error struct {
					Code    string `xml:"Code"`
					Message string `xml:"Message"`
				} `xml:"Error"`
			}
			_ = xml.Unmarshal(body, &e)
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				return aws.Credentials{}, transient(nil, "STS AssumeRoleWithWebIdentity: HTTP %d %s", resp.StatusCode, e.Error.Code)
			}
			return aws.Credentials{}, fail(schemas.ExitStorage, nil, "STS refused to assume role %s with the web identity token: HTTP %d %s %s", cfg.RoleARN, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		var r struct {
			Result struct {
				Credentials struct {
					AccessKeyID     string    `xml:"AccessKeyId"`
					SecretAccessKey string    `xml:"SecretAccessKey"`
					SessionToken    string    `xml:"SessionToken"`
					Expiration      time.Time `xml:"Expiration"`
				} `xml:"Credentials"`
			} `xml:"AssumeRoleWithWebIdentityResult"`
		}
		if err := xml.Unmarshal(body, &r); err != nil || r.Result.Credentials.AccessKeyID == "" {
			return aws.Credentials{}, fail(schemas.ExitStorage, nil, "STS AssumeRoleWithWebIdentity: no credentials in the answer")
		}
		c := r.Result.Credentials
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
			CanExpire: !c.Expiration.IsZero(), Expires: c.Expiration, Source: "web identity"}, nil
	}
	return aws.NewCredentialsCache(aws.CredentialsProviderFunc(fetch)), nil
}
