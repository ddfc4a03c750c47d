package executor

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/openbao-restore/openbao-restore/schemas"
)

type azureSource struct {
	c         *container.Client
	account   string
	container string
}

// newAzureSource builds a blob client from a connection string, or from the
// storage account and its key. BACKUP_ENDPOINT, when set, is the service URL
// (an emulator, or a sovereign cloud); otherwise the public one.
func newAzureSource(_ context.Context, cfg *Config) (Source, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // the user's explicit insecureSkipVerify
	opts := &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: tr},
		Retry:     policy.RetryOptions{MaxRetries: 2},
	}}
	var svc *azblob.Client
	var err error
	account := cfg.AzureAccount
	if !cfg.Creds.AzureConnString.empty() {
		svc, err = azblob.NewClientFromConnectionString(cfg.Creds.AzureConnString.reveal(), opts)
		if err != nil {
			// The SDK's message may quote the string: never pass it on.
			return nil, fail(schemas.ExitConfig, nil, "credentials file %s is not a valid connection string", schemas.KeyAzureConnString)
		}
		if account == "" {
			account = connStringAccount(cfg.Creds.AzureConnString.reveal())
		}
	} else {
		cred, err := azblob.NewSharedKeyCredential(cfg.AzureAccount, cfg.Creds.AzureAccountKey.reveal())
		if err != nil {
			return nil, fail(schemas.ExitConfig, nil, "credentials file %s is not a valid account key", schemas.KeyAzureAccountKey)
		}
		u := "https://" + cfg.AzureAccount + ".blob.core.windows.net/"
		if cfg.Endpoint != "" {
			u = withScheme(cfg.Endpoint)
		}
		if svc, err = azblob.NewClientWithSharedKeyCredential(u, cred, opts); err != nil {
			return nil, fail(schemas.ExitConfig, err, "Azure blob client for %s", u)
		}
	}
	return &azureSource{c: svc.ServiceClient().NewContainerClient(cfg.AzureContainer), account: account, container: cfg.AzureContainer}, nil
}

func connStringAccount(cs string) string {
	for _, part := range strings.Split(cs, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "AccountName="); ok {
			return v
		}
	}
	return ""
}

func (a *azureSource) URL(key string) string {
	return "azure://" + a.account + "/" + a.container + "/" + key
}

func (a *azureSource) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := a.c.NewBlobClient(key).GetProperties(ctx, nil)
	if err != nil {
		return ObjectInfo{}, a.classify(err, "stat "+a.URL(key))
	}
	info := ObjectInfo{}
	if p.ContentLength != nil {
		info.Size = *p.ContentLength
	}
	if p.ETag != nil {
		info.ETag = string(*p.ETag)
	}
	return info, nil
}

func (a *azureSource) Open(ctx context.Context, key string, info ObjectInfo) (io.ReadCloser, error) {
	o := &blob.DownloadStreamOptions{}
	if info.ETag != "" {
		et := azcore.ETag(info.ETag)
		o.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &et}}
	}
	r, err := a.c.NewBlobClient(key).DownloadStream(ctx, o)
	if err != nil {
		return nil, a.classify(err, "read "+a.URL(key))
	}
	// Without retry options the body is the plain response stream: a cut
	// shows up as io.ErrUnexpectedEOF, which the hold-back reports as a
	// transient failure before anything is submitted, and the whole step
	// is retried.
	return r.Body, nil
}

func (a *azureSource) List(ctx context.Context, prefix string, max int) ([]Entry, error) {
	var es []Entry
	pg := a.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	for pg.More() && len(es) < max {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return es, a.classify(err, "list "+a.URL(prefix))
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name == nil {
				continue
			}
			e := Entry{Key: *b.Name}
			if p := b.Properties; p != nil {
				if p.ContentLength != nil {
					e.Size = *p.ContentLength
				}
				if p.ETag != nil {
					e.ETag = string(*p.ETag)
				}
				if p.LastModified != nil {
					e.Modified = *p.LastModified
				}
			}
			es = append(es, e)
		}
	}
	return es, nil
}

// Put streams r as a block blob, 4 MiB blocks one at a time.
func (a *azureSource) Put(ctx context.Context, key string, r io.Reader) error {
	_, err := a.c.NewBlockBlobClient(key).UploadStream(ctx, r, &blockblob.UploadStreamOptions{BlockSize: 4 << 20, Concurrency: 1})
	if err != nil {
		return putFailure(err, a.classify(err, "write "+a.URL(key)))
	}
	return nil
}

func (a *azureSource) classify(err error, what string) error {
	if t := tlsFailure(err); t != "" {
		return fail(schemas.ExitStorage, nil, "%s: TLS verification failed (%s): set insecureSkipVerify or use a trusted endpoint", what, t)
	}
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return fail(schemas.ExitStorage, nil, "%s: container %q does not exist", what, a.container)
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return fail(schemas.ExitSnapshot, errNoObject, "%s", what)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch c := re.StatusCode; {
		case c == http.StatusNotFound:
			return fail(schemas.ExitSnapshot, errNoObject, "%s", what)
		case c == http.StatusUnauthorized || c == http.StatusForbidden:
			return fail(schemas.ExitStorage, nil, "%s: access refused by Azure (HTTP %d %s): check the account key or connection string", what, c, re.ErrorCode)
		case c == http.StatusPreconditionFailed:
			return transient(nil, "%s: the blob changed since it was checked", what)
		case c == http.StatusTooManyRequests || c >= 500:
			return transient(nil, "%s: HTTP %d %s", what, c, re.ErrorCode)
		default:
			return fail(schemas.ExitStorage, nil, "%s: HTTP %d %s", what, c, re.ErrorCode)
		}
	}
	return transient(errors.New(shortErr(err)), "%s", what)
}
