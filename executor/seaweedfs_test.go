package executor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestS3CredentialsChecked restores through an S3 server that really checks
// signatures, and shows that a wrong secret is refused as a storage error
// (exit 5, permanent), with the cluster untouched and the secret unlogged.
func TestS3CredentialsChecked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const access, secret = "AKIAFAKE", "fake-secret-key" // the fixture's mounted credentials
	srv := s3test.Start(t, access, secret, "snaps")
	srv.Put(t, f.key, f.snap)
	url := srv.URL
	f.env[schemas.EnvEndpoint] = url

	if err := os.Chmod(filepath.Join(f.paths.CredentialsDir, schemas.KeySecretAccessKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.paths.CredentialsDir, schemas.KeySecretAccessKey), []byte("wrong-secret-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, tm := f.run(t, Options{})
	if code != schemas.ExitStorage {
		t.Fatalf("wrong secret: exit %d, want %d (storage): %s", code, schemas.ExitStorage, tm.Message)
	}
	f.unchanged(t)
	f.noSecrets(t, "wrong-secret-key")

	if err := os.WriteFile(filepath.Join(f.paths.CredentialsDir, schemas.KeySecretAccessKey), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK {
		t.Fatalf("right secret: exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t)
}
