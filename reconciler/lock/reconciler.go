package lock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
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

// apply carries out a decision. Cluster writes are compare-and-swap: a
// merge patch carrying the resourceVersion that was read, so that the API
// refuses it with a conflict if anything changed since.
func (r *Reconciler) apply(ctx context.Context, lr *lockv1alpha1.LockRequest, cluster *unstructured.Unstructured, cur ClusterLock, d Decision) error {
	now := r.Now()
	switch d.Action {
	case Acquire, Override:
		orig := cluster.DeepCopy()
		setLock(cluster, lr.Spec.Holder, fmt.Sprintf("restore %s/%s", lr.Namespace, lr.Spec.Restore.Name), now)
		if err := r.swap(ctx, orig, cluster); err != nil {
			return err
		}
		lockWait.Observe(now.Sub(lr.CreationTimestamp.Time).Seconds())
		acquisitions.WithLabelValues(strconv.FormatBool(d.Action == Override)).Inc()
		st := lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, HeldBy: lr.Spec.Holder,
			Message: "holding the operation lock of cluster " + lr.Spec.Cluster, AcquiredAt: &metav1.Time{Time: now.Truncate(time.Second)}}
		if d.Action == Override {
			if err := r.applyCondition(ctx, lr, metav1.Condition{Type: schemas.CondOverride, Status: metav1.ConditionTrue, Reason: "Overridden",
				Message: fmt.Sprintf("cleared the operation lock held by operation=%s holder=%s", cur.Operation, cur.Holder)}, OverrideManager); err != nil {
				return err
			}
			r.Recorder.Eventf(lr, cluster, corev1.EventTypeWarning, ReasonOverridden, "Override", "%s", d.Message)
		} else {
			r.Recorder.Eventf(lr, cluster, corev1.EventTypeNormal, ReasonAcquired, "Acquire", "%s", st.Message)
		}
		if d.Retake {
			retaken.Inc()
			if err := r.applyCondition(ctx, lr, metav1.Condition{Type: schemas.CondLockTaken, Status: metav1.ConditionFalse, Reason: "Retaken",
				Message: "took back the operation lock of cluster " + lr.Spec.Cluster}, TakenManager); err != nil {
				return err
			}
			r.Recorder.Eventf(lr, cluster, corev1.EventTypeNormal, ReasonRetaken, "Acquire", "%s", d.Message)
		}
		_, err := r.setStatus(ctx, lr, st)
		return err
	case Keep:
		st := lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, HeldBy: lr.Spec.Holder, Message: d.Message, AcquiredAt: lr.Status.AcquiredAt}
		if at, ok := LockTimes(cluster); ok {
			st.AcquiredAt = &metav1.Time{Time: at}
		}
		_, err := r.setStatus(ctx, lr, st)
		return err
	case Wait:
		if d.Taken {
			// The condition goes first: once the state says Waiting, no
			// later decision reports the taking again.
			taken.Inc()
			if err := r.applyCondition(ctx, lr, metav1.Condition{Type: schemas.CondLockTaken, Status: metav1.ConditionTrue, Reason: "Taken",
				Message: d.Message}, TakenManager); err != nil {
				return err
			}
			r.Recorder.Eventf(lr, cluster, corev1.EventTypeWarning, ReasonTaken, "Wait", "%s", d.Message)
		}
		if cur.Free() && lr.Status.State == schemas.LockWaiting {
			// A free lock that another request is first in line for is
			// taken within milliseconds, and that write wakes every
			// waiting request again: rewriting each one's status for the
			// gap would double the writes of a hand-over for nothing.
			return nil
		}
		st := waitStatus(cur, d)
		changed, err := r.setStatus(ctx, lr, st)
		if err != nil {
			return err
		}
		// Events only on a change of what we wait for (as seen by the
		// API, not the cache), so a requeue does not repeat them.
		if changed && !d.Taken { // OperationLockTaken said it already
			if d.Blocked {
				r.Recorder.Eventf(lr, cluster, corev1.EventTypeWarning, ReasonBlocked, "Wait", "%s", d.Message)
			} else {
				r.Recorder.Eventf(lr, cluster, corev1.EventTypeNormal, ReasonWaiting, "Wait", "%s", d.Message)
			}
		}
		return nil
	case Release:
		orig := cluster.DeepCopy()
		clearLock(cluster)
		if err := r.swap(ctx, orig, cluster); err != nil {
			return err
		}
		r.Recorder.Eventf(lr, cluster, corev1.EventTypeNormal, ReasonReleased, "Release", "released the operation lock of cluster %s", lr.Spec.Cluster)
		// No Released state is written: the request is being deleted
		// and goes as soon as its finalizer does. Its deletion mark is
		// what the executor refuses to submit under.
		return r.dropFinalizer(ctx, lr)
	case Forget:
		return r.dropFinalizer(ctx, lr)
	case Finish:
		// Released before the lock is cleared: an executor records its
		// submission with the request's resourceVersion as precondition
		// and only under Held, so from this write on none can, and no
		// restore can be sent without the lock.
		if _, err := r.setStatus(ctx, lr, lockv1alpha1.LockRequestStatus{State: schemas.LockReleased, Message: d.Message,
			AcquiredAt: lr.Status.AcquiredAt}); err != nil {
			return err
		}
		orig := cluster.DeepCopy()
		clearLock(cluster)
		if err := r.swap(ctx, orig, cluster); err != nil {
			return err
		}
		r.Recorder.Eventf(lr, cluster, corev1.EventTypeNormal, ReasonReleased, "Release", "%s", d.Message)
		return nil
	case Retire:
		if lr.Status.State == schemas.LockReleased {
			return nil // Finish's own record stays as it is
		}
		_, err := r.setStatus(ctx, lr, lockv1alpha1.LockRequestStatus{State: schemas.LockReleased, Message: d.Message})
		return err
	}
	return fmt.Errorf("unknown action %v", d.Action)
}

