package executor

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// freePortWithGRPC finds a loopback port p with p+10000 also free: SeaweedFS
// puts each server's gRPC port 10000 above its HTTP port.
func freePortWithGRPC(t testing.TB) int { return freePorts(t, 10000) }

// startSeaweedFS runs a real S3 server that checks request signatures
// (SeaweedFS "weed mini"), with one identity and the bucket "snaps".
func startSeaweedFS(t *testing.T, accessKey, secretKey string) string {
	t.Helper()
	bin := testbin.Path(t, "seaweedfs")
	dir := t.TempDir()
	s3Port := freePortWithGRPC(t)
	log := &bytes.Buffer{}
	cmd := exec.Command(bin, "mini", "-dir="+dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		fmt.Sprintf("-master.port=%d", freePortWithGRPC(t)), fmt.Sprintf("-volume.port=%d", freePortWithGRPC(t)),
		fmt.Sprintf("-filer.port=%d", freePortWithGRPC(t)), fmt.Sprintf("-s3.port=%d", s3Port),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false", "-bucket=snaps")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey, "HOME="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", s3Port)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil { //nolint:noctx // a readiness probe
			_ = r.Body.Close()
			return url
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("SeaweedFS did not start:\n%s", log.String())
	return ""
}

// TestS3CredentialsChecked restores through an S3 server that really checks
// signatures, and shows that a wrong secret is refused as a storage error
// (exit 5, permanent), with the cluster untouched and the secret unlogged.
func TestS3CredentialsChecked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const access, secret = "AKIAFAKE", "fake-secret-key" // the fixture's mounted credentials
	url := startSeaweedFS(t, access, secret)

	cli := s3.New(s3.Options{
		BaseEndpoint: aws.String(url), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: access, SecretAccessKey: secret}, nil
		}),
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// weed mini creates the bucket as it starts; retry the upload until the
	// filer is ready.
	var err error
	for range 100 {
		if _, err = cli.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("snaps"), Key: aws.String(f.key), Body: bytes.NewReader(f.snap)}); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("upload to SeaweedFS: %v", err)
	}
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
