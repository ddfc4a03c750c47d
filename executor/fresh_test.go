package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A restore into a fresh target: a new cluster that shares the source's
// static seal key and has an identity of its own. It takes the snapshot
// through snapshot-force, and is confirmed when it reports the snapshot's
// identity and version with one active node; a second restore into it is
// refused before anything is sent, since it is no longer fresh.
func TestFreshTarget(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "static.key")
	if err := os.WriteFile(key, randBytes(t, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixtureSealed(t, key)
	source := startBaoSealed(t, key)
	source.put("foo", "from-source")
	f.s3.put(t, "source/fresh.snap", source.snapshot())
	src := source.health()
	bootID := f.bao.health().ClusterID

	f.env[schemas.EnvRestoreKey] = "source/fresh.snap"
	f.env[schemas.EnvFreshTarget] = "true"
	if code, tm := f.run(t, Options{}); code != schemas.ExitConfig || !strings.Contains(tm.Message, schemas.EnvRestoreForce) {
		t.Fatalf("without force: exit %d: %s", code, tm.Message)
	}

	f.env[schemas.EnvRestoreForce] = "true"
	f.env[schemas.EnvExpectedClusterID] = src.ClusterID
	f.env[schemas.EnvExpectedVersion] = src.Version
	code, tm := f.run(t, Options{})
	if code != schemas.ExitOK || !tm.Submitted || tm.ClusterIDBefore != bootID || tm.ClusterIDAfter != src.ClusterID ||
		!strings.Contains(tm.Message, "took the snapshot's identity") || !strings.Contains(tm.Message, "one active") {
		t.Fatalf("fresh target: exit %d: %+v\n%s", code, tm, f.log)
	}
	if got := f.bao.get("foo"); got != "from-source" {
		t.Fatalf("the source's data: foo=%s", got)
	}

	// Now it carries the snapshot's identity: not fresh, refused before
	// sending.
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || tm.Submitted || !strings.Contains(tm.Message, "not fresh") {
		t.Fatalf("no longer fresh: exit %d: %+v", code, tm)
	}

	// Unpinned, the identity must change from the bootstrap one: a
	// snapshot of the target itself leaves it as it was, and fails.
	delete(f.env, schemas.EnvExpectedClusterID)
	f.s3.put(t, "self/own.snap", f.bao.snapshot())
	f.env[schemas.EnvRestoreKey] = "self/own.snap"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || !tm.Submitted || !strings.Contains(tm.Message, "did not take") {
		t.Fatalf("identity unchanged: exit %d: %+v", code, tm)
	}
}
