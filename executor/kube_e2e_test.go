package executor

import (
	"encoding/pem"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Main wires the in-cluster recorder from the pod's environment and mounted
// ServiceAccount files: against a real OpenBao and an API server that
// enforces resourceVersion preconditions, the first run records and
// restores, the second finds the record and sends nothing.
func TestMainRecordsOnLockRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	api := &fakeAPI{rv: 3, token: "kube-token"}
	api.lr.Spec = heldSpec()
	api.lr.Status.State = schemas.LockHeld
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	files := map[string][]byte{
		"token":     []byte("kube-token"),
		"namespace": []byte("ns"),
		"ca.crt":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(f.paths.KubeDir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.env["KUBERNETES_SERVICE_HOST"] = host
	f.env["KUBERNETES_SERVICE_PORT"] = port
	f.env[schemas.EnvLockRequestName] = "lr"
	f.env[schemas.EnvRestoreRequestUID] = "uid-1"
	f.env[schemas.EnvPodUID] = "pod-uid"

	code, tm := f.run(t, Options{})
	if code != schemas.ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	s := api.lr.Status.Submission
	if s == nil || s.Digest != digestOf(f.snap) || s.PodUID != "pod-uid" || s.Target != f.bao.Addr || s.Size != int64(len(f.snap)) {
		t.Fatalf("record %+v", s)
	}
	patches := api.patches

	f.bao.put("foo", "after")
	code, tm = f.run(t, Options{})
	if code != schemas.ExitUnconfirmed || tm.Submitted || api.patches != patches || f.bao.get("foo") != "after" {
		t.Fatalf("second run: exit %d %+v, patches %d→%d", code, tm, patches, api.patches)
	}
	f.noSecrets(t, "kube-token")
}
