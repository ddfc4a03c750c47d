package lock_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// The lock needs only the API: no Jobs run here.
func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{
		CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs},
		NoKCM:   true, NoScheduler: true, NoKwok: true,
	})
}

var leastPrivilege struct {
	once sync.Once
	cfg  *rest.Config
	err  error
}

// reconcilerConfig is a REST config for a user granted exactly the
// reconciler's generated ClusterRole (rbac/role.yaml) and nothing else, so
// every test also proves that role suffices.
func reconcilerConfig(t *testing.T, env *testbed.Env) *rest.Config {
	t.Helper()
	leastPrivilege.once.Do(func() {
		leastPrivilege.cfg, leastPrivilege.err = env.RoleUser(context.Background(), "openbao-restore-lock-test", "rbac/role.yaml")
	})
	if leastPrivilege.err != nil {
		t.Fatalf("least-privilege user: %v", leastPrivilege.err)
	}
	return leastPrivilege.cfg
}

// startReconciler runs the lock reconciler for one namespace until the test
// ends, so that parallel tests never see each other's requests.
func startReconciler(t *testing.T, env *testbed.Env, ns string) (stop func()) {
	t.Helper()
	mgr := env.Manager(t, reconcilerConfig(t, env), ns)
	r := &lock.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("openbao-restore-lock")}
	// One controller per test in one process: names need not be unique.
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptr.To(true)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func createCluster(t *testing.T, env *testbed.Env, ns, name string, held *lock.ClusterLock) {
	t.Helper()
	ctx := context.Background()
	c := lock.NewCluster()
	c.SetNamespace(ns)
	c.SetName(name)
	_ = unstructured.SetNestedField(c.Object, int64(3), "spec", "replicas")
	if err := env.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A plain merge patch, as a test stands in for the operator: a running
	// reconciler may already have taken the lock of the new cluster.
	orig := c.DeepCopy()
	_ = unstructured.SetNestedField(c.Object, true, "status", "initialized")
	if held != nil {
		now := time.Now().UTC().Format(time.RFC3339)
		_ = unstructured.SetNestedStringMap(c.Object, map[string]string{"operation": held.Operation, "holder": held.Holder,
			"message": "test", "acquiredAt": now, "renewedAt": now}, "status", "operationLock")
	}
	if err := env.Client.Status().Patch(ctx, c, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

func clusterLock(t *testing.T, env *testbed.Env, ns, name string) (lock.ClusterLock, string) {
	t.Helper()
	c := lock.NewCluster()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, c); err != nil {
		t.Fatal(err)
	}
	return lock.ReadLock(c), c.GetResourceVersion()
}

func newRequest(ns, name, cluster string, override bool) *lockv1alpha1.LockRequest {
	uid := "uid-" + name
	return &lockv1alpha1.LockRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lockv1alpha1.LockRequestSpec{
			Cluster: cluster, Operation: schemas.OperationRestore, Holder: schemas.Holder(name, uid), Override: override,
			Restore: lockv1alpha1.RestoreRef{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind,
				Name: name, Namespace: ns, UID: uid},
		},
	}
}

func waitRequest(t *testing.T, env *testbed.Env, lr *lockv1alpha1.LockRequest, what string, ok func(*lockv1alpha1.LockRequest) bool) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, lr.Name+" "+what, func() (bool, error) {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(lr), lr)
		return err == nil && ok(lr), err
	})
}

// createRequest creates the LockRequest newRequest builds.
func createRequest(t *testing.T, env *testbed.Env, ns, name, cluster string, override bool) *lockv1alpha1.LockRequest {
	t.Helper()
	lr := newRequest(ns, name, cluster, override)
	if err := env.Client.Create(context.Background(), lr); err != nil {
		t.Fatal(err)
	}
	return lr
}

// deleteRequest deletes lr and waits until it is gone.
func deleteRequest(t *testing.T, env *testbed.Env, lr *lockv1alpha1.LockRequest) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), lr); err != nil {
		t.Fatal(err)
	}
	waitGone(t, env, lr)
}

