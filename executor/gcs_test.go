package executor

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestRestoreGCS restores from fake-gcs-server, the GCS protocol server,
// run as its own process on loopback (hack/tool.sh builds it), through the
// real GCS client pointed at it by BACKUP_ENDPOINT.
func TestRestoreGCS(t *testing.T) {
	testbin.SkipShort(t, "runs fake-gcs-server")
	t.Parallel()
	f := newFixture(t)
	url := startGCS(t, "gsnaps", map[string][]byte{f.key: f.snap})
	f.env[schemas.EnvProvider] = "gcs"
	f.env[schemas.EnvEndpoint] = url
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

// startGCS runs fake-gcs-server until the test ends, with one bucket
// holding these objects (loaded from its data directory as it starts), and
// returns its URL once it answers.
func startGCS(t *testing.T, bucket string, objects map[string][]byte) string {
	t.Helper()
	bin := testbin.Path(t, "fake-gcs-server")
	data := t.TempDir()
	for key, body := range objects {
		p := filepath.Join(data, bucket, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	var log bytes.Buffer
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-backend", "memory",
		"-data", data, "-public-host", fmt.Sprintf("127.0.0.1:%d", port), "-external-url", url, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url + "/storage/v1/b/" + bucket); err == nil { //nolint:noctx // a readiness probe
			_ = r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return url
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("fake-gcs-server did not start:\n%s", log.String())
	return ""
}
