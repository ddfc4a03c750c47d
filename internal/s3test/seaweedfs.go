// Package s3test runs a real S3 server for tests: SeaweedFS ("weed mini"),
// which checks request signatures, on loopback, with an identity that may
// do anything, a read-only one, and one bucket. The executor's tests and the end-to-end tests share it.
package s3test

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
)

// Server is a running SeaweedFS S3 endpoint.
type Server struct {
	URL                          string // http://127.0.0.1:<port>
	Bucket, AccessKey, SecretKey string
	// ReaderAccessKey and ReaderSecretKey may read and list, not write.
	ReaderAccessKey, ReaderSecretKey string
}

// Start runs SeaweedFS until the test ends, with the identity
// accessKey/secretKey and the bucket, and waits until it answers.
func Start(t testing.TB, accessKey, secretKey, bucket string) *Server {
	t.Helper()
	bin := testbin.Path(t, "seaweedfs")
	dir := t.TempDir()
	s3Port := freePortWithGRPC(t)
	log := &bytes.Buffer{}
	// Two identities: the given one may do anything, a reader may only
	// read and list (a backup's credentials, often).
	s := &Server{Bucket: bucket, AccessKey: accessKey, SecretKey: secretKey, ReaderAccessKey: "reader-" + accessKey, ReaderSecretKey: "reader-" + secretKey}
	conf := fmt.Sprintf(`{"identities":[{"name":"admin","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","List","Tagging","Write"]},`+
		`{"name":"reader","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Read","List"]}]}`, accessKey, secretKey, s.ReaderAccessKey, s.ReaderSecretKey)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "mini", "-dir="+dir, "-s3.config="+filepath.Join(dir, "s3.json"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		fmt.Sprintf("-master.port=%d", freePortWithGRPC(t)), fmt.Sprintf("-volume.port=%d", freePortWithGRPC(t)),
		fmt.Sprintf("-filer.port=%d", freePortWithGRPC(t)), fmt.Sprintf("-s3.port=%d", s3Port),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false", "-bucket="+bucket)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", s3Port)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(s.URL); err == nil { //nolint:noctx // a readiness probe
			_ = r.Body.Close()
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("SeaweedFS did not start:\n%s", log.String())
	return nil
}

// Put uploads an object. weed mini creates the bucket as it starts, so the
// upload is retried until the filer is ready.
func (s *Server) Put(t testing.TB, key string, body []byte) {
	t.Helper()
	cli := s3.New(s3.Options{
		BaseEndpoint: aws.String(s.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}, nil
		}),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	for range 100 {
		if _, err = cli.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("upload %s to SeaweedFS: %v", key, err)
}

// freePortWithGRPC finds a loopback port p with p+10000 also free: SeaweedFS
// puts each server's gRPC port 10000 above its HTTP port.
func freePortWithGRPC(t testing.TB) int { return testbin.FreePorts(t, 10000) }
