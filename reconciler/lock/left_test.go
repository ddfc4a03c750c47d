package lock

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// A request that leaves the line without holding the lock wakes the others
// of its cluster: if it was first in line for a free lock, nothing else
// would (the lock does not change). A holder's deletion wakes nobody here:
// its release changes the lock. The handler reads the manager's real cache.
func TestLeftWakesTheLine(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	mgr := env.Manager(t, env.Config, ns)
	r := &Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("test")}
	// Requests of a cluster that does not exist: the reconciler leaves
	// their lock alone, and the test sees only what left enqueues.
	if err := r.SetupWithManager(mgr, controller.Options{SkipNameValidation: ptr.To(true)}); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for _, n := range []string{"b", "c"} {
		lr := &lockv1alpha1.LockRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n},
			Spec: lockv1alpha1.LockRequestSpec{Cluster: "gone", Operation: schemas.OperationRestore, Holder: "openbaorestore/" + n + "/u",
				Restore: lockv1alpha1.RestoreRef{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind, Name: n, UID: "u"}}}
		if err := env.Client.Create(ctx, lr); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"b", "c"}
	left := func(state string) []string {
		q := priorityqueue.New[reconcile.Request]("test")
		defer q.ShutDown()
		a := &lockv1alpha1.LockRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"},
			Spec: lockv1alpha1.LockRequestSpec{Cluster: "gone"}, Status: lockv1alpha1.LockRequestStatus{State: state}}
		r.left(ctx, event.DeleteEvent{Object: a}, q)
		var got []string
		for q.Len() > 0 {
			it, _ := q.Get()
			got = append(got, it.Name)
			q.Done(it)
		}
		slices.Sort(got)
		return got
	}
	testbed.Eventually(t, 30*time.Second, "the cache holds b and c", func() (bool, error) {
		return slices.Equal(left(schemas.LockWaiting), want), nil
	})
	for _, state := range []string{"", schemas.LockWaiting, schemas.LockReleased} {
		if got := left(state); !slices.Equal(got, want) {
			t.Errorf("a left in state %q: woke %v, want %v", state, got, want)
		}
	}
	if got := left(schemas.LockHeld); len(got) != 0 {
		t.Errorf("the holder left: woke %v, want nobody", got)
	}
}
