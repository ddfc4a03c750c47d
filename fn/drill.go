package fn

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/crossplane/function-sdk-go/errors"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/resource"
	"github.com/crossplane/function-sdk-go/resource/composed"
	"github.com/crossplane/function-sdk-go/response"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A drill (OpenBaoRestoreDrill) rehearses a cluster's newest backup. The
// reconciler keeps its time and starts each run in status.active; the
// function composes what the run needs: an OpenBaoRestore claim of a
// Disposable fresh target, then, once it is Completed, a Job of the
// executor that reads the drill's paths from the restored cluster. When
// the reconciler clears status.active, the run is no longer composed, and
// Crossplane deletes it and, with it, its cluster.

// The drill's stages (status.plan.stage, the Composed condition's reason).
const (
	StageDrillIdle     Stage = "Idle"
	StageDrillRunning  Stage = "RunComposed"
	StageDrillChecking Stage = "CheckComposed"
)

// Run is the run under way, from the reconciler's status.active.
type Run struct {
	Number   int64
	Name     string
	Snapshot schemas.SnapshotRef
	// Restored: its restore is Completed (status.active.restoredAt).
	Restored bool
}

// activeRun reads status.active; nil without a run.
func activeRun(st map[string]any) *Run {
	a, _ := st["active"].(map[string]any)
	if a == nil {
		return nil
	}
	r := &Run{}
	switch n := a["run"].(type) {
	case int64:
		r.Number = n
	case float64:
		r.Number = int64(n)
	}
	r.Name = str(a["restore"])
	r.Restored = a["restoredAt"] != nil
	if s := snapshotRef(a["snapshot"]); s != nil {
		r.Snapshot = *s
	}
	if r.Number == 0 || r.Name == "" || r.Snapshot.Key == "" {
		return nil
	}
	return r
}

// runDrill composes a drill's run.
func (f *Function) runDrill(rsp *fnv1.RunFunctionResponse, req *fnv1.RunFunctionRequest, xr map[string]any, set Settings) error {
	d := restoreOf(xr)
	rawSpec, _ := xr["spec"].(map[string]any)
	spec, vs, err := schemas.ValidateDrill(rawSpec, set.Policy())
	if err != nil {
		return errors.Wrap(err, "cannot validate the drill's spec")
	}
	if d.Namespace == "" {
		vs = append(vs, schemas.Violation{Path: "spec.claimRef", Message: "a cluster-scoped XOpenBaoRestoreDrill needs a claim: create an OpenBaoRestoreDrill in the OpenBaoCluster's namespace instead"})
		spec = nil
	}
	st, _ := xr["status"].(map[string]any)
	run := activeRun(st)
	observed := req.GetObserved().GetResources()
	if rsp.Desired == nil {
		rsp.Desired = &fnv1.State{}
	}
	rsp.Desired.Resources = map[string]*fnv1.Resource{}
	stage, msg := StageDrillIdle, "no run under way"
	switch {
	case spec == nil:
		stage, msg = StageInvalid, fmt.Sprintf("the drill's spec is invalid (%d problem(s)); nothing was composed: %s", len(vs), joinViolations(vs))
		// A run under way goes on as it was composed.
		for k, o := range observed {
			rsp.Desired.Resources[k] = &fnv1.Resource{Resource: o.GetResource()}
		}
	case run != nil:
		stage, msg = StageDrillRunning, fmt.Sprintf("run %d restores %s into the new cluster %s", run.Number, run.Snapshot.Key, run.Name)
		key := "run-" + strconv.FormatInt(run.Number, 10)
		if err := desire(rsp, key, RunClaim(d, spec, run, set)); err != nil {
			return err
		}
		phase := field(field(observed[key].GetResource(), "status"), "phase").GetStringValue()
		check := "check-" + strconv.FormatInt(run.Number, 10)
		if len(spec.ReadPaths) > 0 && (run.Restored || phase == schemas.PhaseCompleted || observed[check] != nil) {
			stage, msg = StageDrillChecking, fmt.Sprintf("run %d restored %s into %s; its Job reads the %d path(s) named", run.Number, run.Snapshot.Key, run.Name, len(spec.ReadPaths))
			if err := desire(rsp, check, CheckJob(d, spec, run, set)); err != nil {
				return err
			}
		}
	}
	if spec != nil && len(spec.ReadPaths) > 0 {
		// The read checks' identity stays while the drill checks paths:
		// made anew for each run, a Job could start before its grant.
		n := checkNames(d)
		r := Restore{Name: d.Name, UID: d.UID, Namespace: d.Namespace, RequestName: d.RequestName}
		rs := &schemas.Spec{Cluster: spec.Source.Cluster, DryRun: true}
		for k, o := range map[string]runtime.Object{resServiceAccount: ServiceAccount(r, rs, n), resRole: Role(r, rs, n), resRoleBinding: RoleBinding(r, rs, n)} {
			if err := desire(rsp, k, o); err != nil {
				return err
			}
		}
	}
	plan := &structpb.Struct{Fields: map[string]*structpb.Value{"stage": structpb.NewStringValue(string(stage))}}
	setComposite(rsp, spec != nil, plan)
	if spec == nil {
		response.ConditionFalse(rsp, schemas.CondSpecValid, string(StageInvalid)).WithMessage(msg).TargetCompositeAndClaim()
		for _, v := range vs {
			response.Warning(rsp, errors.New(v.Message)).WithReason(string(StageInvalid)).TargetCompositeAndClaim()
		}
	} else {
		response.ConditionTrue(rsp, schemas.CondSpecValid, "Valid").TargetCompositeAndClaim()
	}
	response.ConditionTrue(rsp, schemas.CondComposed, string(stage)).WithMessage(msg).TargetCompositeAndClaim()
	return nil
}