func waitGone(t *testing.T, env *testbed.Env, lr *lockv1alpha1.LockRequest) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, lr.Name+" deleted", func() (bool, error) {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(lr), &lockv1alpha1.LockRequest{})
		return apierrors.IsNotFound(err), err
	})
}

func findEvent(t *testing.T, env *testbed.Env, ns, regarding, typ, reason string) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	testbed.Eventually(t, 10*time.Second, "event "+reason+" on "+regarding, func() (bool, error) {
		var list eventsv1.EventList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for i, e := range list.Items {
			if e.Regarding.Name == regarding && e.Type == typ && e.Reason == reason {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// watchHeldFlips records requests whose status leaves Held while they are
// not being deleted: the function composes the restore Job on Held, so a
// holder must never be told it waits.
func watchHeldFlips(t *testing.T, env *testbed.Env, ns string) func() []string {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &lockv1alpha1.LockRequestList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var flips []string
	held := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			lr, ok := ev.Object.(*lockv1alpha1.LockRequest)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			if lr.Status.State == schemas.LockHeld {
				held[lr.Name] = true
			} else if held[lr.Name] && lr.DeletionTimestamp.IsZero() {
				flips = append(flips, lr.Name+" -> "+lr.Status.State)
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), flips...) }
}

// Twenty restores of one cluster, requested at once, get the lock one at a
// time: a watch never sees two holders without a free lock between, each
// request holds it exactly once, and nothing is left at the end.
func TestTwentyRequestsTakeTurns(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	createCluster(t, env, ns, "c1", nil)
	hw := env.WatchLockHolders(t, ns, "c1")
	flips := watchHeldFlips(t, env, ns)
	startReconciler(t, env, ns)

	const n = 20
	reqs := map[string]*lockv1alpha1.LockRequest{} // by holder
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		lr := newRequest(ns, fmt.Sprintf("r%02d", i), "c1", false)
		reqs[lr.Spec.Holder] = lr
		wg.Go(func() {
			if err := env.Client.Create(ctx, lr); err != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Errorf("create %s: %v", lr.Name, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	released := map[string]bool{}
	for turn := range n {
		var holder string
		testbed.Eventually(t, 30*time.Second, fmt.Sprintf("turn %d: a new holder", turn), func() (bool, error) {
			l, _ := clusterLock(t, env, ns, "c1")
			holder = l.Holder
			return l.Operation == schemas.OperationRestore && reqs[holder] != nil && !released[holder], nil
		})
		lr := reqs[holder]
		waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool {
			return lr.Status.State == schemas.LockHeld && lr.Status.HeldBy == holder
		})
		// After the first (taken while the others were still being
		// created), the lock goes to the oldest request still waiting.
		if turn > 0 {
			var list lockv1alpha1.LockRequestList
			if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			oldest := list.Items[0]
			for _, o := range list.Items[1:] {
				if o.CreationTimestamp.Before(&oldest.CreationTimestamp) ||
					o.CreationTimestamp.Equal(&oldest.CreationTimestamp) && o.Name < oldest.Name {
					oldest = o
				}
			}
			if oldest.Spec.Holder != holder {
				t.Errorf("turn %d: the lock went to %s, not to the oldest waiting request %s", turn, lr.Name, oldest.Name)
			}
		}
		// Every other live request waits for exactly this holder.
		testbed.Eventually(t, 30*time.Second, "the others wait for "+holder, func() (bool, error) {
			var list lockv1alpha1.LockRequestList
			if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
				return false, err
			}
			held := 0
			for _, o := range list.Items {
				if !o.DeletionTimestamp.IsZero() {
					continue
				}
				switch {
				case o.Spec.Holder == holder:
					held++
				case o.Status.State == schemas.LockHeld:
					return false, fmt.Errorf("%s also says Held", o.Name)
				case o.Status.State != schemas.LockWaiting || o.Status.HeldBy != holder:
					return false, nil
				}
			}
			return held == 1 && len(list.Items) == n-turn, nil
		})
		released[holder] = true
		deleteRequest(t, env, lr)
	}

	testbed.Eventually(t, 10*time.Second, "the lock to be free", func() (bool, error) {
		l, _ := clusterLock(t, env, ns, "c1")
		_, _, last := hw.Snapshot()
		return l.Free() && last == "", nil
	})
	if f := flips(); len(f) > 0 {
		t.Errorf("requests went from Held back to another state while alive: %v", f)
	}
	seen, violations, _ := hw.Snapshot()
	if len(violations) > 0 {
		t.Errorf("the lock passed between holders without being free: %v", violations)
	}
	if len(seen) != n {
		t.Errorf("the watch saw %d acquisitions, want %d: %v", len(seen), n, seen)
	}
	ho := hw.Handovers()
	slices.Sort(ho)
	if len(ho) > 0 {
		t.Logf("lock hand-over (release seen -> next holder seen) over %d turns: p50 %s, max %s",
			len(ho), ho[len(ho)/2].Round(time.Millisecond), ho[len(ho)-1].Round(time.Millisecond))
	}
	// The wait histogram saw every acquisition (other tests add theirs).
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var waits uint64
	for _, mf := range mfs {
		if mf.GetName() == "openbao_restore_lock_wait_seconds" {
			waits = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if waits < n {
		t.Errorf("lock wait histogram has %d samples, want at least %d", waits, n)
	}
	distinct := map[string]bool{}
	for _, h := range seen {
		if distinct[h] {
			t.Errorf("%s held the lock twice", h)
		}
		distinct[h] = true
	}
}

// A Backup holds the lock: the restore waits, says who holds it, and warns;
// when the backup releases, the restore takes the lock at once.
func TestBackupBlocksUntilReleased(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	backup := lock.ClusterLock{Operation: "Backup", Holder: "openbaobackup/nightly-1"}
	createCluster(t, env, ns, "c1", &backup)
	startReconciler(t, env, ns)

	lr := createRequest(t, env, ns, "r1", "c1", false)
	waitRequest(t, env, lr, "Waiting", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockWaiting
	})
	want := "Waiting for cluster operation lock held by operation=Backup holder=openbaobackup/nightly-1"
	if !strings.Contains(lr.Status.Message, want) || lr.Status.HeldBy != backup.Holder {
		t.Errorf("status %+v, want message containing %q", lr.Status, want)
	}
	ev := findEvent(t, env, ns, "r1", corev1.EventTypeWarning, lock.ReasonBlocked)
	if !strings.Contains(ev.Note, "holder=openbaobackup/nightly-1") {
		t.Errorf("event note %q does not name the holder", ev.Note)
	}
	if l, _ := clusterLock(t, env, ns, "c1"); l != (lock.ClusterLock{Operation: "Backup", Holder: backup.Holder, Message: "test"}) {
		t.Fatalf("the backup's lock changed: %+v", l)
	}

	// The backup finishes and releases its lock (as openbao-operator does).
	c := lock.NewCluster()
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, c); err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(c.Object, "status", "operationLock")
	released := time.Now()
	if err := env.Client.Status().Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	t.Logf("hand-over after the backup's release: %s", time.Since(released))
	if l, _ := clusterLock(t, env, ns, "c1"); l.Holder != lr.Spec.Holder || l.Operation != schemas.OperationRestore {
		t.Fatalf("cluster lock %+v, want ours", l)
	}

	// Idempotent: a reconcile of a held request writes nothing.
	_, rv := clusterLock(t, env, ns, "c1")
	orig := lr.DeepCopy()
	lr.Annotations = map[string]string{"touch": "1"}
	if err := env.Client.Patch(ctx, lr, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, rv2 := clusterLock(t, env, ns, "c1"); rv2 != rv {
		t.Errorf("a no-op reconcile wrote the cluster: resourceVersion %s -> %s", rv, rv2)
	}

	deleteRequest(t, env, lr)
	if l, _ := clusterLock(t, env, ns, "c1"); !l.Free() {
		t.Fatalf("lock left after deletion: %+v", l)
	}
}

// The override clears a Backup's lock, takes it, warns and records it.
func TestOverrideTakesOverBackup(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	createCluster(t, env, ns, "c1", &lock.ClusterLock{Operation: "Backup", Holder: "openbaobackup/nightly-2"})
	startReconciler(t, env, ns)

	lr := createRequest(t, env, ns, "r1", "c1", true)
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	if l, _ := clusterLock(t, env, ns, "c1"); l.Holder != lr.Spec.Holder || l.Operation != schemas.OperationRestore {
		t.Fatalf("cluster lock %+v, want ours", l)
	}
	cond := meta.FindStatusCondition(lr.Status.Conditions, schemas.CondOverride)
	if cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "openbaobackup/nightly-2") {
		t.Errorf("override condition: %+v", cond)
	}
	ev := findEvent(t, env, ns, "r1", corev1.EventTypeWarning, lock.ReasonOverridden)
	if !strings.Contains(ev.Note, "operation=Backup holder=openbaobackup/nightly-2") {
		t.Errorf("event note %q does not name the overridden holder", ev.Note)
	}
	deleteRequest(t, env, lr)
	if l, _ := clusterLock(t, env, ns, "c1"); !l.Free() {
		t.Fatalf("lock left after deletion: %+v", l)
	}
}

// The override never clears another restore's lock, and deleting a request
// that waits never releases the lock it waited for.
func TestOverrideNeverClearsAnotherRestore(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	other := lock.ClusterLock{Operation: schemas.OperationRestore, Holder: schemas.Holder("other", "uid-other"), Message: "test"}
	createCluster(t, env, ns, "c1", &other)
	_, rv := clusterLock(t, env, ns, "c1")
	startReconciler(t, env, ns)

	lr := createRequest(t, env, ns, "r1", "c1", true)
	waitRequest(t, env, lr, "Waiting", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockWaiting && lr.Status.HeldBy == other.Holder
	})
	deleteRequest(t, env, lr)
	if l, rv2 := clusterLock(t, env, ns, "c1"); l != other || rv2 != rv {
		t.Fatalf("the other restore's lock was touched: %+v (resourceVersion %s -> %s)", l, rv, rv2)
	}
}

// A request for a cluster that does not exist yet waits, and takes the lock
// as soon as the cluster appears (the cluster watch, not a poll).
func TestClusterCreatedLater(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	startReconciler(t, env, ns)
	lr := createRequest(t, env, ns, "r1", "later", false)
	waitRequest(t, env, lr, "Waiting", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockWaiting && strings.Contains(lr.Status.Message, "not found")
	})
	createCluster(t, env, ns, "later", nil)
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
}

// A restarted reconciler finds the lock it holds and keeps it without
// writing the cluster again, then releases it on deletion.
func TestRestartedReconcilerKeepsItsLock(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	createCluster(t, env, ns, "c1", nil)
	stop := startReconciler(t, env, ns)
	lr := createRequest(t, env, ns, "r1", "c1", false)
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	stop()
	_, rv := clusterLock(t, env, ns, "c1")
	startReconciler(t, env, ns)
	// A second request queues behind the first under the new reconciler,
	// which proves the new one has reconciled the cluster.
	lr2 := createRequest(t, env, ns, "r2", "c1", false)
	waitRequest(t, env, lr2, "Waiting", func(o *lockv1alpha1.LockRequest) bool {
		return o.Status.State == schemas.LockWaiting && o.Status.HeldBy == lr.Spec.Holder
	})
	if l, rv2 := clusterLock(t, env, ns, "c1"); l.Holder != lr.Spec.Holder || rv2 != rv {
		t.Fatalf("after restart: lock %+v, resourceVersion %s -> %s", l, rv, rv2)
	}
	deleteRequest(t, env, lr)
	waitRequest(t, env, lr2, "Held", func(o *lockv1alpha1.LockRequest) bool { return o.Status.State == schemas.LockHeld })
}

// The cluster disappears while a request holds its lock: deleting the
// request then completes (nothing to release) and nothing panics.
func TestClusterDeletedWhileHeld(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	createCluster(t, env, ns, "c1", nil)
	startReconciler(t, env, ns)
	lr := createRequest(t, env, ns, "r1", "c1", false)
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	c := lock.NewCluster()
	c.SetNamespace(ns)
	c.SetName("c1")
	if err := env.Client.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitRequest(t, env, lr, "Waiting for the missing cluster", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockWaiting && strings.Contains(lr.Status.Message, "not found")
	})
	deleteRequest(t, env, lr)
}

