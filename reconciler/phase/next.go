// Package phase follows a restore from its XR, its LockRequest, its Job and
// the Job's pods, and writes the restore's phase, times, snapshot and
// message (the fields docs/architecture.md gives the reconciler). Next is
// the pure decision; Reconciler does the I/O.
//
// Decisions worth knowing:
//   - Pending until the lock is held (a lock that waits on a Backup or an
//     Upgrade keeps the restore Pending), Validating while the lock is held
//     and the Job is not yet composed, Running once the Job exists.
//   - The spec is checked against the contract with a permissive policy:
//     the operator's policy (allowed images, insecure endpoints) lives in
//     the function's Input, which the reconciler cannot read, so a policy
//     refusal arrives as the function's SpecValid=False condition instead.
//   - A failed Job is Failed only when the LockRequest, read fresh from the
//     API, holds no submission record, no pod exited 11 and no termination
//     message says submitted; anything else, including a LockRequest that
//     is gone, is Unknown.
//   - A complete Job starts the follow-through (reconciler/restart): the phase
//     stays Running while the OpenBao pods restart behind health gates,
//     and becomes Completed when all are back, or Unknown when a gate
//     times out. The executor reporting OpenBao sealed after the restore
//     is Unknown at once: a restart cannot unseal it.
//   - Unknown changes only by an acknowledgement: Abandon ends Failed;
//     Resume sends the restore back to Running to re-run the gates and
//     finish the restart (the one move back to an earlier phase).
//   - "Upgrading" is the OpenBaoCluster's condition of that type being
//     True (an Upgrade lock already makes the lock request wait).
package phase

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// Event is a Kubernetes event to emit (the restart's events are too).
type Event = restart.Event

var rank = map[string]int{
	"": 0, schemas.PhasePending: 1, schemas.PhaseValidating: 2, schemas.PhaseRunning: 3,
	schemas.PhaseUnknown: 4, schemas.PhaseCompleted: 5, schemas.PhaseFailed: 5,
}

// Next decides the restore's status from the current one and the facts,
// and the events of the transition. Phases only move forward; Completed
// and Failed never change; Unknown changes only by an acknowledgement.
func Next(cur Status, f Facts) (Status, []Event) {
	if schemas.Terminal(cur.Phase) {
		return cur, nil
	}
	next := cur
	next.Conditions = lockConditions(f.Lock)
	if s := safety(cur.SafetySnapshot, f); s != nil {
		next.SafetySnapshot = s
	}
	if l := f.Lock; l != nil && l.Chosen != "" && next.SnapshotKey == "" {
		// The executor's choice of the newest object, shown as it is made.
		next.SnapshotKey, next.SnapshotSize = l.Chosen, l.ChosenSize
	}
	switch {
	case cur.Phase == schemas.PhaseUnknown:
		return unknown(cur, next, f)
	case f.Lock.taken() && f.Lock.Submission != nil && (cur.Restart == nil || cur.Restart.Acknowledged == ""):
		// Sent under a lock that another operation took: what that
		// operation did to the cluster meanwhile is not ours to judge,
		// and the pods are not restarted under its lock.
		next.Phase = schemas.PhaseUnknown
		next.Message = fmt.Sprintf("the snapshot was submitted (pod %s at %s), but the cluster's operation lock was taken from the restore (%s); whether the restore took effect and what that "+
			"operation did meanwhile is not confirmed, so the pods are not restarted and nothing is retried. Check the cluster's data, then %s",
			f.Lock.Submission.Pod, f.Lock.Submission.At.UTC().Format(time.RFC3339), f.Lock.Taken.Message, schemas.AckHint(f.UID, "to restart the pods once the lock is back"))
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "Unknown", Reason: "LockTaken", Message: next.Message})
		return finish(cur, next, f)
	case cur.Restart != nil:
		// The Job succeeded: only the restart decides from here.
		return restarting(cur, next, f)
	}
	switch {
	case len(f.Violations) > 0 || f.FunctionInvalid != "":
		if f.Job == nil {
			next.Phase = schemas.PhaseFailed
			next.Message = invalidMessage(f)
			next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "InvalidSpec", Message: next.Message})
			break
		}
		// A Job exists, so the function found the spec valid when it
		// composed it: follow the Job rather than a later verdict.
		next = followJob(next, f)
	case f.Job != nil:
		next = followJob(next, f)
	case f.Fresh != nil && !targetUp(f):
		next = bootstrapping(next, f)
	case f.Cluster == nil:
		next.Phase, next.Message = schemas.PhasePending, "waiting for the OpenBaoCluster named by spec.cluster: it does not exist in the restore's namespace"
	case !f.Force && !f.Cluster.Initialized:
		next.Phase, next.Message = schemas.PhasePending, "waiting for the OpenBaoCluster to be initialized (or set spec.force to restore into an uninitialized cluster)"
	case !f.Force && f.Cluster.Upgrading:
		next.Phase, next.Message = schemas.PhasePending, "waiting for the OpenBaoCluster's upgrade to finish (or set spec.force)"
	case f.DryRun:
		next.Phase, next.Message = schemas.PhaseValidating, "dry run: no lock is taken; waiting for the dry run's Job"
	case f.Lock != nil && f.Lock.State == schemas.LockWaiting:
		next.Phase, next.Message = schemas.PhasePending, "waiting for the operation lock: "+f.Lock.Message
	case f.Lock != nil && f.Lock.State == schemas.LockHeld && f.Lock.HeldBy == f.Lock.Holder:
		next.Phase, next.Message = schemas.PhaseValidating, "the operation lock is held; waiting for the restore Job"
	default:
		// A lock not yet answered may still have to wait: stay Pending,
		// so that a wait never follows Validating.
		next.Phase, next.Message = schemas.PhasePending, "the spec and the cluster are valid; requesting the operation lock"
	}
	// Monotonic: never back to an earlier phase; keep the later one and
	// say what is awaited now.
	if rank[next.Phase] < rank[cur.Phase] {
		next.Phase = cur.Phase
	}
	if next.Restart != nil {
		return restarting(cur, next, f)
	}
	return finish(cur, next, f)
}

