package lock

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

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
