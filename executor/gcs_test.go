package executor

import (
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestRestoreGCS restores from fake-gcs-server, in-process on loopback,
// through the real GCS client pointed at it by BACKUP_ENDPOINT.
func TestRestoreGCS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Host: "127.0.0.1", Scheme: "http", PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "gsnaps"})
	srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "gsnaps", Name: f.key}, Content: f.snap})
	f.env[schemas.EnvProvider] = "gcs"
	f.env[schemas.EnvEndpoint] = srv.URL()
	f.env[schemas.EnvBucket] = "gsnaps"

	// Missing key first: the nearest keys are listed.
	f.env[schemas.EnvRestoreKey] = strings.Replace(f.key, "120000", "12000", 1)
	code, tm := f.run(t, Options{})
	if code != schemas.ExitSnapshot || !strings.Contains(tm.Message, f.key) {
		t.Fatalf("missing key: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)

	f.env[schemas.EnvRestoreKey] = f.key
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	// With a required safety snapshot: streamed into the store first.
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyRequired
	f.env[schemas.EnvClusterNamespace], f.env[schemas.EnvClusterName], f.env[schemas.EnvRestoreRequestName] = "vault", "prod", "r1"
	code, tm = f.run(t, Options{Recorder: &MemoryRecorder{}, HoldBack: 4096})
	if code != schemas.ExitOK || !tm.Submitted || tm.Safety == nil || tm.Safety.Size == 0 || !strings.HasPrefix(tm.Safety.URL, "gs://gsnaps/") {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
}
