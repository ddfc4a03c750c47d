package phase_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// freshXR creates a legacy XR of a fresh-target restore into "restored",
// and the new cluster as Crossplane composes it: the restore's origin, the
// XR as its controller, not yet initialised.
func freshXR(t *testing.T, env *testbed.Env, ns, lifecycle string, cleanup *int64) (*unstructured.Unstructured, *unstructured.Unstructured) {
	t.Helper()
	xr := createXR(t, env, ns, func(spec map[string]any) {
		delete(spec, "tokenSecretRef")
		spec["cluster"] = "restored"
		spec["force"] = true
		spec["targetLifecycle"] = lifecycle
		if cleanup != nil {
			spec["cleanupAfterSeconds"] = *cleanup
		}
		spec["clusterTemplate"] = map[string]any{"version": "2.4.0"}
		spec["source"].(map[string]any)["expectedVersion"] = "2.4.0"
	})
	c := cluster(ns)
	c.SetName("restored")
	c.SetAnnotations(map[string]string{schemas.AnnotationRestoreOrigin: string(xr.GetUID())})
	c.SetOwnerReferences(owner(xr))
	if err := env.Client.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return xr, c
}

// TestRetainedTargetOutlivesItsRestore: a Retained restore's XR is held by
// the reconciler's finalizer, which it drops only once the new cluster no
// longer names the XR as its owner; the cluster stays. The restore waits
// for the cluster to come up meanwhile.
func TestRetainedTargetOutlivesItsRestore(t *testing.T) {
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	start(t, env, ns)
	ctx := context.Background()
	xr, c := freshXR(t, env, ns, schemas.LifecycleRetain, nil)

	st := waitPhase(t, env, xr, schemas.PhasePending)
	if st.Target == nil || st.Target.Name != "restored" || st.Target.Lifecycle != schemas.LifecycleRetain {
		t.Errorf("status.target %+v", st.Target)
	}
	testbed.Eventually(t, 30*time.Second, "the retain finalizer", func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(xr), xr)
		return err == nil && controllerutil.ContainsFinalizer(xr, schemas.FinalizerRetainTarget), err
	})

	if err := env.Client.Delete(ctx, xr); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 30*time.Second, "the XR gone", func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(xr), xr)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
		t.Fatalf("the Retained cluster: %v", err)
	}
	if refs := c.GetOwnerReferences(); len(refs) != 0 {
		t.Errorf("the Retained cluster still has owners %+v", refs)
	}
}

// TestDisposableTargetExpires: a Disposable restore takes no finalizer, and
// once it ended, its cleanup time passed, it says status.target.expired for
// the function to stop composing the cluster.
func TestDisposableTargetExpires(t *testing.T) {
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	start(t, env, ns)
	ctx := context.Background()
	zero := int64(0)
	xr, _ := freshXR(t, env, ns, schemas.LifecycleDisposable, &zero)
	waitPhase(t, env, xr, schemas.PhasePending)
	if controllerutil.ContainsFinalizer(xr, schemas.FinalizerRetainTarget) {
		t.Error("a Disposable restore took the retain finalizer")
	}

	// The function refuses it: the restore fails, and its target expires.
	orig := xr.DeepCopy()
	_ = unstructured.SetNestedSlice(xr.Object, []any{map[string]any{"type": schemas.CondSpecValid, "status": "False", "reason": "InvalidSpec",
		"message": "spec.cluster: refused", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
	if err := env.Client.Status().Patch(ctx, xr, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, env, xr, schemas.PhaseFailed)
	testbed.Eventually(t, 30*time.Second, "status.target.expired", func() (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(xr), xr); err != nil {
			return false, err
		}
		st := status(t, xr)
		if st.Target == nil || !st.Target.Expired {
			return false, fmt.Errorf("target %+v", st.Target)
		}
		return true, nil
	})
}