// restarting takes the follow-through one step (restart.Step).
func restarting(cur, next Status, f Facts) (Status, []Event) {
	if f.Cluster == nil {
		next.Phase = schemas.PhaseFailed
		next.Message = "the snapshot was restored, but the OpenBaoCluster was deleted before its pods were restarted; nothing is left to restart"
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "ClusterDeleted", Message: next.Message})
		return finish(cur, next, f)
	}
	to := f.Timeouts
	if to == (restart.Timeouts{}) {
		to = restart.DefaultTimeouts
	}
	r, phase, msg, evs := restart.Step(*next.Restart, f.Members, f.UID, to, f.Now.UTC().Truncate(time.Second))
	next.Restart, next.Phase, next.Message = &r, phase, msg
	switch {
	case f.Members != nil && f.Members.Refused != "" && r.AwaitsEviction(f.Members):
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestartBlocked, Status: "True", Reason: f.Members.RefusedReason, Message: f.Members.Refused})
	case find(cur.Conditions, schemas.CondRestartBlocked) != nil:
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestartBlocked, Status: "False", Reason: "Evicted",
			Message: "the pod the API refused to evict was evicted"})
	}
	switch phase {
	case schemas.PhaseCompleted:
		next.Message = restoredMessage(next) + "; " + msg + undoHint(next.SafetySnapshot)
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "True", Reason: "Restored", Message: next.Message})
	case schemas.PhaseUnknown:
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "Unknown", Reason: "RestartStuck", Message: msg})
	default:
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "Unknown", Reason: "RestartingPods",
			Message: "the snapshot was restored; the OpenBao pods are being restarted"})
	}
	out, fevs := finish(cur, next, f)
	return out, append(evs, fevs...)
}

// followJob decides from the Job.
func followJob(next Status, f Facts) Status {
	if f.DryRun {
		return followDryRun(next, f)
	}
	j := f.Job
	switch {
	case j.Complete:
		next.Phase = schemas.PhaseRunning
		t := lastTermination(j)
		if t != nil {
			next.SnapshotKey, next.SnapshotSize = t.SnapshotKey, t.SnapshotSize
		}
		if c := identityChanged(t); c != nil && f.Fresh == nil {
			// A fresh target takes the snapshot's identity by design.
			next.Conditions = append(next.Conditions, *c)
		}
		if t != nil && t.Sealed != nil && *t.Sealed {
			next.Phase = schemas.PhaseUnknown
			next.Message = sealedMessage(f.UID)
			next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "Unknown", Reason: "Sealed", Message: next.Message})
			break
		}
		now := metav1.NewTime(f.Now.UTC().Truncate(time.Second))
		next.Restart = &restart.Restart{StartedAt: &now}
	case j.Failed:
		if p := refused(f); p != nil {
			next.Phase = schemas.PhaseFailed
			next.Message = refusedMessage(p)
			next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "Refused", Message: next.Message})
		} else if known, why := submitted(f); known || f.Lock == nil {
			next.Phase = schemas.PhaseUnknown
			next.Message = unknownMessage(f, why)
			next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "Unknown", Reason: "Unconfirmed", Message: next.Message})
		} else {
			next.Phase = schemas.PhaseFailed
			next.Message = failedMessage(j)
			next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "JobFailed", Message: next.Message})
		}
	case f.Cluster == nil && f.Lock != nil && f.Lock.Submission == nil:
		// The cluster went away before anything was submitted: there is
		// nothing left to restore into.
		next.Phase = schemas.PhaseFailed
		next.Message = fmt.Sprintf("the OpenBaoCluster was deleted while the restore Job %s ran, before any submission; nothing was restored", j.Name)
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "ClusterDeleted", Message: next.Message})
	default:
		next.Phase = schemas.PhaseRunning
		next.Message = fmt.Sprintf("the restore Job %s is running", j.Name)
	}
	return next
}

