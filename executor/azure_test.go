package executor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// devstoreKey is Azurite's well-known, public development account key.
const devstoreKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// startAzurite runs azurite's blob server (npm, pinned by hack/npm's
// lockfile) on a free loopback port, and returns its service URL.
func startAzurite(t *testing.T) string {
	t.Helper()
	mainJS := testbin.Path(t, "azurite")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := t.TempDir()
	var out bytes.Buffer
	cmd := exec.Command("node", mainJS, "--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port), "--location", dir, "--skipApiVersionCheck", "--silent", "--loose")
	cmd.Dir = filepath.Dir(mainJS)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = c.Close()
			return fmt.Sprintf("http://127.0.0.1:%d/devstoreaccount1", port)
		}
		select {
		case <-exited:
			t.Fatalf("azurite exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("azurite did not listen:\n%s", out.String())
	return ""
}

func TestRestoreAzure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := startAzurite(t)
	conn := "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + devstoreKey + ";BlobEndpoint=" + url + ";"
	c, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateContainer(ctx, "snaps", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadBuffer(ctx, "snaps", f.key, f.snap, nil); err != nil {
		t.Fatal(err)
	}
	f.env[schemas.EnvProvider] = "azure"
	f.env[schemas.EnvAzureContainer] = "snaps"
	f.env[schemas.EnvAzureAccount] = "devstoreaccount1"
	f.env[schemas.EnvEndpoint] = url
	for _, k := range []string{"accessKeyId", "secretAccessKey"} {
		_ = os.Remove(filepath.Join(f.paths.CredentialsDir, k))
	}
	writeCred := func(name, v string) {
		p := filepath.Join(f.paths.CredentialsDir, name)
		_ = os.Remove(p)
		if v != "" {
			if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Wrong account key: the store refuses, exit ExitStorage.
	wrong := strings.Repeat("A", 86) + "=="
	writeCred(schemas.KeyAzureAccountKey, wrong)
	code, tm := f.run(t, Options{})
	if code != schemas.ExitStorage || tm.Submitted {
		t.Fatalf("wrong key: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
	f.noSecrets(t, wrong)

	// Missing key with the right account key: nearest keys listed.
	writeCred(schemas.KeyAzureAccountKey, devstoreKey)
	f.env[schemas.EnvRestoreKey] = strings.Replace(f.key, "120000", "12000", 1)
	code, tm = f.run(t, Options{})
	if code != schemas.ExitSnapshot || !strings.Contains(tm.Message, f.key) {
		t.Fatalf("missing key: exit %d: %s", code, tm.Message)
	}
	f.env[schemas.EnvRestoreKey] = f.key

	// The connection string alone restores.
	writeCred(schemas.KeyAzureAccountKey, "")
	writeCred(schemas.KeyAzureConnString, conn)
	delete(f.env, schemas.EnvEndpoint)
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	// With a required safety snapshot: streamed into the store first.
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyRequired
	f.env[schemas.EnvClusterNamespace], f.env[schemas.EnvClusterName], f.env[schemas.EnvRestoreRequestName] = "vault", "prod", "r1"
	code, tm = f.run(t, Options{Recorder: &MemoryRecorder{}, HoldBack: 4096})
	if code != schemas.ExitOK || !tm.Submitted || tm.Safety == nil || tm.Safety.Size == 0 || !strings.HasPrefix(tm.Safety.URL, "azure://") {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t, devstoreKey)
}
