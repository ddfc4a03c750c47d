package phase

import (
	"context"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// Facts is everything Next decides from, read by the reconciler.
type Facts struct {
	// UID of the XR; an acknowledgement must name it.
	UID string
	// Violations of the spec (contract and policy); non-empty means invalid.
	Violations []schemas.Violation
	// FunctionInvalid is the function's verdict (its SpecValid condition
	// False) with its message: the function knows the Input's policy.
	FunctionInvalid string
	// Force skips the cluster's readiness checks (spec.force).
	Force bool
	// DryRun is spec.dryRun: no lock, nothing sent, no restart.
	DryRun bool
	// Origin is the restore as its user made it, for the undo claim.
	Origin Origin
	// Cluster is the OpenBaoCluster; nil when it does not exist.
	Cluster *Cluster
	// Lock is the LockRequest; nil when none exists.
	Lock *Lock
	// Job is the restore Job; nil when none exists.
	Job *Job
	// Ack is the value of the acknowledge annotation on the XR.
	Ack string
	// Members are the cluster's OpenBao pods and their health, read
	// while the restart is due or under way; nil otherwise.
	Members *restart.Members
	// watched: Members came from the member cache, whose changes wake the
	// reconciler. Only the I/O side reads it, to decide how soon to look
	// again; Next never does.
	watched bool
	// Timeouts bound the restart's waits; zero means restart.DefaultTimeouts.
	Timeouts restart.Timeouts
	// Now is the time of the decision.
	Now time.Time
	// Fresh is set for a fresh-target restore (spec.clusterTemplate).
	Fresh *Fresh
}

// Cluster is what the phase depends on of the OpenBaoCluster.
type Cluster struct {
	Initialized bool
	Upgrading   bool
	// BlueRevision is status.blueGreen.blueRevision: the voters'
	// StatefulSet is <cluster>-<BlueRevision> while it is set.
	BlueRevision string
	// Version is status.currentVersion, and Origin the
	// openbao.org/restore-origin annotation (a fresh target's).
	Version, Origin string
}

// Lock is the LockRequest's status.
type Lock struct {
	State, HeldBy, Message string
	// Holder is the request's spec.holder.
	Holder string
	// Submission is set once the executor recorded a submission.
	Submission *Submission
	// Chosen is the object the executor chose for a restore with no key
	// (the newest under the path prefix), and ChosenSize its size.
	Chosen     string
	ChosenSize int64
	// Override is the message of the request's OperationLockOverride
	// condition, if it cleared a foreign lock.
	Override string
	// Taken is the request's LockTaken condition, if any: True while a
	// writer that does not compare-and-swap holds the lock it took from
	// the request, False once the request took it back.
	Taken *Condition
}

// Submission is the executor's record on the LockRequest.
type Submission struct {
	Pod, Endpoint string
	At            time.Time
}

// Job is the restore Job and what its pods said.
type Job struct {
	Name string
	// Complete and Failed are the Job's terminal conditions; FailedReason
	// and FailedMessage are the Failed condition's.
	Complete, Failed            bool
	FailedReason, FailedMessage string
	// Pods are the terminated pods of the Job, oldest first.
	Pods []Pod
}

// Pod is one terminated pod of the Job.
type Pod struct {
	Name     string
	ExitCode int32
	// Termination is the executor's termination message, nil if absent
	// or not JSON (Raw then holds it).
	Termination *schemas.TerminationMessage
	Raw         string
}

// facts gathers what Next decides from.
func (r *Reconciler) facts(ctx context.Context, xr *unstructured.Unstructured, cur Status) (Facts, error) {
	ns := r.restoreNamespace(xr)
	spec, _, _ := unstructured.NestedMap(xr.Object, "spec")
	f := Facts{UID: string(xr.GetUID()), Now: r.Now(), Ack: xr.GetAnnotations()[schemas.AcknowledgeAnnotation], Timeouts: r.Restart.Timeouts}
	f.Force, _, _ = unstructured.NestedBool(spec, "force")
	f.DryRun, _, _ = unstructured.NestedBool(spec, "dryRun")
	f.Origin = r.origin(xr, spec, ns)
	f.Fresh = freshOf(xr, spec, r.BootstrapTimeout)
	if err := r.verdicts(&f, xr, spec, ns); err != nil || ns == "" {
		return f, err
	}

	clusterName, _, _ := unstructured.NestedString(spec, "cluster")
	key := types.NamespacedName{Namespace: ns, Name: clusterName}
	scheme, err := r.readCluster(ctx, &f, key)
	if err != nil {
		return f, err
	}
	// confirmCluster asks the API, not the cache, whether a cluster the
	// cache does not show is really gone: only a cluster really gone
	// fails a restore. It asks once per reconcile.
	confirmed := false
	confirmCluster := func() error {
		if f.Cluster != nil || confirmed {
			return nil
		}
		confirmed = true
		c := clusterObject()
		err := r.APIReader.Get(ctx, key, c)
		if err == nil {
			f.Cluster = &Cluster{Initialized: true}
			f.Cluster.BlueRevision, _, _ = unstructured.NestedString(c.Object, "status", "blueGreen", "blueRevision")
		}
		return client.IgnoreNotFound(err)
	}

	lr, err := r.lockRequest(ctx, r.Client, ns, xr)
	if err != nil {
		return f, err
	}
	job, err := r.job(ctx, ns, xr, "")
	if err != nil {
		return f, err
	}
	if job != nil {
		f.Job = jobFacts(job)
		// Once the restart has begun, the Job's outcome is in the status
		// and only the restart decides: its pods need no reading.
		if (f.Job.Complete || f.Job.Failed) && cur.Restart == nil {
			if f.Job.Pods, err = r.pods(ctx, job); err != nil {
				return f, err
			}
		}
		running := !f.Job.Complete && !f.Job.Failed
		if running {
			if err := confirmCluster(); err != nil {
				return f, err
			}
		}
		if f.Job.Failed || running && f.Cluster == nil {
			// The submission record decides Failed or Unknown: read it
			// from the API, never from a cache that may lag behind it.
			if lr, err = r.lockRequest(ctx, r.APIReader, ns, xr); err != nil {
				return f, err
			}
		}
	}
	// The restart is due (the Job succeeded, or a Resume) or under way:
	// read the pods, their health, and whether the cluster really exists.
	if cur.Restart != nil || f.Job != nil && f.Job.Complete || cur.Phase == schemas.PhaseUnknown && f.Ack != "" {
		if err := confirmCluster(); err != nil {
			return f, err
		}
		if f.Cluster != nil {
			// The health gates verify the pods as the executor verified
			// OpenBao, with what its submission record says.
			var tl *restart.TLS
			if lr != nil && lr.Status.Submission != nil && lr.Status.Submission.TLSCA != "" {
				s := lr.Status.Submission
				tl = &restart.TLS{CA: []byte(s.TLSCA), ServerName: s.TLSServerName}
			}
			if f.Members, f.watched, err = r.gatherer().Members(ctx, ns, clusterName, f.Cluster.BlueRevision, scheme, tl); err != nil {
				return f, err
			}
			// A refusal recorded in status still holds while the pod it
			// refused is there: the next eviction tells otherwise.
			if c := find(cur.Conditions, schemas.CondRestartBlocked); c != nil && c.Status == "True" && cur.Restart.AwaitsEviction(f.Members) {
				f.Members.Refused, f.Members.RefusedReason = c.Message, c.Reason
			}
			if cur.Restart.Asked() != nil {
				if f.Members.StepDown, err = r.stepDownReport(ctx, ns, xr); err != nil {
					return f, err
				}
			}
		}
	}
	f.Lock = lockFacts(lr)
	return f, nil
}

// verdicts sets the spec's violations and the function's verdict.
func (r *Reconciler) verdicts(f *Facts, xr *unstructured.Unstructured, spec map[string]any, ns string) error {
	// The contract's rules, but not the operator's policy (allowed
	// images, insecure endpoints): only the function knows the Input, and
	// it says so in its SpecValid condition.
	image, _, _ := unstructured.NestedString(spec, "image")
	policy := schemas.Policy{AllowInsecureEndpoints: true}
	if image != "" {
		policy.AllowedImages = []string{image}
	}
	_, vs, err := schemas.Validate(spec, policy)
	if err != nil {
		return err
	}
	f.Violations = vs
	if ns == "" && !r.namespaced() {
		f.Violations = append(f.Violations, schemas.Violation{Path: "spec.claimRef", Message: schemas.MsgNeedsClaim})
	}
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == schemas.CondSpecValid && m["status"] == "False" {
			f.FunctionInvalid, _ = m["message"].(string)
			if f.FunctionInvalid == "" {
				f.FunctionInvalid, _ = m["reason"].(string)
			}
		}
	}
	return nil
}

