package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// FieldManager owns the drill status fields this reconciler writes.
const FieldManager = "openbao-restore-drill"

// labelJobName is the Job controller's label on a Job's pods.
const labelJobName = "batch.kubernetes.io/job-name"

// Least privilege (rbac/role.yaml, which the tests run under): reads of the
// drills, their sources, their runs' restores, check Jobs and pods, and
// server-side apply of the drills' status.
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestoredrills,verbs=get;list;watch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestoredrills/status,verbs=patch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestoredrills,verbs=get;list;watch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestoredrills/status,verbs=patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=openbaorestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=openbao.org,resources=openbaoclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler keeps one drill XR kind's time and records its runs.
type Reconciler struct {
	GVK schema.GroupVersionKind
	// Cache reads the drills' sources and their runs' restores from the
	// manager's informers (the client would read these unstructured kinds
	// from the API server); Client writes; APIReader reads the drill
	// itself, whose every decision builds on its last (a stale copy could
	// start or record a run twice), and a run's check Job and its pods,
	// which no cache holds.
	Cache     client.Reader
	Client    client.Client
	APIReader client.Reader
	Recorder  events.EventRecorder
	Now       func() time.Time
	// Namespaces, if set, limits the drills kept to those of these
	// namespaces (a legacy XR is cluster-scoped: its claim's namespace
	// counts); the others are left alone, not retried.
	Namespaces []string
}

// Reconcile decides with Next and applies the status when it changes.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	xr := &unstructured.Unstructured{}
	xr.SetGroupVersionKind(r.GVK)
	if err := r.APIReader.Get(ctx, req.NamespacedName, xr); err != nil || !xr.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, namespaceOf(xr)) {
		return ctrl.Result{}, nil
	}
	cur, err := readStatus(xr)
	if err != nil {
		return ctrl.Result{}, err
	}
	f, err := r.facts(ctx, xr, cur)
	if err != nil {
		return ctrl.Result{}, err
	}
	next, evs, wait := Next(cur, f)
	if err := r.apply(ctx, xr, cur, next); err != nil {
		return ctrl.Result{}, err
	}
	ns, name := namespaceOf(xr), f.Name
	for _, e := range evs {
		typ := corev1.EventTypeNormal
		if e.Warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(xr, nil, typ, e.Reason, "Drill", "%s", e.Message)
	}
	if len(next.Runs) > 0 && (len(cur.Runs) == 0 || cur.Runs[0].Run != next.Runs[0].Run) {
		observe(ns, name, next.Runs[0], next.LastSuccessTime)
	}
	if r := f.Restore; next.Active != nil && next.Active.EndedAt == nil && r != nil && r.Phase == schemas.PhaseCompleted && f.Check == nil {
		wait = checkPoll // the read check runs
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// checkPoll is how often a run whose read check runs looks at its Job.
const checkPoll = 2 * time.Second

// namespaceOf is where the drill runs: its claim's namespace for a legacy
// XR, its own for a namespaced one.
func namespaceOf(xr *unstructured.Unstructured) string {
	if ns := xr.GetNamespace(); ns != "" {
		return ns
	}
	ns, _, _ := unstructured.NestedString(xr.Object, "spec", "claimRef", "namespace")
	return ns
}

// nameOf is the drill's name as its users know it: its claim's.
func nameOf(xr *unstructured.Unstructured) string {
	if n, _, _ := unstructured.NestedString(xr.Object, "spec", "claimRef", "name"); n != "" {
		return n
	}
	return xr.GetName()
}

func readStatus(xr *unstructured.Unstructured) (Status, error) {
	var s Status
	st, _, _ := unstructured.NestedMap(xr.Object, "status")
	if st == nil {
		return s, nil
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(st, &s); err != nil {
		return s, fmt.Errorf("read the status of %s %s: %w", xr.GetKind(), xr.GetName(), err)
	}
	var own []Condition
	for _, c := range s.Conditions {
		if c.Type == schemas.CondPassed {
			own = append(own, c)
		}
	}
	s.Conditions = own
	return s, nil
}

// facts gathers what Next decides from.
func (r *Reconciler) facts(ctx context.Context, xr *unstructured.Unstructured, cur Status) (Facts, error) {
	ns := namespaceOf(xr)
	f := Facts{Now: r.Now(), Name: nameOf(xr), Created: xr.GetCreationTimestamp().Time, Trigger: xr.GetAnnotations()[schemas.AnnotationRunNow],
		CircuitOpen: xrkinds.CircuitOpen(xr)}
	raw, _, _ := unstructured.NestedMap(xr.Object, "spec")
	// The contract's rules, not the operator's policy: the function
	// refuses what the policy forbids, and composes nothing then.
	spec, _, err := schemas.ValidateDrill(raw, schemas.Policy{AllowInsecureEndpoints: true})
	if err != nil {
		return f, err
	}
	f.Spec = spec
	if spec != nil && ns != "" {
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(schemas.ClusterGVK)
		err := r.Cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: spec.Source.Cluster}, c)
		if client.IgnoreNotFound(err) != nil {
			return f, err
		}
		if err == nil {
			f.Latest = latest(c)
		}
	}
	a := cur.Active
	if a == nil || a.EndedAt != nil || ns == "" {
		return f, nil
	}
	claim := &unstructured.Unstructured{}
	claim.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.ClaimKind})
	if err := r.Cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: a.Restore}, claim); err != nil {
		return f, client.IgnoreNotFound(err)
	}
	rs := &Restore{}
	rs.Phase, _, _ = unstructured.NestedString(claim.Object, "status", "phase")
	rs.Message, _, _ = unstructured.NestedString(claim.Object, "status", "message")
	rs.UpAt = timeAt(claim, "status", "target", "upAt")
	rs.CompletedAt = timeAt(claim, "status", "completionTime")
	f.Restore = rs
	if rs.Phase == schemas.PhaseCompleted && spec != nil && len(spec.ReadPaths) > 0 {
		if f.Check, f.CheckComposed, err = r.check(ctx, ns, f.Name, a.Run); err != nil {
			return f, err
		}
	}
	return f, nil
}