// namespacedXR creates a namespaced XR with examples/xr.yaml's spec and sets
// its status.phase, as the phase reconciler would.
func namespacedXR(t *testing.T, env *testbed.Env, ns, name, phase string) *unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	spec := testbed.ExampleSpec(t, "xr.yaml")
	delete(spec, "claimRef")
	xr := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	xr.SetGroupVersionKind(schemas.NamespacedXR)
	xr.SetNamespace(ns)
	xr.SetName(name)
	if err := env.Client.Create(ctx, xr); err != nil {
		t.Fatal(err)
	}
	setPhase(t, env, xr, phase)
	return xr
}

func setPhase(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured, phase string) {
	t.Helper()
	orig := xr.DeepCopy()
	_ = unstructured.SetNestedField(xr.Object, phase, "status", "phase")
	if err := env.Client.Status().Patch(context.Background(), xr, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

// requestFor is the LockRequest the function composes for xr.
func requestFor(ns, cluster string, xr *unstructured.Unstructured) *lockv1alpha1.LockRequest {
	lr := newRequest(ns, xr.GetName(), cluster, false)
	lr.Spec.Holder = schemas.Holder(xr.GetName(), string(xr.GetUID()))
	lr.Spec.Restore = lockv1alpha1.RestoreRef{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(),
		Namespace: ns, UID: string(xr.GetUID())}
	return lr
}

// A restore's end releases its lock at once, while its LockRequest still
// exists: the next restore queued on the cluster takes it without waiting
// for Crossplane to delete the request, and an executor can no longer
// submit under the ended one (Released). A restore that ended before it
// held the lock never takes it.
func TestRestoreEndReleases(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	xrCRDs.Do(func() {
		env.InstallCRDObjects(t, testbed.XRCRD(t, "examples/xrd-namespaced.yaml", apiextensionsv1.NamespaceScoped))
	})
	createCluster(t, env, ns, "c1", nil)
	hw := env.WatchLockHolders(t, ns, "c1")
	startReconciler(t, env, ns)

	xa := namespacedXR(t, env, ns, "a", schemas.PhaseRunning)
	a := requestFor(ns, "c1", xa)
	if err := env.Client.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitRequest(t, env, a, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	b := createRequest(t, env, ns, "b", "c1", false)
	waitRequest(t, env, b, "Waiting", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockWaiting })

	setPhase(t, env, xa, schemas.PhaseFailed)
	waitRequest(t, env, b, "Held after a's restore ended", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatalf("a's request went with the release: %v", err)
	}
	if a.Status.State != schemas.LockReleased || !strings.Contains(a.Status.Message, "the restore ended") ||
		!slices.Contains(a.Finalizers, lock.Finalizer) {
		t.Errorf("a after its restore ended: %+v, finalizers %v", a.Status, a.Finalizers)
	}
	findEvent(t, env, ns, "a", corev1.EventTypeNormal, lock.ReasonReleased)

	// Ended before it held the lock: out of the line at once.
	xc := namespacedXR(t, env, ns, "c", schemas.PhaseCompleted)
	c := requestFor(ns, "c1", xc)
	if err := env.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitRequest(t, env, c, "Released", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockReleased })

	// Crossplane deletes the ended requests later: b keeps the lock.
	deleteRequest(t, env, a)
	deleteRequest(t, env, c)
	if l, _ := clusterLock(t, env, ns, "c1"); l.Holder != b.Spec.Holder {
		t.Errorf("lock %+v after the ended requests went, want b's", l)
	}
	deleteRequest(t, env, b)
	if seen, violations, _ := hw.Snapshot(); !slices.Equal(seen, []string{a.Spec.Holder, b.Spec.Holder}) || len(violations) > 0 {
		t.Errorf("holders %v (violations %v), want a's then b's", seen, violations)
	}
}

// xrCRDs installs the XR CRD once for the tests that need it.
var xrCRDs sync.Once
