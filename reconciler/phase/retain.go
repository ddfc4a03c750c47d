package phase

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	ctrl "sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A Retained fresh target outlives its restore. Crossplane composes it with
// the XR as its controller, so Kubernetes' garbage collector would delete
// it with the XR; and Crossplane deletes a composed resource the function
// stops composing. So the restore keeps it to the end, and a finalizer of
// ours holds a Retained restore's XR while it is deleted, until the
// target's owner reference to it is gone: the garbage collector then
// leaves the target alone (Kubernetes' orphaning, done for one object).
// Crossplane deletes XRs in the background by default; with a Foreground
// compositeDeletePolicy the collector deletes the target first.

// retains reports a Retained fresh-target restore.
func retains(xr *unstructured.Unstructured) bool {
	_, tmpl, _ := unstructured.NestedMap(xr.Object, "spec", "clusterTemplate")
	lc, _, _ := unstructured.NestedString(xr.Object, "spec", "targetLifecycle")
	return tmpl && lc == schemas.LifecycleRetain
}

// holdRetained adds the finalizer to a Retained restore's XR, with the
// resourceVersion read: a concurrent write (Crossplane's own finalizer)
// is never overwritten.
func (r *Reconciler) holdRetained(ctx context.Context, xr *unstructured.Unstructured) error {
	if !retains(xr) || controllerutil.ContainsFinalizer(xr, schemas.FinalizerRetainTarget) {
		return nil
	}
	orig := xr.DeepCopy()
	controllerutil.AddFinalizer(xr, schemas.FinalizerRetainTarget)
	return r.Client.Patch(ctx, xr, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager))
}

// releaseRetained hands a deleted restore's Retained target over to the
// user: it removes the target's owner reference to the XR (only on a
// cluster this restore created), then its finalizer.
func (r *Reconciler) releaseRetained(ctx context.Context, xr *unstructured.Unstructured) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(xr, schemas.FinalizerRetainTarget) {
		return ctrl.Result{}, nil
	}
	name, _, _ := unstructured.NestedString(xr.Object, "spec", "cluster")
	c := clusterObject()
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.restoreNamespace(xr), Name: name}, c)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	if err == nil && c.GetAnnotations()[schemas.AnnotationRestoreOrigin] == string(xr.GetUID()) {
		refs := c.GetOwnerReferences()
		kept := make([]metav1.OwnerReference, 0, len(refs))
		for _, o := range refs {
			if o.UID != xr.GetUID() {
				kept = append(kept, o)
			}
		}
		if len(kept) != len(refs) {
			orig := c.DeepCopy()
			c.SetOwnerReferences(kept)
			if err := r.Client.Patch(ctx, c, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager)); err != nil {
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(xr, nil, corev1.EventTypeNormal, "TargetRetained", "Delete", "%s",
				fmt.Sprintf("the OpenBaoCluster %s stays (targetLifecycle Retain): it is no longer owned by this restore, and is yours", name))
		}
	}
	orig := xr.DeepCopy()
	controllerutil.RemoveFinalizer(xr, schemas.FinalizerRetainTarget)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Patch(ctx, xr, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager)))
}
