// Package stale tells a reconciler when its cache still shows an object as
// it was before the reconciler's own last write of it.
//
// A controller's cache learns of a write only when the watch event comes
// back, a few milliseconds to seconds later; meanwhile every reconcile of
// that object decides on the old copy, repeats the write, and gets a
// conflict or a redundant write. The event of the write is sure to come
// (and to wake the reconciler), so a reconcile that sees the old copy can
// simply stop.
package stale

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// limit bounds the writes remembered; past it, they are forgotten (a
// forgotten write costs only a redundant reconcile).
const limit = 4096

// Writes remembers, per object, the resourceVersions our writes replaced
// since the cache last caught up, and the one our last write produced.
// The zero value is ready to use.
type Writes struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*write
}

type write struct {
	before []string
	after  string
	// skipped: a reconcile stopped on a copy from before our last write.
	skipped bool
}

// Wrote records a write that turned resourceVersion before into after. A
// write that changed nothing (after == before, as a no-op apply leaves it)
// records nothing: no event will come of it.
func (w *Writes) Wrote(key types.NamespacedName, before, after string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if before == "" || after == "" || before == after {
		return
	}
	if w.m == nil || len(w.m) >= limit {
		w.m = map[types.NamespacedName]*write{}
	}
	wr := w.m[key]
	if wr == nil || wr.after != before {
		// Not a chain of our own writes: start again.
		wr = &write{}
		w.m[key] = wr
	}
	wr.before = append(wr.before, before)
	wr.after = after
}

// Stale reports whether a copy with resourceVersion rv predates our last
// write of the object: it is one our writes replaced. A copy of our last
// write drops the record; any other version is not stale (another writer
// may have moved the object on).
func (w *Writes) Stale(key types.NamespacedName, rv string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	wr, ok := w.m[key]
	if !ok {
		return false
	}
	if rv == wr.after {
		delete(w.m, key)
		return false
	}
	if slices.Contains(wr.before, rv) {
		wr.skipped = true
		return true
	}
	return false
}

// Skipped reports whether a reconcile of the object stopped on a stale copy
// (Stale said so) and rv is a copy it was waiting for. The event that
// brings rv should then go ahead of the queue: the work it resumes has
// waited its turn once already, and may be urgent (a finished Job).
func (w *Writes) Skipped(key types.NamespacedName, rv string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	wr, ok := w.m[key]
	return ok && wr.skipped && !slices.Contains(wr.before, rv)
}