// desire renders an object into the desired composed resources.
func desire(rsp *fnv1.RunFunctionResponse, key string, o runtime.Object) error {
	cd, err := composed.From(o)
	if err != nil {
		return errors.Wrapf(err, "cannot compose %s", key)
	}
	s, err := resource.AsStruct(cd)
	if err != nil {
		return errors.Wrapf(err, "cannot compose %s", key)
	}
	rsp.Desired.Resources[key] = &fnv1.Resource{Resource: s, Ready: fnv1.Ready_READY_TRUE}
	return nil
}

// RunClaim is a run's OpenBaoRestore: the snapshot the run began with,
// pinned, into a Disposable new cluster from the drill's template. It is
// kept a day at most after the end (the drill deletes it sooner: at its
// own cleanupAfterSeconds).
func RunClaim(d Restore, spec *schemas.DrillSpec, run *Run, set Settings) runtime.Object {
	t := spec.Source.Target
	target, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&t)
	src := map[string]any{"key": run.Snapshot.Key, "target": target}
	for k, v := range map[string]string{"expectedDigest": run.Snapshot.Digest, "expectedClusterID": run.Snapshot.ClusterID, "expectedVersion": run.Snapshot.Version} {
		if v != "" {
			src[k] = v
		}
	}
	if run.Snapshot.Size > 0 {
		src["expectedSize"] = run.Snapshot.Size
	}
	s := map[string]any{
		"cluster": run.Name, "force": true, "targetLifecycle": schemas.LifecycleDisposable, "cleanupAfterSeconds": int64(86400),
		"clusterTemplate": runtime.DeepCopyJSON(spec.ClusterTemplate), "source": src,
	}
	if set.RestoreComposition != "" {
		s["compositionRef"] = map[string]any{"name": set.RestoreComposition}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	u.SetAPIVersion(schemas.Group + "/" + schemas.Version)
	u.SetKind(schemas.ClaimKind)
	u.SetName(run.Name)
	u.SetNamespace(d.Namespace)
	u.SetLabels(map[string]string{schemas.LabelDrill: d.RequestName, schemas.LabelDrillRun: strconv.FormatInt(run.Number, 10)})
	return u
}

// checkNames are the names of a drill's check Job's ServiceAccount, Role
// and RoleBinding (one set per drill; the Job is per run).
func checkNames(d Restore) Names {
	n := name(d.Name, "check")
	return Names{ServiceAccount: n, Role: n, RoleBinding: n}
}

// CheckJob reads the drill's paths from the run's restored cluster: the
// executor in read-check mode, with the drill's token and the new
// cluster's CA, finding the active node among the cluster's pods. No
// store credentials, no lock request: it restores nothing.
func CheckJob(d Restore, spec *schemas.DrillSpec, run *Run, set Settings) *batchv1.Job {
	r := Restore{Name: d.Name, UID: d.UID, Namespace: d.Namespace, RequestName: d.RequestName}
	rs := &schemas.Spec{Cluster: run.Name, Source: schemas.Source{Target: schemas.Target{Provider: spec.Source.Target.Provider}}, TokenSecretRef: spec.TokenSecretRef}
	replicas, _ := spec.ClusterTemplate["replicas"].(float64)
	tlsOff := false
	if tl, ok := spec.ClusterTemplate["tls"].(map[string]any); ok {
		on, set := tl["enabled"].(bool)
		tlsOff = set && !on
	}
	c := &Cluster{Replicas: max(1, int64(replicas)), TLS: !tlsOff}
	n := checkNames(d)
	n.Job = name(run.Name, "check")
	j := Job(r, rs, c, Plan{Auth: schemas.Auth{Method: "token"}}, set, n)
	j.Labels[schemas.LabelJobRole] = schemas.JobRoleReadCheck
	j.Labels[schemas.LabelDrill] = d.RequestName
	j.Labels[schemas.LabelDrillRun] = strconv.FormatInt(run.Number, 10)
	j.Spec.Template.Labels[schemas.LabelJobRole] = schemas.JobRoleReadCheck
	j.Spec.BackoffLimit = ptr.To(int32(0))
	j.Spec.PodFailurePolicy = nil
	ctr := &j.Spec.Template.Spec.Containers[0]
	ctr.Name = "read-check"
	var env []corev1.EnvVar
	for _, e := range ctr.Env {
		switch {
		case e.Name == schemas.EnvExecutorMode:
			e.Value = schemas.ModeReadCheck
		case e.Name == schemas.EnvLockRequestName, e.Name == schemas.EnvDryRun, strings.HasPrefix(e.Name, "BACKUP_"), strings.HasPrefix(e.Name, "RESTORE_"):
			continue
		}
		env = append(env, e)
	}
	ctr.Env = append(env, corev1.EnvVar{Name: schemas.EnvReadPaths, Value: strings.Join(spec.ReadPaths, ",")},
		corev1.EnvVar{Name: schemas.EnvAuthMethod, Value: "token"})
	return j
}
