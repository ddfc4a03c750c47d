package executor

import (
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A restore with no key takes the newest object under the path prefix
// (safety snapshots aside), records the choice before reading it, and a
// retried run restores the recorded object even when a newer one landed
// since; an object changed since it was chosen is refused.
func TestNewestUnderPrefix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const newest = "clusters/prod/2026-11-27-120000.snap"
	time.Sleep(1100 * time.Millisecond) // S3 keeps modification times to the second
	f.s3.put(t, newest, f.snap)
	time.Sleep(1100 * time.Millisecond)
	f.s3.put(t, "clusters/prod/safety/vault/prod/undo-20261127T130000Z.snap", f.snap)

	delete(f.env, schemas.EnvRestoreKey)
	f.env[schemas.EnvNewestUnderPrefix] = "true"
	if code, tm := f.run(t, Options{}); code != schemas.ExitConfig || !strings.Contains(tm.Message, schemas.EnvPathPrefix) {
		t.Fatalf("no path prefix: exit %d: %s", code, tm.Message)
	}
	f.env[schemas.EnvPathPrefix] = "clusters/prod"

	rec := &MemoryRecorder{}
	code, tm := f.run(t, Options{Recorder: rec, HoldBack: 4096})
	if code != schemas.ExitOK || tm.SnapshotKey != newest || rec.Chosen == nil || rec.Chosen.Key != newest || rec.Chosen.ETag == "" {
		t.Fatalf("newest: exit %d, key %s, chosen %+v: %s\n%s", code, tm.SnapshotKey, rec.Chosen, tm.Message, f.log)
	}
	f.restored(t)

	// A retry restores what was chosen, not what landed since.
	time.Sleep(1100 * time.Millisecond)
	f.s3.put(t, "clusters/prod/2026-11-28-120000.snap", f.snap)
	retry := &MemoryRecorder{Chosen: rec.Chosen}
	if code, tm := f.run(t, Options{Recorder: retry, HoldBack: 4096}); code != schemas.ExitOK || tm.SnapshotKey != newest {
		t.Fatalf("retry: exit %d, key %s: %s", code, tm.SnapshotKey, tm.Message)
	}

	// The chosen object was replaced: refused before anything is sent.
	f.s3.put(t, newest, append(append([]byte{}, f.snap...), 0))
	code, tm = f.run(t, Options{Recorder: &MemoryRecorder{Chosen: rec.Chosen}, HoldBack: 4096})
	if code != schemas.ExitSnapshot || tm.Submitted || !strings.Contains(tm.Message, "changed since it was chosen") {
		t.Fatalf("replaced: exit %d: %+v", code, tm)
	}

	// Nothing but safety snapshots: a clear refusal.
	f.env[schemas.EnvPathPrefix] = "clusters/none"
	if code, tm := f.run(t, Options{Recorder: &MemoryRecorder{}}); code != schemas.ExitSnapshot || !strings.Contains(tm.Message, "nothing to restore under") {
		t.Fatalf("empty prefix: exit %d: %s", code, tm.Message)
	}
}
