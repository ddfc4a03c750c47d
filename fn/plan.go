package fn

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// The names of the composed resources in the pipeline, stable across calls.
const (
	resServiceAccount = "serviceaccount"
	resRole           = "role"
	resRoleBinding    = "rolebinding"
	resLock           = "lock"
	resJob            = "job"
	resStepDown       = "step-down"

	// reqCluster is the name of the required OpenBaoCluster, and reqFrom
	// of the one spec.source.fromCluster names when it is another.
	reqCluster = "cluster"
	reqFrom    = "from-cluster"
)

// Restore is what the function knows about the restore from its XR.
type Restore struct {
	// APIVersion, Kind, Name and UID of the XR.
	APIVersion, Kind, Name, UID string
	// Namespace is where the restore runs: the claim's namespace for a
	// legacy XR, the XR's own for a namespaced one.
	Namespace string
	// RequestName is the restore's name as users know it: the claim's for
	// a legacy XR, the XR's for a namespaced one.
	RequestName string
	// ClaimName is set for a legacy XR with a claim.
	ClaimName string
	// Phase is the observed status.phase (the reconciler writes it).
	Phase string
	// Chosen is the snapshot the function chose earlier for a restore
	// with no key (status.plan.snapshot): it is kept, so that a newer
	// backup landing meanwhile does not change what is restored.
	Chosen *schemas.SnapshotRef
	// StepDownPod is the leader the reconciler's restart asked to step
	// down (status.restart.stepDown), while that step-down has not ended.
	StepDownPod string
	// Restarting: the reconciler has begun the restart (status.restart),
	// which it does only once the Job succeeded, or on a Resume.
	Restarting bool
	// TargetExpired: a Disposable fresh target's cleanupAfterSeconds have
	// passed (status.target.expired, the reconciler keeps the time): it is
	// no longer composed, so Crossplane deletes it.
	TargetExpired bool
}

// Cluster is what the function reads of the required OpenBaoCluster.
type Cluster struct {
	Replicas    int64
	TLS         bool
	OIDC        bool
	Initialized bool
	// Audience is spec.selfInit.oidc.audience: the JWT auth role accepts
	// tokens for it only (empty: schemas.DefaultJWTAudience).
	Audience string
	// LockHolder is status.operationLock.holder when the lock's operation
	// is Restore. Crossplane reads the required cluster fresh on every
	// call, while the observed LockRequest comes through the XR's
	// resource references, which a stale XR may lack: the cluster's own
	// lock is what says a restore holds it.
	LockHolder string
	// Latest is status.backup.latestSnapshot, the newest backup.
	Latest *schemas.SnapshotRef
	// From is the cluster spec.source.fromCluster names when it is
	// another one; nil otherwise.
	From *From
	// Origin is the openbao.org/restore-origin annotation: the UID of the
	// restore that created the cluster from a template.
	Origin string
	// Version is status.currentVersion.
	Version string
}

// From is what the function reads of the cluster whose newest backup a
// restore takes (spec.source.fromCluster).
type From struct {
	// Found: it exists.
	Found bool
	// Latest is its status.backup.latestSnapshot.
	Latest *schemas.SnapshotRef
}

// fromOther is spec.source.fromCluster when it names another cluster than
// spec.cluster, "" otherwise.
func fromOther(spec *schemas.Spec) string {
	if f := spec.Source.FromCluster; f != spec.Cluster {
		return f
	}
	return ""
}

// Observed is what the function reads of the composed resources.
type Observed struct {
	// LockState and LockHeldBy are the lock request's status, if observed.
	LockState, LockHeldBy string
	LockExists            bool
	// Job is the observed Job's object, if any.
	Job *structpb.Struct
	// JobComplete and JobFailed are the Job's terminal conditions.
	JobComplete, JobFailed bool
}

// Stage is where the restore stands, as the function sees it.
type Stage string

