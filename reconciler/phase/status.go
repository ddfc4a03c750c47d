package phase

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// Condition is one condition this reconciler owns (its lastTransitionTime
// is kept on write: Reconciler.apply).
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Status is the part of the XR's status this reconciler owns, in the
// XR's schema (hack/genxrd). Times are whole seconds, as the API keeps them.
type Status struct {
	Phase          string       `json:"phase"`
	Message        string       `json:"message,omitempty"`
	StartTime      *metav1.Time `json:"startTime,omitempty"`
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	SnapshotKey    string       `json:"snapshotKey,omitempty"`
	SnapshotSize   int64        `json:"snapshotSize,omitempty"`
	Conditions     []Condition  `json:"conditions,omitempty"`
	// Restart is the follow-through's progress; nil until the Job
	// succeeded (or a Resume).
	Restart   *restart.Restart `json:"restart,omitempty"`
	Execution *Execution       `json:"execution,omitempty"`
	// DryRun is a dry run's report, from the executor's termination
	// message.
	DryRun *schemas.DryRunReport `json:"dryRun,omitempty"`
	// SafetySnapshot is the safety snapshot taken before the restore,
	// with the claim that undoes it.
	SafetySnapshot *Safety `json:"safetySnapshot,omitempty"`
	// Target is a fresh-target restore's new cluster.
	Target *Target `json:"target,omitempty"`
}

// Execution is what the reconciler did beyond the phase.
type Execution struct {
	// NudgedAt is when a finished restore was last written again for
	// Crossplane (Reconciler.nudge).
	NudgedAt *metav1.Time `json:"nudgedAt,omitempty"`
}

// ReadStatus reads the fields this reconciler owns from an XR: its
// conditions only, of all the XR's.
func ReadStatus(xr *unstructured.Unstructured) (Status, error) {
	var s Status
	st, _, _ := unstructured.NestedMap(xr.Object, "status")
	if st == nil {
		return s, nil
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(st, &s); err != nil {
		return s, fmt.Errorf("read the status of %s %s: %w", xr.GetKind(), xr.GetName(), err)
	}
	s.Conditions = slices.DeleteFunc(s.Conditions, func(c Condition) bool { return !owned(c.Type) })
	return s, nil
}

func owned(t string) bool {
	return t == schemas.CondRestored || t == schemas.CondLockHeld || t == schemas.CondOverride || t == schemas.CondIdentityChanged ||
		t == schemas.CondLockTaken || t == schemas.CondRestartBlocked || t == schemas.CondDryRun
}

// sameStatus reports whether a and b write the same status: conditions in
// any order, and an empty list the same as none.
func sameStatus(a, b Status) bool { return equality.Semantic.DeepEqual(normal(a), normal(b)) }

func normal(s Status) Status {
	s.Conditions = slices.SortedFunc(slices.Values(s.Conditions), func(a, b Condition) int { return strings.Compare(a.Type, b.Type) })
	if s.Restart != nil && len(s.Restart.Pods) == 0 {
		r := *s.Restart
		r.Pods = nil
		s.Restart = &r
	}
	if s.Execution != nil && s.Execution.NudgedAt == nil {
		s.Execution = nil
	}
	return s
}

// encodeStatus is the status apply writes: s in the XR's schema, each
// condition with the lastTransitionTime it has on xr while its status is
// unchanged, else now.
func encodeStatus(xr *unstructured.Unstructured, s Status, now time.Time) (map[string]any, error) {
	if s.Restart != nil && s.Restart.Pods == nil {
		// The pods are an atomic list: an empty one is written as such.
		rs := *s.Restart
		rs.Pods = []restart.RestartedPod{}
		s.Restart = &rs
	}
	conds := s.Conditions
	s.Conditions = nil
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&s)
	if err != nil {
		return nil, fmt.Errorf("encode the status of %s %s: %w", xr.GetKind(), xr.GetName(), err)
	}
	if len(conds) > 0 {
		var existing []metav1.Condition
		cur, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
		for _, c := range cur {
			m, _ := c.(map[string]any)
			typ, _ := m["type"].(string)
			st, _ := m["status"].(string)
			ts, _ := m["lastTransitionTime"].(string)
			t, _ := time.Parse(time.RFC3339, ts)
			existing = append(existing, metav1.Condition{Type: typ, Status: metav1.ConditionStatus(st), LastTransitionTime: metav1.Time{Time: t}})
		}
		list := make([]any, 0, len(conds))
		for _, c := range conds {
			ltt := now.UTC()
			if old := meta.FindStatusCondition(existing, c.Type); old != nil && string(old.Status) == c.Status && !old.LastTransitionTime.IsZero() {
				ltt = old.LastTransitionTime.UTC()
			}
			reason := c.Reason
			if reason == "" {
				reason = "Unspecified"
			}
			list = append(list, map[string]any{"type": c.Type, "status": c.Status, "reason": reason,
				"message": c.Message, "lastTransitionTime": ltt.Format(time.RFC3339)})
		}
		status["conditions"] = list
	}
	return status, nil
}

// apply server-side-applies the owned fields with this reconciler's field
// manager on the status subresource. Conditions are a list map keyed by
// type on Crossplane's XR CRDs, so applying ours leaves the function's and
// Crossplane's conditions alone. A condition keeps its
// lastTransitionTime while its status is unchanged.
//
// rv, if set, makes the write conditional on the XR's resourceVersion: a
// pod chosen for deletion is recorded only on the status it was chosen
// from.
func (r *Reconciler) apply(ctx context.Context, xr *unstructured.Unstructured, s Status, rv string) error {
	status, err := encodeStatus(xr, s, r.Now())
	if err != nil {
		return err
	}
	md := map[string]any{"name": xr.GetName()}
	if rv != "" {
		md["resourceVersion"] = rv
	}
	if xr.GetNamespace() != "" {
		md["namespace"] = xr.GetNamespace()
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": r.GVK.GroupVersion().String(), "kind": r.GVK.Kind, "metadata": md, "status": status}}
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil // the XR is gone
	}
	if err != nil {
		return fmt.Errorf("apply status of %s %s: %w", r.GVK.Kind, xr.GetName(), err)
	}
	r.own.Wrote(client.ObjectKeyFromObject(xr), xr.GetResourceVersion(), u.GetResourceVersion())
	return nil
}
