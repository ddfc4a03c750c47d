package lock

import (
	"context"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

func phaseOf(o client.Object) string {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return ""
	}
	p, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	return p
}

// requestsForRestore maps an XR to the requests of its restore.
func (r *Reconciler) requestsForRestore(ctx context.Context, o client.Object) []ctrl.Request {
	var list lockv1alpha1.LockRequestList
	if err := r.Client.List(ctx, &list, client.MatchingFields{restoreIndex: string(o.GetUID())}); err != nil {
		log.FromContext(ctx).Error(err, "listing lock requests of restore", "restore", o.GetName())
		return nil
	}
	reqs := make([]ctrl.Request, 0, len(list.Items))
	for _, lr := range list.Items {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: lr.Namespace, Name: lr.Name}})
	}
	return reqs
}

// ended reports whether the request's restore is Completed or Failed, as
// the cache has its XR. A restore that is not an XR of ours, or that the
// cache does not hold, has not ended as far as the lock is concerned: its
// request's deletion releases the lock then.
func (r *Reconciler) ended(ctx context.Context, lr *lockv1alpha1.LockRequest) bool {
	gvk := schema.FromAPIVersionAndKind(lr.Spec.Restore.APIVersion, lr.Spec.Restore.Kind)
	if !slices.Contains(schemas.XRs, gvk) {
		return false
	}
	xr := &unstructured.Unstructured{}
	xr.SetGroupVersionKind(gvk)
	if err := r.Cache.Get(ctx, types.NamespacedName{Namespace: lr.Spec.Restore.Namespace, Name: lr.Spec.Restore.Name}, xr); err != nil {
		return false
	}
	return string(xr.GetUID()) == lr.Spec.Restore.UID && schemas.Terminal(phaseOf(xr))
}

// left wakes the other requests of a cluster when a request that did not
// hold its lock is gone. A free lock goes to the first in line and the
// others wait for the lock to change; if the first goes away before taking
// it (deleted before it was ever reconciled, or while queued), the lock
// never changes and nothing else would tell them who is first now. A
// holder's release changes the lock, which wakes them already.
func (r *Reconciler) left(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[ctrl.Request]) {
	if lr, ok := e.Object.(*lockv1alpha1.LockRequest); ok && lr.Status.State != schemas.LockHeld {
		r.wakeLine(ctx, lr, q)
	}
}

// retired wakes the other requests of a cluster when a request is marked
// Released (its restore ended): it is out of the line, and whoever was
// waiting behind it may be first now. Only once the cache has that state
// can they see it, so the update's event, not our write, wakes them.
func (r *Reconciler) retired(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[ctrl.Request]) {
	o, ok1 := e.ObjectOld.(*lockv1alpha1.LockRequest)
	n, ok2 := e.ObjectNew.(*lockv1alpha1.LockRequest)
	if ok1 && ok2 && o.Status.State != schemas.LockReleased && n.Status.State == schemas.LockReleased {
		r.wakeLine(ctx, n, q)
	}
}

func (r *Reconciler) wakeLine(ctx context.Context, lr *lockv1alpha1.LockRequest, q workqueue.TypedRateLimitingInterface[ctrl.Request]) {
	c := NewCluster()
	c.SetNamespace(lr.Namespace)
	c.SetName(lr.Spec.Cluster)
	for _, req := range r.requestsForCluster(ctx, c) {
		q.Add(req)
	}
}

func deleted(old, new client.Object) bool {
	return old.GetDeletionTimestamp().IsZero() && !new.GetDeletionTimestamp().IsZero()
}

// lockChanged passes cluster events that can change a decision: creation,
// deletion and a change of status.operationLock. Other status churn of
// the operator would only wake every waiting request for nothing.
func lockChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*unstructured.Unstructured)
			n, ok2 := e.ObjectNew.(*unstructured.Unstructured)
			return !ok1 || !ok2 || ReadLock(o) != ReadLock(n)
		},
	}
}

func (r *Reconciler) requestsForCluster(ctx context.Context, o client.Object) []ctrl.Request {
	var list lockv1alpha1.LockRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{clusterIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing lock requests of cluster", "cluster", o.GetName())
		return nil
	}
	// Oldest first: the work queue is FIFO, so the first in line, which
	// takes a freed lock, is reconciled before those that only wait.
	slices.SortFunc(list.Items, func(a, b lockv1alpha1.LockRequest) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	reqs := make([]ctrl.Request, 0, len(list.Items))
	for _, lr := range list.Items {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: lr.Namespace, Name: lr.Name}})
	}
	return reqs
}
