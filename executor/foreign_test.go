package executor

import (
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
	f.unchanged(t)

	f.env[schemas.EnvRestoreForce] = "true"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK || !tm.Submitted || tm.Sealed == nil || !*tm.Sealed || !strings.Contains(tm.Message, "SEALED") {
		t.Fatalf("force: exit %d: %+v\n%s", code, tm, f.log)
	}
}
