package lock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// blindPatch writes the cluster's status.operationLock as openbao-operator's
// January 2026 backup manager does: a JSON merge patch with no
// resourceVersion, so that nothing the lock holds stops it.
func blindPatch(t *testing.T, env *testbed.Env, ns, cluster, lockJSON string) {
	t.Helper()
	c := lock.NewCluster()
	c.SetNamespace(ns)
	c.SetName(cluster)
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"operationLock":`+lockJSON+`}}`))
	if err := env.Client.Status().Patch(context.Background(), c, patch); err != nil {
		t.Fatal(err)
	}
}

// A writer that does not compare-and-swap replaces the lock of a request
// that holds it, then clears it with a blind release. The request says it
// was taken (condition and Warning event naming the new holder), waits
// rather than pretending to hold it, and takes it back the moment it is
// free.
func TestLockTakenBlindlyIsTakenBack(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	createCluster(t, env, ns, "c1", nil)
	startReconciler(t, env, ns)

	lr := createRequest(t, env, ns, "r1", "c1", false)
	waitRequest(t, env, lr, "Held", func(lr *lockv1alpha1.LockRequest) bool { return lr.Status.State == schemas.LockHeld })

	now := time.Now().UTC().Format(time.RFC3339)
	blindPatch(t, env, ns, "c1", `{"operation":"Backup","holder":"openbaocluster/backup","message":"backup","acquiredAt":"`+now+`","renewedAt":"`+now+`"}`)
	waitRequest(t, env, lr, "LockTaken", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockWaiting && meta.IsStatusConditionTrue(lr.Status.Conditions, schemas.CondLockTaken)
	})
	c := meta.FindStatusCondition(lr.Status.Conditions, schemas.CondLockTaken)
	for _, want := range []string{"operation=Backup holder=openbaocluster/backup", "took the operation lock of cluster c1", "takes it back when it is free"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("LockTaken message %q does not contain %q", c.Message, want)
		}
	}
	if lr.Status.HeldBy != "openbaocluster/backup" {
		t.Errorf("heldBy %q, want the backup", lr.Status.HeldBy)
	}
	ev := findEvent(t, env, ns, "r1", corev1.EventTypeWarning, lock.ReasonTaken)
	if !strings.Contains(ev.Note, "holder=openbaocluster/backup") {
		t.Errorf("event note %q does not name the new holder", ev.Note)
	}
	if l, _ := clusterLock(t, env, ns, "c1"); l.Holder != "openbaocluster/backup" {
		t.Fatalf("the reconciler fought the backup for its lock: %+v", l)
	}

	// The blind release: the request takes the lock back at once.
	blindPatch(t, env, ns, "c1", `null`)
	waitRequest(t, env, lr, "Held again", func(lr *lockv1alpha1.LockRequest) bool {
		return lr.Status.State == schemas.LockHeld &&
			meta.IsStatusConditionPresentAndEqual(lr.Status.Conditions, schemas.CondLockTaken, metav1.ConditionFalse)
	})
	if l, _ := clusterLock(t, env, ns, "c1"); l.Holder != lr.Spec.Holder || l.Operation != schemas.OperationRestore {
		t.Fatalf("cluster lock %+v, want ours again", l)
	}
	findEvent(t, env, ns, "r1", corev1.EventTypeNormal, lock.ReasonRetaken)

	// A blind release while the request holds the lock (the stale writer
	// clearing a lock it no longer has): taken back too.
	blindPatch(t, env, ns, "c1", `null`)
	testbed.Eventually(t, 30*time.Second, "the lock taken back after a blind release", func() (bool, error) {
		l, _ := clusterLock(t, env, ns, "c1")
		return l.Holder == lr.Spec.Holder, nil
	})

	deleteRequest(t, env, lr)
	if l, _ := clusterLock(t, env, ns, "c1"); !l.Free() {
		t.Fatalf("lock left after deletion: %+v", l)
	}
}
