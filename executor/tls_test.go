package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/testca"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// OpenBao behind TLS whose certificate names no IP address, as
// openbao-operator issues it (SANs *.<cluster>.<ns>.svc and the like): the
// executor connects to the address it is given, verifies the certificate
// against the cluster's CA under the server name the certificate carries,
// and restores. Without the CA, or under a name the certificate does not
// carry, it stops before sending anything: exit 1, naming the settings.
func TestRestoreOverTLSByServerName(t *testing.T) {
	t.Parallel()
	ca := testca.New(t)
	cert, key := ca.Server(t, "openbao-cluster-prod.local", "*.prod.vault.svc", "*.vault.svc")
	dir := t.TempDir()
	tl := &baoTLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	caFile := filepath.Join(dir, "ca.crt")
	for path, b := range map[string][]byte{tl.CertFile: cert, tl.KeyFile: key, caFile: ca.PEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f := newFixtureWith(t, "", tl)
	if !strings.HasPrefix(f.env[schemas.EnvOpenBaoAddr], "https://127.0.0.1:") {
		t.Fatalf("the executor is not pointed at the TLS listener: %s", f.env[schemas.EnvOpenBaoAddr])
	}

	for _, c := range []struct {
		name, ca, serverName, want string
	}{
		{name: "no CA", serverName: "prod.vault.svc", want: schemas.EnvTLSCAPath},
		{name: "a name the certificate lacks", ca: caFile, serverName: "prod.other.svc", want: schemas.EnvTLSServerName},
	} {
		f.env[schemas.EnvTLSCAPath], f.env[schemas.EnvTLSServerName] = c.ca, c.serverName
		code, tm := f.run(t, Options{})
		if code != schemas.ExitConfig || tm.Submitted || !strings.Contains(tm.Message, "TLS verification failed") || !strings.Contains(tm.Message, c.want) {
			t.Errorf("%s: exit %d, submitted %v: %s; want exit 1 naming %s", c.name, code, tm.Submitted, tm.Message, c.want)
		}
		f.unchanged(t)
	}

	f.env[schemas.EnvTLSCAPath], f.env[schemas.EnvTLSServerName] = caFile, "prod.vault.svc"
	rec := &MemoryRecorder{}
	code, tm := f.run(t, Options{Recorder: rec})
	if code != schemas.ExitOK || !tm.Submitted {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	// The record says what the run verified OpenBao with, for the
	// reconciler's health gates.
	if rec.Rec == nil || rec.Rec.TLSCA != string(ca.PEM) || rec.Rec.TLSServerName != "prod.vault.svc" {
		t.Errorf("the submission record does not carry the CA and server name: %+v", rec.Rec)
	}
}