// readCluster sets the OpenBaoCluster's facts from the cache (nil when the
// cache does not hold it) and returns the scheme its pods answer on.
func (r *Reconciler) readCluster(ctx context.Context, f *Facts, key types.NamespacedName) (string, error) {
	cluster := clusterObject()
	if err := r.Cache.Get(ctx, key, cluster); err != nil {
		return "https", client.IgnoreNotFound(err)
	}
	scheme := "https"
	if tlsOn, found, _ := unstructured.NestedBool(cluster.Object, "spec", "tls", "enabled"); found && !tlsOn {
		scheme = "http"
	}
	c := &Cluster{}
	c.Initialized, _, _ = unstructured.NestedBool(cluster.Object, "status", "initialized")
	c.BlueRevision, _, _ = unstructured.NestedString(cluster.Object, "status", "blueGreen", "blueRevision")
	c.Version, _, _ = unstructured.NestedString(cluster.Object, "status", "currentVersion")
	c.Origin = cluster.GetAnnotations()[schemas.AnnotationRestoreOrigin]
	// Upgrading is the condition Upgrading=True, exactly as
	// openbao-operator's restore manager reads it (its
	// validateClusterState), set for rolling and blue/green upgrades.
	ccs, _, _ := unstructured.NestedSlice(cluster.Object, "status", "conditions")
	for _, cc := range ccs {
		m, _ := cc.(map[string]any)
		if m["type"] == schemas.CondUpgrading && m["status"] == "True" {
			c.Upgrading = true
		}
	}
	f.Cluster = c
	return scheme, nil
}