func (r *Reconciler) swap(ctx context.Context, orig, modified *unstructured.Unstructured) error {
	if err := r.Client.Status().Patch(ctx, modified, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(FieldManager)); err != nil {
		return err
	}
	r.clusters.Wrote(client.ObjectKeyFromObject(orig), orig.GetResourceVersion(), modified.GetResourceVersion())
	return nil
}

func (r *Reconciler) dropFinalizer(ctx context.Context, lr *lockv1alpha1.LockRequest) error {
	if !controllerutil.ContainsFinalizer(lr, Finalizer) {
		return nil
	}
	orig := lr.DeepCopy()
	controllerutil.RemoveFinalizer(lr, Finalizer)
	err := r.Client.Patch(ctx, lr, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager))
	return client.IgnoreNotFound(err)
}

// setStatus server-side-applies the fields of the request's status this
// reconciler owns (never the executor's submission), skipping the write
// when nothing changed. changed reports whether the state or the holder
// waited for changed; it is decided on the API's copy only for a Waiting
// state, the one whose change is announced by an event.
func (r *Reconciler) setStatus(ctx context.Context, lr *lockv1alpha1.LockRequest, st lockv1alpha1.LockRequestStatus) (changed bool, err error) {
	if sameStatus(lr.Status, st) {
		return false, nil
	}
	if st.State == schemas.LockWaiting {
		// The cache may lag behind our previous write: an event per
		// change of what we wait for, as the API has it, so that a
		// requeue never repeats one.
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(lr), lr); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if sameStatus(lr.Status, st) {
			return false, nil
		}
	}
	changed = lr.Status.State != st.State || lr.Status.HeldBy != st.HeldBy
	status := map[string]any{"state": st.State}
	if st.HeldBy != "" {
		status["heldBy"] = st.HeldBy
	}
	if st.Message != "" {
		status["message"] = st.Message
	}
	if st.AcquiredAt != nil {
		status["acquiredAt"] = st.AcquiredAt.UTC().Format(time.RFC3339)
	}
	if err := r.applyStatus(ctx, lr, status, FieldManager); err != nil {
		return false, err
	}
	lr.Status.State, lr.Status.HeldBy, lr.Status.Message, lr.Status.AcquiredAt = st.State, st.HeldBy, st.Message, st.AcquiredAt
	return changed, nil
}

// applyCondition server-side-applies one condition of a request's status,
// owned by manager alone, so that no write of the state (which never
// carries conditions) and no other condition's write can drop it.
func (r *Reconciler) applyCondition(ctx context.Context, lr *lockv1alpha1.LockRequest, c metav1.Condition, manager string) error {
	return r.applyStatus(ctx, lr, map[string]any{"conditions": []any{map[string]any{
		"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
		"lastTransitionTime": r.Now().UTC().Format(time.RFC3339),
	}}}, manager)
}

// applyStatus server-side-applies status fields of a request as manager.
func (r *Reconciler) applyStatus(ctx context.Context, lr *lockv1alpha1.LockRequest, status map[string]any, manager string) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": lockv1alpha1.GroupVersion.String(),
		"kind":       "LockRequest",
		"metadata":   map[string]any{"name": lr.Name, "namespace": lr.Namespace},
		"status":     status,
	}}
	err := r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager), client.ForceOwnership)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	r.requests.Wrote(client.ObjectKeyFromObject(lr), lr.ResourceVersion, u.GetResourceVersion())
	lr.ResourceVersion = u.GetResourceVersion()
	return nil
}

func waitStatus(cur ClusterLock, d Decision) lockv1alpha1.LockRequestStatus {
	return lockv1alpha1.LockRequestStatus{State: schemas.LockWaiting, HeldBy: cur.Holder, Message: d.Message}
}

func sameStatus(a, b lockv1alpha1.LockRequestStatus) bool {
	return a.State == b.State && a.HeldBy == b.HeldBy && a.Message == b.Message && sameTime(a.AcquiredAt, b.AcquiredAt)
}

func sameTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Unix() == b.Unix()
}