// The stages, each a reason on the Composed condition.
const (
	StageInvalid          Stage = "InvalidSpec"
	StageWaitingCluster   Stage = "WaitingForCluster"
	StageWaitingLock      Stage = "WaitingForLock"
	StageJobComposed      Stage = "JobComposed"
	StageJobComplete      Stage = "JobComplete"
	StageJobFailed        Stage = "JobFailed"
	StageFinished         Stage = schemas.StageFinished
	StageResolvingCluster Stage = "ResolvingCluster"
)

// Plan is the function's decision: what should exist and what to say.
type Plan struct {
	Stage Stage
	// Message explains the stage to a person.
	Message string
	// Violations are the spec's broken rules (StageInvalid).
	Violations []schemas.Violation

	// What to compose.
	RBAC, Lock, Job bool
	// Target composes the new cluster of a fresh-target restore.
	Target bool
	// KeepObservedJob re-emits the observed Job as it is: a Job's template
	// is immutable, so a changed Input must never alter a running Job.
	KeepObservedJob bool
	// StepDown composes the step-down Job the reconciler's restart asked
	// for: the executor, with the restore's credentials, asks the leader
	// to step down before its pod is restarted.
	StepDown bool

	// Auth resolved for the Job.
	Auth schemas.Auth
	// Snapshot is the snapshot chosen when spec.source.key is unset.
	Snapshot schemas.SnapshotRef
	// Newest: no key and no newest backup reported; the executor
	// restores the newest object under the path prefix.
	Newest bool
}