// jobFacts reads the Job's terminal conditions.
func jobFacts(job *batchv1.Job) *Job {
	j := &Job{Name: job.Name}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			j.Complete = true
		case batchv1.JobFailed:
			j.Failed, j.FailedReason, j.FailedMessage = true, c.Reason, c.Message
		}
	}
	return j
}

// lockFacts reads the LockRequest's status; nil when there is none.
func lockFacts(lr *lockv1alpha1.LockRequest) *Lock {
	if lr == nil {
		return nil
	}
	l := &Lock{State: lr.Status.State, HeldBy: lr.Status.HeldBy, Message: lr.Status.Message, Holder: lr.Spec.Holder}
	if c := lr.Status.Chosen; c != nil {
		l.Chosen, l.ChosenSize = c.Key, c.Size
	}
	if s := lr.Status.Submission; s != nil {
		l.Submission = &Submission{Pod: s.Pod, Endpoint: s.Endpoint, At: s.SubmittedAt.Time}
	}
	if c := meta.FindStatusCondition(lr.Status.Conditions, schemas.CondOverride); c != nil && c.Status == metav1.ConditionTrue {
		l.Override = c.Message
	}
	if c := meta.FindStatusCondition(lr.Status.Conditions, schemas.CondLockTaken); c != nil {
		l.Taken = &Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message}
	}
	return l
}

// lockRequest finds the XR's LockRequest: the one whose spec.restore names
// this XR by UID.
func (r *Reconciler) lockRequest(ctx context.Context, c client.Reader, ns string, xr *unstructured.Unstructured) (*lockv1alpha1.LockRequest, error) {
	var list lockv1alpha1.LockRequestList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{schemas.LabelRestore: r.requestName(xr)}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Spec.Restore.UID == string(xr.GetUID()) {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// job finds the XR's Job of a role (schemas.LabelJobRole; "" for the
// restore Job): one controlled by this XR (by UID), or labelled with its
// name when it has no owner.
func (r *Reconciler) job(ctx context.Context, ns string, xr *unstructured.Unstructured, role string) (*batchv1.Job, error) {
	var list batchv1.JobList
	if err := r.Jobs.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{schemas.LabelRestore: r.requestName(xr)}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		j := &list.Items[i]
		ref := metav1.GetControllerOf(j)
		if j.Labels[schemas.LabelJobRole] != role {
			continue
		}
		if ref == nil && len(j.OwnerReferences) == 0 || ref != nil && ref.UID == xr.GetUID() {
			return j, nil
		}
	}
	return nil, nil
}