// identityChanged is the IdentityChanged condition when the executor saw
// the cluster's identity change (it did not fail: no expectedClusterID was
// pinned). A same-seal-key snapshot of another cluster is a legitimate
// migration as often as a mistake, so the restore goes on, and says so
// where a person and an alert will see it: a condition that stays and a
// Warning event, not an Unknown that would hold the lock until someone
// answers.
func identityChanged(t *schemas.TerminationMessage) *Condition {
	if t == nil || t.ClusterIDBefore == "" || t.ClusterIDAfter == "" || t.ClusterIDBefore == t.ClusterIDAfter {
		return nil
	}
	return &Condition{Type: schemas.CondIdentityChanged, Status: "True", Reason: "ClusterIDChanged",
		Message: fmt.Sprintf("the cluster's identity changed: cluster_id %s before the restore, %s after; the snapshot came from another cluster "+
			"sharing the seal key, whose data, tokens and identity are now in place. With spec.expectedClusterID pinned, such a restore stops Unknown, lock held, before the pods restart", t.ClusterIDBefore, t.ClusterIDAfter)}
}

// submitted reports whether anything says the snapshot may have reached
// OpenBao, and what.
func submitted(f Facts) (bool, string) {
	if f.Lock != nil && f.Lock.Submission != nil {
		s := f.Lock.Submission
		return true, fmt.Sprintf("pod %s recorded a submission to %s at %s", s.Pod, s.Endpoint, s.At.UTC().Format(time.RFC3339))
	}
	for _, p := range f.Job.Pods {
		if p.ExitCode == schemas.ExitUnconfirmed {
			return true, fmt.Sprintf("pod %s exited %d (submitted, outcome unconfirmed)", p.Name, p.ExitCode)
		}
		if p.Termination != nil && p.Termination.Submitted {
			return true, fmt.Sprintf("pod %s reported the snapshot as submitted", p.Name)
		}
	}
	if f.Lock == nil {
		return false, "the lock request, which holds the submission record, is gone, so whether the snapshot was submitted is not known"
	}
	return false, ""
}

// refused returns the pod that sent the whole snapshot and got OpenBao's
// definite refusal: exit 2, 3 or 4 after the submission, each an error
// answer from OpenBao itself (the executor posts to the leader's pod, with
// no proxy between). OpenBao writes the body to a temporary file, verifies
// it, and only after answering 204 applies it in the background
// (vault/logical_system_raft.go, handleStorageRaftSnapshotWrite), so an
// error answer means nothing was applied. nil unless that is certain: the
// pod's termination message says so, the submission record is that pod's,
// and no other pod's outcome is in doubt.
func refused(f Facts) *Pod {
	j := f.Job
	if f.Lock == nil || len(j.Pods) == 0 {
		return nil
	}
	p := &j.Pods[len(j.Pods)-1]
	t := p.Termination
	if t == nil || !t.Submitted || int32(t.ExitCode) != p.ExitCode {
		return nil
	}
	switch p.ExitCode {
	case schemas.ExitAuth, schemas.ExitLeader, schemas.ExitSnapshot:
	default:
		return nil
	}
	// The tail leaves only after its record: a record of this pod's says
	// no other pod sent the snapshot.
	if s := f.Lock.Submission; s == nil || s.Pod != p.Name {
		return nil
	}
	for _, o := range j.Pods[:len(j.Pods)-1] {
		if o.ExitCode == schemas.ExitUnconfirmed || o.Termination == nil || o.Termination.Submitted {
			return nil
		}
	}
	return p
}

func lastTermination(j *Job) *schemas.TerminationMessage {
	for i := len(j.Pods) - 1; i >= 0; i-- {
		if j.Pods[i].Termination != nil {
			return j.Pods[i].Termination
		}
	}
	return nil
}

// unknown resolves an Unknown restore by its acknowledgement. A Resume
// is acted on once: the restart records it, and the annotation must be
// removed and set again to resume a second time.
func unknown(cur, next Status, f Facts) (Status, []Event) {
	var r restart.Restart
	if cur.Restart != nil {
		r = *cur.Restart
	}
	if f.Ack == "" && r.Acknowledged != "" {
		r.Acknowledged = ""
		next.Restart = &r
		return finish(cur, next, f)
	}
	uid, ack, ok := strings.Cut(f.Ack, "/")
	if !ok || uid != f.UID || f.Ack == r.Acknowledged {
		return finish(cur, next, f)
	}
	switch ack {
	case schemas.AckAbandon:
		next.Phase = schemas.PhaseFailed
		next.Message = "abandoned by acknowledgement (" + schemas.AcknowledgeAnnotation + "=" + f.Ack + "); the lock is released"
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: "Acknowledged", Message: next.Message})
		return finish(cur, next, f)
	case schemas.AckResume:
		now := metav1.NewTime(f.Now.UTC().Truncate(time.Second))
		r.Acknowledged, r.StartedAt, r.CompletedAt = f.Ack, &now, nil
		next.Restart = &r
		return restarting(cur, next, f)
	}
	return finish(cur, next, f)
}
