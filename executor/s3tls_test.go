package executor

import (
	"encoding/pem"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// S3 over TLS with a private CA: refused without the CA (permanent,
// ExitStorage, not retried as transient), accepted with caCert in the
// credentials Secret, and with insecureSkipVerify. A session token rides
// along (SeaweedFS ignores it for a static identity; this proves the
// executor sends it without failing).
func TestS3TLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// SeaweedFS behind a TLS proxy that keeps the Host header, which the
	// request's signature covers.
	target, err := url.Parse(f.s3.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(srv.Close)
	f.env[schemas.EnvEndpoint] = srv.URL
	if err := os.WriteFile(filepath.Join(f.paths.CredentialsDir, schemas.KeySessionToken), []byte("session-secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, tm := f.run(t, Options{})
	if code != schemas.ExitStorage || !strings.Contains(tm.Message, "TLS") {
		t.Fatalf("no CA: exit %d: %s", code, tm.Message)
	}

	f.env[schemas.EnvInsecureSkipVerify] = "true"
	f.env[schemas.EnvRestoreKey] = "clusters/prod/nope.snap"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitSnapshot {
		t.Fatalf("insecure: exit %d: %s", code, tm.Message)
	}

	delete(f.env, schemas.EnvInsecureSkipVerify)
	f.env[schemas.EnvRestoreKey] = f.key
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(f.paths.CredentialsDir, schemas.KeyCACert), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK {
		t.Fatalf("with CA: exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t, "session-secret")
}
