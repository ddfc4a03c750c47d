package testbed

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// BackupMode is how the stand-in operator's backup loop writes the
// cluster's status.operationLock.
type BackupMode int

const (
	// BackupCAS is today's operator: a fresh read, and writes (take and
	// release) preconditioned on the resourceVersion it read.
	BackupCAS BackupMode = iota
	// BackupBlind is the January 2026 operator: it reads the lock from its
	// informer cache, takes it with a JSON merge patch that carries no
	// resourceVersion, and releases it with a blind null.
	BackupBlind
)

// BackupHolder is the holder the stand-in's backups write.
const BackupHolder = "openbaocluster/backup"

// Backups configures the stand-in operator's backup loop.
type Backups struct {
	Mode  BackupMode
	Every time.Duration // between two backups of a cluster (jittered ±50 %)
	Hold  time.Duration // how long a backup holds the lock
	// Think is the most the loop spends between reading the lock free and
	// writing its own (uniformly random): the work the operator does in
	// between, and the window a blind writer races in.
	Think time.Duration
}

// BackupCounts are what a backup loop did.
type BackupCounts struct {
	Taken     int64 // lock writes that went through
	Busy      int64 // rounds skipped because the lock (as read) was held
	Conflicts int64 // CAS writes the API server refused (BackupCAS only)
}

// BackupLoop runs the stand-in operator's backups of the clusters until
// the returned stop is called (or the test ends), under the operator's
// identity. stop waits for the loops and returns their counts.
func (e *Env) BackupLoop(t testing.TB, ns string, clusters []string, b Backups) (stop func() BackupCounts) {
	t.Helper()
	op, err := e.Operator()
	if err != nil {
		t.Fatal(err)
	}
	cache := e.lockCache(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var taken, busy, conflicts atomic.Int64
	for _, name := range clusters {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(jitter(b.Every)):
				}
				held, rv := cache.read(name), ""
				if b.Mode == BackupCAS {
					held, rv = freshLock(ctx, op, ns, name)
				}
				if held {
					busy.Add(1)
					continue
				}
				time.Sleep(time.Duration(rand.Int64N(int64(b.Think) + 1)))
				// Not cancelled with the loop: a take the API server applied
				// after the client gave up would be a lock no one releases.
				if err := writeBackupLock(context.Background(), op, ns, name, b.Mode, rv, true); err != nil {
					if apierrors.IsConflict(err) {
						conflicts.Add(1)
					} else {
						t.Errorf("backup of %s: %v", name, err)
					}
					continue
				}
				taken.Add(1)
				time.Sleep(b.Hold)
				// Released even when the test is stopping: a backup never
				// leaves its lock behind.
				if err := writeBackupLock(context.Background(), op, ns, name, b.Mode, "", false); err != nil && !apierrors.IsConflict(err) {
					t.Errorf("backup of %s, release: %v", name, err)
				}
			}
		})
	}
	var once sync.Once
	var counts BackupCounts
	stop = func() BackupCounts {
		once.Do(func() {
			cancel()
			wg.Wait()
			counts = BackupCounts{Taken: taken.Load(), Busy: busy.Load(), Conflicts: conflicts.Load()}
		})
		return counts
	}
	t.Cleanup(func() { stop() })
	return stop
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

func newClusterObject(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schemas.ClusterGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// freshLock reads the cluster from the API: whether its lock is held, and
// the resourceVersion read.
func freshLock(ctx context.Context, c client.Client, ns, name string) (held bool, rv string) {
	u := newClusterObject(ns, name)
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
		return true, "" // unknown: do not write
	}
	return lockHolder(u) != "" && lockOperation(u) != "", u.GetResourceVersion()
}

// writeBackupLock takes (take) or releases the lock as the mode writes it:
// a merge patch with no resourceVersion (blind), or one preconditioned on
// the resourceVersion read (rv for a take; a CAS release reads afresh and
// leaves a lock that is not the backup's alone), which the API server
// refuses with a conflict if anything wrote since.
func writeBackupLock(ctx context.Context, c client.Client, ns, name string, mode BackupMode, rv string, take bool) error {
	value := `null`
	if take {
		now := time.Now().UTC().Format(time.RFC3339)
		value = `{"operation":"Backup","holder":"` + BackupHolder + `","message":"scheduled backup","acquiredAt":"` + now + `","renewedAt":"` + now + `"}`
	}
	meta := ``
	if mode == BackupCAS {
		if !take {
			u := newClusterObject(ns, name)
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
				return err
			}
			if lockHolder(u) != BackupHolder {
				return nil
			}
			rv = u.GetResourceVersion()
		}
		meta = `"metadata":{"resourceVersion":"` + rv + `"},`
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{`+meta+`"status":{"operationLock":`+value+`}}`))
	return c.Status().Patch(ctx, newClusterObject(ns, name), patch)
}

func lockHolder(u *unstructured.Unstructured) string {
	s, _, _ := unstructured.NestedString(u.Object, "status", "operationLock", "holder")
	return s
}

func lockOperation(u *unstructured.Unstructured) string {
	s, _, _ := unstructured.NestedString(u.Object, "status", "operationLock", "operation")
	return s
}

// lockView is an informer-like cache of the clusters' locks in a
// namespace, fed by a watch: what the January 2026 backup manager read.
type lockView struct {
	mu   sync.Mutex
	held map[string]bool
}

func (e *Env) lockCache(t testing.TB, ns string) *lockView {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(schemas.ClusterGVK.GroupVersion().WithKind(schemas.ClusterGVK.Kind + "List"))
	v := &lockView{held: map[string]bool{}}
	eachVersion(t, e.watch(t, l, client.InNamespace(ns)), func(u *unstructured.Unstructured) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.held[u.GetName()] = lockHolder(u) != ""
	})
	return v
}

// read is the cached view; a cluster not yet seen counts as held.
func (v *lockView) read(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	h, seen := v.held[name]
	return h || !seen
}
