package executor

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// safetyFixture is a fixture whose store is SeaweedFS (real S3, with a
// read-only identity too), with a required safety snapshot.
func safetyFixture(t *testing.T) (*fixture, *s3test.Server) {
	f := newFixture(t)
	const access, secret = "AKIAFAKE", "fake-secret-key" // the fixture's mounted credentials
	srv := s3test.Start(t, access, secret, "snaps")
	srv.Put(t, f.key, f.snap)
	f.env[schemas.EnvEndpoint] = srv.URL
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyRequired
	f.env[schemas.EnvClusterNamespace], f.env[schemas.EnvClusterName], f.env[schemas.EnvRestoreRequestName] = "vault", "prod", "r1"
	f.env[schemas.EnvPathPrefix] = "clusters/prod"
	return f, srv
}

// setCredentials replaces the mounted S3 credentials.
func setCredentials(t *testing.T, f *fixture, access, secret string) {
	for k, v := range map[string]string{schemas.KeyAccessKeyID: access, schemas.KeySecretAccessKey: secret} {
		p := filepath.Join(f.paths.CredentialsDir, k)
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A restore with a required safety snapshot, against a real OpenBao and a
// real S3: the cluster's state is stored first (key, digest, size and
// identity reported), then the snapshot is restored; restoring the safety
// snapshot with its digest, size and cluster ID pinned (the undo) brings
// back the state from before the restore.
func TestSafetySnapshotThenUndo(t *testing.T) {
	t.Parallel()
	f, _ := safetyFixture(t)
	clusterID := f.bao.health().ClusterID
	code, tm := f.run(t, Options{Recorder: &MemoryRecorder{}, HoldBack: 64})
	if code != schemas.ExitOK || tm.Safety == nil {
		t.Fatalf("exit %d, safety %+v: %s\n%s", code, tm.Safety, tm.Message, f.log)
	}
	s := tm.Safety
	if !strings.HasPrefix(s.Key, "clusters/prod/safety/vault/prod/r1-") || !strings.HasSuffix(s.Key, ".snap") || s.Size == 0 || len(s.SHA256) != 64 ||
		s.ClusterID != clusterID || s.TakenAt == "" || s.URL != "s3://snaps/"+s.Key {
		t.Fatalf("safety %+v", s)
	}
	f.restored(t)
	if !strings.Contains(f.log.String(), "safety snapshot of cluster "+clusterID+" taken in "+s.Duration) {
		t.Fatalf("log:\n%s", f.log)
	}
	f.noSecrets(t, "root", "fake-secret-key")

	// The undo: the safety snapshot, pinned.
	f.env[schemas.EnvRestoreKey] = s.Key
	f.env[schemas.EnvExpectedDigest] = "sha256:" + s.SHA256
	f.env[schemas.EnvExpectedSize] = strconv.FormatInt(s.Size, 10)
	f.env[schemas.EnvExpectedClusterID] = s.ClusterID
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyOff
	code, tm = f.run(t, Options{Recorder: &MemoryRecorder{}})
	if code != schemas.ExitOK || tm.Safety != nil {
		t.Fatalf("undo: exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.unchanged(t) // foo=v2 and bar=new again: the state before the restore
}

// Read-only store credentials: Required fails before anything is sent
// (exit 5, naming the write permission), the data unchanged; BestEffort
// restores without one and says why. A token that may restore but not
// read the snapshot endpoint: Required fails naming read (exit 2).
func TestSafetySnapshotRefused(t *testing.T) {
	t.Parallel()
	f, srv := safetyFixture(t)
	setCredentials(t, f, srv.ReaderAccessKey, srv.ReaderSecretKey)
	rec := &MemoryRecorder{}
	code, tm := f.run(t, Options{Recorder: rec})
	if code != schemas.ExitStorage || tm.Submitted || rec.Rec != nil || tm.Safety != nil ||
		!strings.Contains(tm.Message, "can read but not write") || !strings.Contains(tm.Message, "s3:PutObject") || !strings.Contains(tm.Message, "spec.safetySnapshot: BestEffort or Off") {
		t.Fatalf("read-only, required: exit %d, record %+v: %s", code, rec.Rec, tm.Message)
	}
	f.unchanged(t)
	f.noSecrets(t, srv.ReaderSecretKey)

	weak := f.bao.token(`path "sys/storage/raft/snapshot" { capabilities = ["update"] }` + "\n" + `path "sys/capabilities-self" { capabilities = ["update"] }`)
	f.setToken(t, weak)
	setCredentials(t, f, srv.AccessKey, srv.SecretKey)
	code, tm = f.run(t, Options{Recorder: rec})
	if code != schemas.ExitAuth || tm.Submitted || !strings.Contains(tm.Message, "may not take the safety snapshot") || !strings.Contains(tm.Message, "read is needed") {
		t.Fatalf("token without read: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)

	f.setToken(t, "root")
	setCredentials(t, f, srv.ReaderAccessKey, srv.ReaderSecretKey)
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyBestEffort
	code, tm = f.run(t, Options{Recorder: rec})
	if code != schemas.ExitOK || tm.Safety == nil || !strings.Contains(tm.Safety.Skipped, "can read but not write") {
		t.Fatalf("read-only, best effort: exit %d, safety %+v: %s", code, tm.Safety, tm.Message)
	}
	f.restored(t)
}

// The S3 upload in parts, against SeaweedFS: a stream of three parts
// arrives whole; a stream that fails midway leaves no object and no
// multipart upload behind; read-only credentials are refused as storage.
func TestS3PutInParts(t *testing.T) {
	t.Parallel()
	f, srv := safetyFixture(t)
	cfg, err := LoadConfig(envOf(f.env), f.paths)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	open := func() *s3Source {
		src, err := newS3Source(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := src.(*s3Source)
		s.partSize = 5 << 20
		return s
	}
	s := open()
	data := randBytes(t, 12<<20)
	if err := s.Put(ctx, "parts/whole.snap", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	body, err := s.Open(ctx, "parts/whole.snap", ObjectInfo{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	_ = body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
	}

	broken := io.MultiReader(bytes.NewReader(data[:7<<20]), iotest.ErrReader(errors.New("connection reset")))
	err = s.Put(ctx, "parts/broken.snap", broken)
	if ExitCode(err) != schemas.ExitTransient || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("a broken stream: exit %d: %v", ExitCode(err), err)
	}
	if _, err := s.Stat(ctx, "parts/broken.snap"); !errors.Is(err, errNoObject) {
		t.Fatalf("the broken upload left an object: %v", err)
	}
	ups, err := s.c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil || len(ups.Uploads) != 0 {
		t.Fatalf("multipart uploads left: %d (%v)", len(ups.Uploads), err)
	}

	cfg.Creds.AccessKeyID, cfg.Creds.SecretAccessKey = Secret(srv.ReaderAccessKey), Secret(srv.ReaderSecretKey)
	if err := open().Put(ctx, "parts/refused.snap", bytes.NewReader(data)); ExitCode(err) != schemas.ExitStorage {
		t.Fatalf("read-only credentials: exit %d: %v", ExitCode(err), err)
	}
}
