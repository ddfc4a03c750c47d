package phase

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

func (r *Reconciler) newXR() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(r.GVK)
	return u
}

func (r *Reconciler) namespaced() bool { return r.GVK == schemas.NamespacedXR }

// jobEnded reports a Job that has just become Complete or Failed: the
// restore's next step (its Failed phase and released lock, or the restart)
// goes ahead of the queue.
func jobEnded(old, new *batchv1.Job) bool { return !ended(old) && ended(new) }

func ended(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// xrsForPod maps a cluster's pod to the restores of that cluster under
// way: a replacement that becomes Ready lets the restart go on at once.
func (r *Reconciler) xrsForPod(ctx context.Context, p *corev1.Pod) []ctrl.Request {
	c := p.Labels[schemas.LabelOperatorCluster]
	if c == "" {
		return nil
	}
	o := clusterObject()
	o.SetNamespace(p.Namespace)
	o.SetName(c)
	return r.xrsForCluster(ctx, o)
}

func clusterObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schemas.ClusterGVK)
	return u
}

// restoreNamespace is where the restore runs: the claim's namespace for a
// legacy XR (the function writes it to status.plan.namespace too), the
// XR's own for a namespaced one.
func (r *Reconciler) restoreNamespace(xr *unstructured.Unstructured) string {
	if r.namespaced() {
		return xr.GetNamespace()
	}
	if ns, _, _ := unstructured.NestedString(xr.Object, "spec", "claimRef", "namespace"); ns != "" {
		return ns
	}
	ns, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "namespace")
	return ns
}

// requestName is the restore's name as its users know it, which the
// function writes into schemas.LabelRestore on what it composes: the
// claim's for a legacy XR, the XR's own for a namespaced one. The phase
// finds the restore's objects by it, and their UID, not by Crossplane's
// composite label: a claim composed by another XR (a drill's run) passes
// that XR's label down to its own XR's objects.
func (r *Reconciler) requestName(xr *unstructured.Unstructured) string {
	if !r.namespaced() {
		if n, _, _ := unstructured.NestedString(xr.Object, "spec", "claimRef", "name"); n != "" {
			return n
		}
	}
	return xr.GetName()
}

func (r *Reconciler) request(ns, name string) ctrl.Request {
	if !r.namespaced() {
		ns = ""
	}
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

// xrForJob maps a Job to its XR: the controller owner of our kind, else
// (no owner at all) Crossplane's composite label.
func (r *Reconciler) xrForJob(_ context.Context, j *batchv1.Job) []ctrl.Request {
	if ref := metav1.GetControllerOf(j); ref != nil {
		gv, _ := schema.ParseGroupVersion(ref.APIVersion)
		if ref.Kind == r.GVK.Kind && gv.Group == r.GVK.Group {
			return []ctrl.Request{r.request(j.Namespace, ref.Name)}
		}
		return nil
	}
	if xr := j.Labels[schemas.LabelComposite]; xr != "" {
		return []ctrl.Request{r.request(j.Namespace, xr)}
	}
	return nil
}

func (r *Reconciler) xrForLock(_ context.Context, o client.Object) []ctrl.Request {
	lr, ok := o.(*lockv1alpha1.LockRequest)
	if !ok {
		return nil
	}
	gv, _ := schema.ParseGroupVersion(lr.Spec.Restore.APIVersion)
	if lr.Spec.Restore.Kind != r.GVK.Kind || gv.Group != r.GVK.Group {
		return nil
	}
	return []ctrl.Request{r.request(lr.Namespace, lr.Spec.Restore.Name)}
}

func (r *Reconciler) xrsForCluster(ctx context.Context, o client.Object) []ctrl.Request {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(r.GVK.GroupVersion().WithKind(r.GVK.Kind + "List"))
	if err := r.Cache.List(ctx, list, client.MatchingFields{clusterIndex: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing restores of cluster", "cluster", o.GetName())
		return nil
	}
	var reqs []ctrl.Request
	for _, xr := range list.Items {
		if p, _, _ := unstructured.NestedString(xr.Object, "status", "phase"); !schemas.Terminal(p) {
			reqs = append(reqs, r.request(xr.GetNamespace(), xr.GetName()))
		}
	}
	return reqs
}
