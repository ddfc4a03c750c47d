package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A snapshot from another cluster, with other seal keys (each dev server
// has its own): the verifying endpoint refuses it and nothing changes;
// snapshot-force applies it, the node seals itself, and the executor says
// so and reports the identity change.
func TestForeignSnapshot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := startBao(t)
	other.put("foo", "from-other")
	f.s3.put(t, "other/foreign.snap", other.snapshot())
	f.env[schemas.EnvRestoreKey] = "other/foreign.snap"

	code, tm := f.run(t, Options{})
	if code != schemas.ExitSnapshot || !strings.Contains(tm.Message, "another seal key") {
		t.Fatalf("default endpoint: exit %d: %s", code, tm.Message)
	}
	// OpenBao refuses it after reading it whole: submitted, and refused
	// with nothing applied, which the phase reconciler turns into Failed
	// (reconciler/phase, TestNext "refused after the whole snapshot").
	if !tm.Submitted || !strings.HasSuffix(tm.Message, noteRefused) {
		t.Errorf("default endpoint: submitted %v, message %q; want submitted and %q", tm.Submitted, tm.Message, noteRefused)
	}
	f.unchanged(t)

	f.env[schemas.EnvRestoreForce] = "true"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK || !tm.Submitted || tm.Sealed == nil || !*tm.Sealed || !strings.Contains(tm.Message, "SEALED") {
		t.Fatalf("force: exit %d: %+v\n%s", code, tm, f.log)
	}
}

// A snapshot from a separate cluster that shares the static seal key: the
// verifying endpoint accepts and applies it (OpenBao cannot tell), and the
// cluster silently takes the other cluster's data and identity. The
// executor reports the cluster_id change loudly; with expectedClusterID set
// it fails with ExitVerification. The cluster_id is inside the
// barrier-encrypted data, so no check can catch this before the restore.
func TestSameSealKeyForeignSnapshot(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "static.key")
	if err := os.WriteFile(key, randBytes(t, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixtureSealed(t, key)
	other := startBaoSealed(t, key)
	other.put("foo", "from-other")
	f.s3.put(t, "other/same-key.snap", other.snapshot())
	otherID := other.health().ClusterID
	ownID := f.bao.health().ClusterID

	f.env[schemas.EnvRestoreKey] = "other/same-key.snap"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitOK || !strings.Contains(tm.Message, "CHANGED") || tm.ClusterIDBefore != ownID || tm.ClusterIDAfter != otherID {
		t.Fatalf("no pin: exit %d: %+v", code, tm)
	}
	if got := f.bao.get("foo"); got != "from-other" {
		t.Fatalf("expected the other cluster's data (OpenBao applies it): foo=%s", got)
	}

	// The cluster now carries the other's identity: a pin on its original
	// cluster_id refuses any further restore before sending anything.
	f.env[schemas.EnvExpectedClusterID] = ownID
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || tm.Submitted || !strings.Contains(tm.Message, "refusing") {
		t.Fatalf("pinned, before: exit %d: %+v", code, tm)
	}

	// A third cluster with the same key, pinned to its own cluster_id: the
	// pin passes before, the restore is applied, and the identity change is
	// caught after it: ExitVerification with submitted=true.
	third := startBaoSealed(t, key)
	f.env[schemas.EnvOpenBaoAddr] = third.Addr
	f.env[schemas.EnvExpectedClusterID] = third.health().ClusterID
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || !tm.Submitted || tm.ClusterIDAfter != otherID || !strings.Contains(tm.Message, "CHANGED") {
		t.Fatalf("pinned, after: exit %d: %+v", code, tm)
	}
}
