package testbed

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// WatchNamed watches one object, of the kind whose list kind is given, by
// name in a namespace; the watch stops when the test ends. Tests use it to
// see every version of an object, which a poll could miss.
func (e *Env) WatchNamed(t testing.TB, list schema.GroupVersionKind, ns, name string) watch.Interface {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(list)
	return e.watch(t, l, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
}

// watch watches the objects of list (with opts) until the test ends.
func (e *Env) watch(t testing.TB, list client.ObjectList, opts ...client.ListOption) watch.Interface {
	t.Helper()
	wc, err := client.NewWithWatch(e.Config, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), list, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// eachVersion calls f, in order and from one goroutine, with every version
// of an object (added or modified) that w delivers, until the test ends;
// the test's cleanup waits for the last call.
func eachVersion[T client.Object](t testing.TB, w watch.Interface, f func(T)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if o, ok := ev.Object.(T); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				f(o)
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
}

// HolderWatch records every holder of an OpenBaoCluster's operation lock
// that a watch sees, and each time the lock passes from one holder to
// another without being free in between (what a compare-and-swap never
// does).
type HolderWatch struct {
	mu         sync.Mutex
	seen       []string // holders in order of acquisition
	violations []string
	last       string
	freedAt    time.Time
	handovers  []time.Duration // from a release to the next acquisition, as the watch saw them
	timeline   []LockChange    // every version of the lock, in resourceVersion order
}

// LockChange is the lock as one version of the cluster holds it. RV is
// etcd's revision, one order for every object: a write's resourceVersion
// on another object places it on this timeline.
type LockChange struct {
	RV        int64
	Operation string
	Holder    string
}

// WatchLockHolders watches the cluster's status.operationLock until the
// test ends.
func (e *Env) WatchLockHolders(t testing.TB, ns, cluster string) *HolderWatch {
	t.Helper()
	w := e.WatchNamed(t, schemas.ClusterGVK.GroupVersion().WithKind(schemas.ClusterGVK.Kind+"List"), ns, cluster)
	hw := &HolderWatch{}
	eachVersion(t, w, func(u *unstructured.Unstructured) {
		h := lockHolder(u)
		rv, _ := strconv.ParseInt(u.GetResourceVersion(), 10, 64)
		hw.mu.Lock()
		defer hw.mu.Unlock()
		hw.timeline = append(hw.timeline, LockChange{RV: rv, Operation: lockOperation(u), Holder: h})
		if h == hw.last {
			return
		}
		if h != "" && hw.last != "" {
			hw.violations = append(hw.violations, fmt.Sprintf("%s -> %s", hw.last, h))
		}
		if h != "" {
			hw.seen = append(hw.seen, h)
			if !hw.freedAt.IsZero() {
				hw.handovers = append(hw.handovers, time.Since(hw.freedAt))
			}
		} else {
			hw.freedAt = time.Now()
		}
		hw.last = h
	})
	return hw
}

// Snapshot returns the holders seen, the violations and the current holder.
func (hw *HolderWatch) Snapshot() (seen, violations []string, last string) {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return slices.Clone(hw.seen), slices.Clone(hw.violations), hw.last
}

// Handovers returns the times from each release to the next acquisition.
func (hw *HolderWatch) Handovers() []time.Duration {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return slices.Clone(hw.handovers)
}

// Timeline returns every version of the lock the watch has seen.
func (hw *HolderWatch) Timeline() []LockChange {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return slices.Clone(hw.timeline)
}

// At returns the lock as of resourceVersion rv: the last version at or
// before it (zero before the first). The watch must have seen rv already.
func At(timeline []LockChange, rv int64) LockChange {
	i := sort.Search(len(timeline), func(i int) bool { return timeline[i].RV > rv })
	if i == 0 {
		return LockChange{}
	}
	return timeline[i-1]
}
