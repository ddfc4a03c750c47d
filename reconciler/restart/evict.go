package restart

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Evicter carries out the restart's recorded deletions through the
// Eviction API (pods/eviction), the path Kubernetes plans for voluntary
// disruptions: it honours the operator's PodDisruptionBudget, and
// openbao-operator's admission policy, which locks DELETE of its managed
// pods, does not guard it (docs/architecture.md, "The follow-through").
type Evicter struct {
	Client client.Client
	// API confirms, after a conflict, whether the recorded pod is still
	// there.
	API client.Reader
}

// Refusal is an eviction the API refused for a reason that waiting alone
// may not fix, or that a person should see: RBAC, admission, or the
// PodDisruptionBudget. Its Message names the pod and what to change.
type Refusal struct {
	Pod string
	// Reason is EvictionForbidden, AdmissionDenied or DisruptionBudget.
	Reason, Message string
}

func (r *Refusal) Error() string { return r.Message }

// Refusal reasons.
const (
	ReasonForbidden = "EvictionForbidden"
	ReasonAdmission = "AdmissionDenied"
	ReasonBudget    = "DisruptionBudget"
)

// EvictPending carries out the recorded deletion of a restart, if the pod
// with the recorded UID still exists: an eviction with the UID (and the
// resourceVersion seen) as preconditions, so that only that very pod can
// go, never its replacement. A pod already gone or already replaced needs
// nothing. A refusal is returned as a *Refusal.
func (e Evicter) EvictPending(ctx context.Context, ns string, rs *Restart, m *Members) error {
	if !rs.AwaitsEviction(m) {
		return nil
	}
	p := m.Pod(rs.Pending().Name)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name}}
	uid := types.UID(p.UID)
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &p.ResourceVersion}}}
	err := e.Client.SubResource("eviction").Create(ctx, pod, ev)
	switch {
	case err == nil:
		log.FromContext(ctx).Info("evicted OpenBao pod for the restart", "pod", p.Name, "uid", p.UID)
		restartedPods.Inc()
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// The pod changed since it was read, perhaps from a cache that
		// has not yet seen our own eviction: ask the API whether that
		// very pod is still there and not yet going.
		var cur corev1.Pod
		gerr := e.API.Get(ctx, types.NamespacedName{Namespace: ns, Name: p.Name}, &cur)
		if apierrors.IsNotFound(gerr) || gerr == nil && (cur.UID != uid || cur.DeletionTimestamp != nil) {
			return nil
		}
	case apierrors.IsTooManyRequests(err):
		return &Refusal{Pod: p.Name, Reason: ReasonBudget, Message: fmt.Sprintf(
			"the PodDisruptionBudget of pod %s/%s allows no disruption now (%s); the restart evicts it as soon as the budget allows",
			ns, p.Name, apiMessage(err))}
	case apierrors.IsForbidden(err) && isRBAC(err):
		return &Refusal{Pod: p.Name, Reason: ReasonForbidden, Message: fmt.Sprintf(
			"the reconciler may not evict pod %s/%s (%s): grant its ServiceAccount create on pods/eviction "+
				"(deploy/install.yaml, ClusterRole openbao-restore:reconciler)", ns, p.Name, apiMessage(err))}
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		return &Refusal{Pod: p.Name, Reason: ReasonAdmission, Message: fmt.Sprintf(
			"admission refused the eviction of pod %s/%s (%s): allow evictions by the reconciler's ServiceAccount in the policy, "+
				"or end the restore with the Abandon acknowledgement", ns, p.Name, apiMessage(err))}
	}
	// Still the recorded pod: the retry reads it again, and the UID
	// precondition still holds.
	return fmt.Errorf("evict pod %s/%s: %w", ns, p.Name, err)
}

// isRBAC tells an authorizer's refusal ("User ... cannot create resource
// "pods/eviction" ...") from an admission plugin's, which is Forbidden too.
func isRBAC(err error) bool {
	return strings.Contains(apiMessage(err), " cannot create resource ")
}

func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return st.Status().Message
	}
	return err.Error()
}
