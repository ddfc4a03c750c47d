package executor

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// roleArn with a web identity token file: the executor calls STS
// AssumeRoleWithWebIdentity (a fake STS here, via AWS_ENDPOINT_URL_STS) with
// the token, then restores; a refusal by STS is ExitStorage. Not parallel:
// it sets an environment variable.
func TestS3WebIdentity(t *testing.T) {
	f := newFixture(t)
	var calls atomic.Int32
	refuse := atomic.Bool{}
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		calls.Add(1)
		if r.Form.Get("Action") != "AssumeRoleWithWebIdentity" || r.Form.Get("RoleArn") != "arn:aws:iam::123456789012:role/restore" ||
			r.Form.Get("WebIdentityToken") != "projected-sa-token" || refuse.Load() {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized</Message></Error></ErrorResponse>`))
			return
		}
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		_, _ = w.Write([]byte(`<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>` +
			// The store's own identity, which SeaweedFS knows, as the
			// temporary credentials STS hands out.
			`<AccessKeyId>` + f.s3.AccessKey + `</AccessKeyId><SecretAccessKey>` + f.s3.SecretKey + `</SecretAccessKey><SessionToken>sts-session</SessionToken>` +
			`<Expiration>` + exp + `</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`))
	}))
	t.Cleanup(sts.Close)
	t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)

	tokFile := filepath.Join(t.TempDir(), "aws-token")
	if err := os.WriteFile(tokFile, []byte("projected-sa-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env[schemas.EnvAWSRoleARN] = "arn:aws:iam::123456789012:role/restore"
	f.env[schemas.EnvAWSWebIdentityFile] = tokFile

	refuse.Store(true)
	code, tm := f.run(t, Options{})
	if code != schemas.ExitStorage || calls.Load() == 0 {
		t.Fatalf("refused: exit %d (%d STS calls): %s", code, calls.Load(), tm.Message)
	}
	f.unchanged(t)

	refuse.Store(false)
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t, "projected-sa-token", f.s3.SecretKey, "sts-session")
}
