package lock

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/openbao-restore/openbao-restore/reconciler/prio"
	"github.com/openbao-restore/openbao-restore/reconciler/stale"
	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

const (
	// FieldManager owns the lock in the cluster's status and the
	// LockRequest's status fields this reconciler writes.
	FieldManager = "openbao-restore-lock"
	// OverrideManager owns the override condition of a request's status,
	// apart from FieldManager's fields, so that no later write of the
	// state (which never carries conditions) can drop it.
	OverrideManager = "openbao-restore-lock-override"
	// TakenManager owns the LockTaken condition, for the same reason.
	TakenManager = "openbao-restore-lock-taken"
	// Finalizer keeps a LockRequest until its lock is released.
	Finalizer = "restore.openbao-restore.io/operation-lock"

	// Event reasons.
	ReasonBlocked    = "OperationLockBlocked"
	ReasonOverridden = "OperationLockOverride"
	ReasonAcquired   = "OperationLockAcquired"
	ReasonWaiting    = "OperationLockWaiting"
	ReasonReleased   = "OperationLockReleased"
	ReasonTaken      = "OperationLockTaken"
	ReasonRetaken    = "OperationLockRetaken"

	clusterIndex = "spec.cluster"
	restoreIndex = "spec.restore.uid"
	// casAttempts bounds the read-decide-swap loop of one reconcile; after
	// that the request is requeued with backoff.
	casAttempts = 8
)

// Reconciler answers LockRequests. It has one concern: the lock. The
// restore's phase is another reconciler's.
type Reconciler struct {
	// Client reads typed objects (LockRequests) from the manager's cache
	// and writes to the API.
	Client client.Client
	// Cache reads the OpenBaoClusters, which are unstructured: the
	// manager's client would read them from the API on every reconcile.
	Cache client.Reader
	// APIReader reads from the API directly: after a conflict the cache
	// may still hold the version that lost, so the retry must not use it.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Now is the clock (tests may fix it).
	Now func() time.Time

	// Our own last writes of requests and of clusters: a cached copy
	// from before one is stale, and its event is on its way.
	requests, clusters stale.Writes
}

// Least privilege, proven by the tests, which run the reconciler under
// exactly the ClusterRole generated from these markers (rbac/role.yaml):
// every write is a patch (merge patches with a resourceVersion, or
// server-side apply), so no update verb is needed.
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=lockrequests,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=lockrequests/status,verbs=patch
// +kubebuilder:rbac:groups=openbao.org,resources=openbaoclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=openbao.org,resources=openbaoclusters/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestores,verbs=get;list;watch

// SetupWithManager registers the reconciler. It watches OpenBaoClusters
// and maps a change of a cluster's lock to the requests naming that
// cluster, so a released lock is handed over at once, without polling.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Cache == nil {
		r.Cache = mgr.GetCache()
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &lockv1alpha1.LockRequest{}, clusterIndex,
		func(o client.Object) []string { return []string{o.(*lockv1alpha1.LockRequest).Spec.Cluster} }); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &lockv1alpha1.LockRequest{}, restoreIndex,
		func(o client.Object) []string { return []string{o.(*lockv1alpha1.LockRequest).Spec.Restore.UID} }); err != nil {
		return err
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("lockrequest").
		// A request being deleted releases its lock: that goes ahead of
		// the requests still waiting for one. So does the event a
		// reconcile stopped for (reconciler/stale).
		Watches(&lockv1alpha1.LockRequest{}, prio.When(&handler.EnqueueRequestForObject{}, func(old, new client.Object) bool {
			return deleted(old, new) || r.requests.Skipped(client.ObjectKeyFromObject(new), new.GetResourceVersion())
		})).
		Watches(NewCluster(), prio.When(handler.EnqueueRequestsFromMapFunc(r.requestsForCluster), func(_, new client.Object) bool {
			return r.clusters.Skipped(client.ObjectKeyFromObject(new), new.GetResourceVersion())
		}), builder.WithPredicates(lockChanged())).
		Watches(&lockv1alpha1.LockRequest{}, handler.Funcs{UpdateFunc: r.retired, DeleteFunc: r.left}).
		WithOptions(opts).
		Build(r)
	if err != nil {
		return err
	}
	// A restore's end releases its lock at once, not when Crossplane,
	// which may be slow or down, gets round to deleting the request.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return xrkinds.Each(ctx, mgr.GetRESTMapper(), schemas.XRs, func(gvk schema.GroupVersionKind) error {
			xr := &unstructured.Unstructured{}
			xr.SetGroupVersionKind(gvk)
			return c.Watch(source.Kind[client.Object](mgr.GetCache(), xr,
				prio.When(handler.EnqueueRequestsFromMapFunc(r.requestsForRestore), func(_, _ client.Object) bool { return true }),
				predicate.Funcs{
					CreateFunc:  func(event.CreateEvent) bool { return false },
					DeleteFunc:  func(event.DeleteEvent) bool { return false },
					GenericFunc: func(event.GenericEvent) bool { return false },
					UpdateFunc: func(e event.UpdateEvent) bool {
						return !schemas.Terminal(phaseOf(e.ObjectOld)) && schemas.Terminal(phaseOf(e.ObjectNew))
					},
				}))
		})
	}))
}