// latest reads the cluster's status.backup.latestSnapshot.
func latest(c *unstructured.Unstructured) *schemas.SnapshotRef {
	m, _, _ := unstructured.NestedMap(c.Object, "status", "backup", "latestSnapshot")
	key, _ := m["key"].(string)
	if key == "" {
		return nil
	}
	s := &schemas.SnapshotRef{Key: key}
	s.Digest, _ = m["digest"].(string)
	if len(s.Digest) == 64 {
		s.Digest = "sha256:" + s.Digest
	}
	s.ClusterID, _ = m["clusterID"].(string)
	s.Version, _ = m["version"].(string)
	switch n := m["size"].(type) {
	case int64:
		s.Size = n
	case float64:
		s.Size = int64(n)
	}
	return s
}

func timeAt(u *unstructured.Unstructured, path ...string) time.Time {
	s, _, _ := unstructured.NestedString(u.Object, path...)
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// check reads how the run's read-check Job ended: nil while it has not;
// composed is whether the Job exists.
func (r *Reconciler) check(ctx context.Context, ns, drill string, run int64) (c *Check, composed bool, err error) {
	var jobs batchv1.JobList
	if err := r.APIReader.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{
		schemas.LabelDrill: drill, schemas.LabelDrillRun: fmt.Sprint(run), schemas.LabelJobRole: schemas.JobRoleReadCheck}); err != nil {
		return nil, false, err
	}
	composed = len(jobs.Items) > 0
	for _, j := range jobs.Items {
		for _, c := range j.Status.Conditions {
			if c.Status != corev1.ConditionTrue || c.Type != batchv1.JobComplete && c.Type != batchv1.JobFailed {
				continue
			}
			ch := &Check{Passed: c.Type == batchv1.JobComplete, EndedAt: c.LastTransitionTime.Time, Message: c.Message}
			var pods corev1.PodList
			if err := r.APIReader.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{labelJobName: j.Name}); err != nil {
				return nil, composed, err
			}
			for _, p := range pods.Items {
				for _, cs := range p.Status.ContainerStatuses {
					var tm schemas.TerminationMessage
					if t := cs.State.Terminated; t != nil && json.Unmarshal([]byte(t.Message), &tm) == nil && tm.Message != "" {
						ch.Message = checkMessage(tm)
					}
				}
			}
			return ch, composed, nil
		}
	}
	return nil, composed, nil
}

// apply server-side-applies the owned status fields when they changed.
func (r *Reconciler) apply(ctx context.Context, xr *unstructured.Unstructured, cur, next Status) error {
	a, _ := json.Marshal(cur)
	b, _ := json.Marshal(next)
	if string(a) == string(b) {
		return nil
	}
	conds := next.Conditions
	next.Conditions = nil
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return err
	}
	if status["runs"] == nil {
		status["runs"] = []any{}
	}
	if len(conds) > 0 {
		now := metav1.NewTime(r.Now().UTC().Truncate(time.Second)).Format(time.RFC3339)
		var list []any
		for _, c := range conds {
			ltt := now
			for _, old := range cur.Conditions {
				if old.Type == c.Type && old.Status == c.Status {
					ltt = lastTransition(xr, c.Type, now)
				}
			}
			list = append(list, map[string]any{"type": c.Type, "status": c.Status, "reason": c.Reason, "message": c.Message, "lastTransitionTime": ltt})
		}
		status["conditions"] = list
	}
	md := map[string]any{"name": xr.GetName()}
	if xr.GetNamespace() != "" {
		md["namespace"] = xr.GetNamespace()
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": r.GVK.GroupVersion().String(), "kind": r.GVK.Kind, "metadata": md, "status": status}}
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// lastTransition is the condition's lastTransitionTime on the XR, or def.
func lastTransition(xr *unstructured.Unstructured, typ, def string) string {
	cs, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range cs {
		if m, _ := c.(map[string]any); m["type"] == typ {
			if t, _ := m["lastTransitionTime"].(string); t != "" {
				return t
			}
		}
	}
	return def
}

// checkMessage says what the read check found, path by path: the failed
// ones when any failed, else all.
func checkMessage(tm schemas.TerminationMessage) string {
	if len(tm.ReadCheck) == 0 {
		return strings.TrimSpace(tm.Message)
	}
	var ok, failed []string
	for _, c := range tm.ReadCheck {
		if c.OK {
			ok = append(ok, fmt.Sprintf("%s (%s)", c.Path, c.Message))
		} else {
			failed = append(failed, fmt.Sprintf("%s (%s)", c.Path, c.Message))
		}
	}
	if len(failed) > 0 {
		return fmt.Sprintf("the read check failed at %s", strings.Join(failed, "; "))
	}
	return fmt.Sprintf("read %d path(s), each with data: %s", len(ok), strings.Join(ok, ", "))
}
