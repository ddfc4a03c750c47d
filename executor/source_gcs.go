package executor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/openbao-restore/openbao-restore/schemas"
)

type gcsSource struct {
	c      *storage.Client
	bucket string
}

// newGCSSource builds a GCS client from credentials.json (any of Google's
// credential types, named by its "type" field), or workload identity (the
// default credentials) when the Secret has none. BACKUP_ENDPOINT points it at
// an emulator or a private endpoint; then an absent credentials.json means
// no authentication.
func newGCSSource(ctx context.Context, cfg *Config) (Source, error) {
	var opts []option.ClientOption
	if !cfg.Creds.GCSJSON.empty() {
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(cfg.Creds.GCSJSON.bytesValue(), &head); err != nil {
			return nil, fail(schemas.ExitConfig, nil, "credentials file %s is not JSON", schemas.KeyGCSCredentials)
		}
		var t option.CredentialsType
		switch head.Type {
		case "service_account":
			t = option.ServiceAccount
		case "authorized_user":
			t = option.AuthorizedUser
		case "external_account":
			t = option.ExternalAccount
		case "impersonated_service_account":
			t = option.ImpersonatedServiceAccount
		default:
			return nil, fail(schemas.ExitConfig, nil, "credentials file %s has type %q; want service_account, authorized_user, external_account or impersonated_service_account", schemas.KeyGCSCredentials, head.Type)
		}
		opts = append(opts, option.WithAuthCredentialsJSON(t, cfg.Creds.GCSJSON.bytesValue()))
	} else if cfg.Endpoint != "" {
		opts = append(opts, option.WithoutAuthentication())
	}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimRight(withScheme(cfg.Endpoint), "/")+"/storage/v1/"))
		if cfg.InsecureSkipVerify {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // the user's explicit insecureSkipVerify
			opts = append(opts, option.WithHTTPClient(&http.Client{Transport: tr}))
		}
	}
	c, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fail(schemas.ExitConfig, err, "GCS client")
	}
	return &gcsSource{c: c, bucket: cfg.Bucket}, nil
}

func (g *gcsSource) URL(key string) string { return "gs://" + g.bucket + "/" + key }

func (g *gcsSource) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	a, err := g.c.Bucket(g.bucket).Object(key).Attrs(ctx)
	if err != nil {
		return ObjectInfo{}, g.classify(err, "stat "+g.URL(key))
	}
	return ObjectInfo{Size: a.Size, ETag: "gen:" + itoa(a.Generation)}, nil
}

func (g *gcsSource) Open(ctx context.Context, key string, info ObjectInfo) (io.ReadCloser, error) {
	o := g.c.Bucket(g.bucket).Object(key)
	// Read the very generation that was checked, so the bytes sent are the
	// bytes whose size was checked.
	if gen, ok := strings.CutPrefix(info.ETag, "gen:"); ok && gen != "0" {
		o = o.Generation(atoi(gen))
	}
	r, err := o.NewReader(ctx)
	if err != nil {
		return nil, g.classify(err, "read "+g.URL(key))
	}
	return r, nil
}

func (g *gcsSource) List(ctx context.Context, prefix string, max int) ([]Entry, error) {
	var es []Entry
	it := g.c.Bucket(g.bucket).Objects(ctx, &storage.Query{Prefix: prefix})
	for len(es) < max {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return es, g.classify(err, "list "+g.URL(prefix))
		}
		es = append(es, Entry{Key: a.Name, Size: a.Size, ETag: "gen:" + itoa(a.Generation), Modified: a.Updated})
	}
	return es, nil
}

// Put streams r with a resumable upload, 8 MiB at a time.
func (g *gcsSource) Put(ctx context.Context, key string, r io.Reader) error {
	// Cancelling the writer's context abandons the upload: no object.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := g.c.Bucket(g.bucket).Object(key).NewWriter(ctx)
	w.ChunkSize = 8 << 20
	w.ContentType = "application/octet-stream"
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		return putFailure(err, g.classify(err, "write "+g.URL(key)))
	}
	if err := w.Close(); err != nil {
		return g.classify(err, "write "+g.URL(key))
	}
	return nil
}

func (g *gcsSource) classify(err error, what string) error {
	if t := tlsFailure(err); t != "" {
		return fail(schemas.ExitStorage, nil, "%s: TLS verification failed (%s): set insecureSkipVerify or use a trusted endpoint", what, t)
	}
	if errors.Is(err, storage.ErrObjectNotExist) {
		return fail(schemas.ExitSnapshot, errNoObject, "%s", what)
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return fail(schemas.ExitStorage, nil, "%s: bucket %q does not exist", what, g.bucket)
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == http.StatusNotFound:
			return fail(schemas.ExitSnapshot, errNoObject, "%s", what)
		case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
			return fail(schemas.ExitStorage, nil, "%s: access refused by GCS (HTTP %d): check credentials.json and the bucket's IAM", what, ge.Code)
		case ge.Code == http.StatusTooManyRequests || ge.Code >= 500:
			return transient(nil, "%s: HTTP %d", what, ge.Code)
		default:
			return fail(schemas.ExitStorage, nil, "%s: HTTP %d %s", what, ge.Code, ge.Message)
		}
	}
	return transient(errors.New(shortErr(err)), "%s", what)
}