// Decide is the pure decision at the heart of the function. spec is nil when
// it did not validate (vs then says why). cluster is nil while the cluster is
// missing; resolved says whether Crossplane has looked it up yet.
func Decide(r Restore, spec *schemas.Spec, vs []schemas.Violation, resolved bool, cluster *Cluster, o Observed) Plan {
	holder := schemas.Holder(r.RequestName, r.UID)
	terminal := schemas.Terminal(r.Phase)

	// A Job once composed stays until the XR goes: dropping it would delete
	// a pod that may be mid-submission, and composing it again could run a
	// second restore.
	keepJob := o.Job != nil

	if spec == nil {
		return Plan{Stage: StageInvalid, Violations: vs, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("the restore's spec is invalid (%d problem(s)); nothing was composed: %s", len(vs), joinViolations(vs))}
	}
	if !resolved {
		return Plan{Stage: StageResolvingCluster, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("looking up OpenBaoCluster %s in namespace %s", spec.Cluster, r.Namespace)}
	}
	if spec.Fresh() {
		if p, done := decideTarget(r, spec, cluster, keepJob); done {
			return p
		}
	}
	if cluster == nil {
		// Without the cluster there is nothing to lock or restore into.
		// A lock request already composed stays, so that its finalizer,
		// not garbage collection order, decides the release.
		return Plan{Stage: StageWaitingCluster, KeepObservedJob: keepJob, Lock: o.LockExists && !terminal,
			Message: fmt.Sprintf("OpenBaoCluster %s was not found in namespace %s: create it, or correct spec.cluster", spec.Cluster, r.Namespace)}
	}
	auth, v := schemas.ResolveAuth(spec, cluster.OIDC || spec.Fresh())
	if v != nil {
		vs = append(vs, *v)
		return Plan{Stage: StageInvalid, Violations: vs, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("the restore's spec is invalid (%d problem(s)); nothing was composed: %s", len(vs), joinViolations(vs))}
	}

	// No key: the snapshot chosen before, else the newest backup of the
	// cluster, or of the one spec.source.fromCluster names. Another
	// cluster's snapshot carries its own identity: its cluster ID is not
	// pinned (spec.force is required for it).
	var snap schemas.SnapshotRef
	newest := false
	if spec.Source.Key == "" {
		name, latest := spec.Cluster, cluster.Latest
		if f := cluster.From; f != nil {
			name, latest = spec.Source.FromCluster, nil
			if !f.Found && r.Chosen == nil {
				return Plan{Stage: StageWaitingCluster, KeepObservedJob: keepJob, Lock: o.LockExists && !terminal,
					Message: fmt.Sprintf("OpenBaoCluster %s (spec.source.fromCluster) was not found in namespace %s: create it, or correct spec.source.fromCluster", name, r.Namespace)}
			}
			if f.Latest != nil {
				l := *f.Latest
				l.ClusterID = ""
				latest = &l
			}
		}
		switch {
		case r.Chosen != nil:
			snap = *r.Chosen
		case latest != nil:
			snap = *latest
		case strings.Trim(spec.Source.Target.PathPrefix, "/") != "":
			// Neither: the executor takes the newest object under the
			// path prefix, and records its choice.
			newest = true
		default:
			vs = append(vs, schemas.Violation{Path: "spec.source.key", Message: schemas.MsgNoSnapshot(name)})
			return Plan{Stage: StageInvalid, Violations: vs, KeepObservedJob: keepJob,
				Message: fmt.Sprintf("the restore's spec is invalid (%d problem(s)); nothing was composed: %s", len(vs), joinViolations(vs))}
		}
	}

	// A dry run takes no lock: it sends nothing, and must never make a
	// backup or an upgrade wait.
	p := Plan{Auth: auth, RBAC: !terminal, Lock: !terminal && !spec.DryRun, KeepObservedJob: keepJob, Snapshot: snap,
		StepDown: !terminal && !spec.DryRun && r.StepDownPod != "", Target: spec.Fresh(), Newest: newest}
	held := o.LockState == schemas.LockHeld && o.LockHeldBy == holder || cluster.LockHolder == holder
	job := "restore Job"
	if spec.DryRun {
		job = "dry run's Job"
	}
	// One message while the Job is composed and runs, whether or not this
	// call observes it: the view never goes back within a stage.
	running := "the " + job + " is running"
	switch {
	case spec.DryRun:
		running = fmt.Sprintf("dry run: the Job that checks the restore into OpenBaoCluster %s is running; no lock is taken and nothing is sent", spec.Cluster)
	case held:
		running = fmt.Sprintf("the operation lock of OpenBaoCluster %s is held; %s", spec.Cluster, running)
	}
	// A call may observe the Job from a cache that lags behind its
	// completion; the reconciler's restart says it completed, so the view
	// does not go back to "running" (a Resume after a failed Job excepted).
	jobComplete := o.JobComplete || r.Restarting && !o.JobFailed
	switch {
	case terminal:
		p.Stage = StageFinished
		p.Message = fmt.Sprintf("the restore is %s", r.Phase)
	case jobComplete && spec.DryRun:
		p.Stage = StageJobComplete
		p.Message = "the dry run's Job succeeded: see status.dryRun for its report"
	case jobComplete:
		// Not observed (a stale call): still desired, as it was.
		p.Job = !keepJob && held
		p.Stage = StageJobComplete
		p.Message = "the restore Job succeeded; the reconciler restarts the OpenBao pods and then releases the lock"
	case o.JobFailed:
		p.Stage = StageJobFailed
		p.Message = "the " + job + " failed; see the restore's phase and message"
	case keepJob:
		p.Stage = StageJobComposed
		p.Message = running
	case held || spec.DryRun:
		p.Stage = StageJobComposed
		p.Job = true
		p.Message = running
	default:
		p.Stage = StageWaitingLock
		p.Message = fmt.Sprintf("waiting for the operation lock of OpenBaoCluster %s", spec.Cluster)
		if o.LockState == schemas.LockWaiting && o.LockHeldBy != "" {
			p.Message += " (held by " + o.LockHeldBy + ")"
		}
	}
	return p
}

func joinViolations(vs []schemas.Violation) string {
	s := ""
	for i, v := range vs {
		if i > 0 {
			s += "; "
		}
		s += v.Message
	}
	return s
}