// Reconcile moves one LockRequest towards its goal: hold the lock while it
// exists, and release it (only if it is ours) when it is deleted.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var lr lockv1alpha1.LockRequest
	if err := r.Client.Get(ctx, req.NamespacedName, &lr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.requests.Stale(req.NamespacedName, lr.ResourceVersion) {
		return ctrl.Result{}, nil // our write's event will bring us back
	}
	deleting := !lr.DeletionTimestamp.IsZero()
	if deleting && !controllerutil.ContainsFinalizer(&lr, Finalizer) {
		return ctrl.Result{}, nil
	}
	// The finalizer goes on before the lock can be taken, so that a taken
	// lock always has a finalizer to release it.
	if !deleting && !controllerutil.ContainsFinalizer(&lr, Finalizer) {
		orig := lr.DeepCopy()
		controllerutil.AddFinalizer(&lr, Finalizer)
		if err := r.Client.Patch(ctx, &lr, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}),
			client.FieldOwner(FieldManager)); err != nil {
			return ctrl.Result{}, err
		}
		r.requests.Wrote(req.NamespacedName, orig.ResourceVersion, lr.ResourceVersion)
	}

	// A request being deleted releases (or forgets) whatever its restore.
	ended := !deleting && r.ended(ctx, &lr)
	cluster := NewCluster()
	key := types.NamespacedName{Namespace: lr.Namespace, Name: lr.Spec.Cluster}
	reader := r.Cache
	lrConfirmed := false
	for attempt := 0; attempt < casAttempts; attempt++ {
		if err := reader.Get(ctx, key, cluster); err != nil {
			if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			if reader == r.Cache {
				// A cache may not have the cluster yet: only the API
				// says it is gone (and with it the lock to release).
				reader = r.APIReader
				continue
			}
			if deleting {
				return ctrl.Result{}, r.dropFinalizer(ctx, &lr)
			}
			if ended {
				d := Decide(lr.Spec.Cluster, ClusterLock{}, Request{Holder: lr.Spec.Holder, Ended: true})
				return ctrl.Result{}, r.apply(ctx, &lr, nil, ClusterLock{}, d)
			}
			// The cluster's creation wakes us through the watch.
			msg := fmt.Sprintf("OpenBaoCluster %s not found in namespace %s", lr.Spec.Cluster, lr.Namespace)
			_, err := r.setStatus(ctx, &lr, lockv1alpha1.LockRequestStatus{State: schemas.LockWaiting, Message: msg})
			return ctrl.Result{}, err
		}
		if reader == r.Cache && r.clusters.Stale(key, cluster.GetResourceVersion()) {
			// The cache has not yet seen our last swap of this lock:
			// deciding on it would swap again and conflict. The swap's
			// event wakes every request of the cluster.
			return ctrl.Result{}, nil
		}
		cur := ReadLock(cluster)
		in := Request{Holder: lr.Spec.Holder, Override: lr.Spec.Override, Deleting: deleting, Ended: ended,
			Held: lr.Status.State == schemas.LockHeld, Taken: meta.IsStatusConditionTrue(lr.Status.Conditions, schemas.CondLockTaken)}
		if cur.Free() && !deleting && !ended {
			ahead, err := r.firstInLine(ctx, &lr)
			if err != nil {
				return ctrl.Result{}, err
			}
			in.Ahead = ahead
		}
		d := Decide(lr.Spec.Cluster, cur, in)
		if (d.Taken || d.Retake) && !lrConfirmed {
			// Both act on the request's status saying it held the lock:
			// confirm that on the API, since a cache that has not seen
			// our own release would make a request that ended look
			// robbed of its lock, and take it again.
			if err := r.APIReader.Get(ctx, req.NamespacedName, &lr); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
			lrConfirmed = true
			deleting = !lr.DeletionTimestamp.IsZero()
			attempt--
			continue
		}
		if d.Action == Wait && reader == r.Cache && !sameStatus(lr.Status, waitStatus(cur, d)) {
			// Writes of the lock are compare-and-swap, but a Waiting
			// status is not: decided on a stale cache it could mark a
			// request that already holds the lock as waiting. Confirm on
			// a fresh read of the cluster before writing it.
			reader = r.APIReader
			continue
		}
		err := r.apply(ctx, &lr, cluster, cur, d)
		if apierrors.IsConflict(err) {
			// Someone wrote the cluster since we read it: re-read from
			// the API, not the possibly stale cache, and decide again.
			conflicts.Inc()
			reader = r.APIReader
			continue
		}
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, fmt.Errorf("cluster %s kept changing under %d attempts to swap its lock", key, casAttempts)
}

// firstInLine returns the name of the oldest live request for the same
// cluster (creation time, then name), or "" if that is lr itself. A
// request being deleted, or whose restore ended (Released), is out of the
// line: it will never take the lock.
func (r *Reconciler) firstInLine(ctx context.Context, lr *lockv1alpha1.LockRequest) (string, error) {
	var list lockv1alpha1.LockRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(lr.Namespace),
		client.MatchingFields{clusterIndex: lr.Spec.Cluster}); err != nil {
		return "", err
	}
	first := lr
	for i := range list.Items {
		o := &list.Items[i]
		if !o.DeletionTimestamp.IsZero() || o.Status.State == schemas.LockReleased {
			continue // it will never take the lock
		}
		if o.CreationTimestamp.Before(&first.CreationTimestamp) ||
			o.CreationTimestamp.Equal(&first.CreationTimestamp) && o.Name < first.Name {
			first = o
		}
	}
	if first.Name == lr.Name {
		return "", nil
	}
	return first.Name, nil
}
