// Package fn is the composition function: from an OpenBaoRestore XR, its
// Input, the observed composed resources and the required OpenBaoCluster, it
// decides what should exist and what the XR should say. It makes no API
// calls; the reconciler records what happens.
package fn

import (
	"context"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/crossplane/function-sdk-go/errors"
	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/request"
	"github.com/crossplane/function-sdk-go/resource"
	"github.com/crossplane/function-sdk-go/resource/composed"
	"github.com/crossplane/function-sdk-go/response"

	"github.com/openbao-restore/openbao-restore/input/v1beta1"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// TTL is how long Crossplane may cache a response: the idle requeue. Real
// progress arrives through realtime compositions (a composed resource
// changes) well before it.
const TTL = time.Minute

// Condition types the function owns on the XR and the claim. The reconciler
// owns others; see docs/architecture.md.
const (
	CondValid    = "SpecValid"
	CondComposed = "Composed"
)

// Function is the restore composition function.
type Function struct {
	fnv1.UnimplementedFunctionRunnerServiceServer

	Log logging.Logger
}

// RunFunction composes a restore.
func (f *Function) RunFunction(_ context.Context, req *fnv1.RunFunctionRequest) (*fnv1.RunFunctionResponse, error) {
	rsp := response.To(req, TTL)

	in := &v1beta1.Input{}
	if req.GetInput() != nil {
		if err := request.GetInput(req, in); err != nil {
			response.Fatal(rsp, errors.Wrap(err, "cannot read the function's Input: check the Composition's pipeline step input"))
			return rsp, nil
		}
	}
	set := SettingsFrom(in)

	oxr, err := request.GetObservedCompositeResource(req)
	if err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot read the observed XR"))
		return rsp, nil
	}
	dxr, err := request.GetDesiredCompositeResource(req)
	if err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot read the desired XR"))
		return rsp, nil
	}
	observed, err := request.GetObservedComposedResources(req)
	if err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot read the observed composed resources"))
		return rsp, nil
	}
	desired, err := request.GetDesiredComposedResources(req)
	if err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot read the desired composed resources"))
		return rsp, nil
	}

	r := restoreOf(oxr.Resource.Object)
	rawSpec, _ := oxr.Resource.Object["spec"].(map[string]any)
	spec, vs, err := schemas.Validate(rawSpec, set.Policy())
	if err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot validate the spec"))
		return rsp, nil
	}
	if r.Namespace == "" {
		vs = append(vs, schemas.Violation{Path: "spec.claimRef", Message: "a cluster-scoped XOpenBaoRestore needs a claim: create an OpenBaoRestore in the OpenBaoCluster's namespace instead"})
		spec = nil
	}

	var cluster *Cluster
	resolved := false
	if spec != nil {
		require(rsp, spec.Cluster, r.Namespace)
		cluster, resolved, err = requiredCluster(req)
		if err != nil {
			response.Fatal(rsp, errors.Wrap(err, "cannot read the required OpenBaoCluster"))
			return rsp, nil
		}
	}

	o := observe(observed)
	p := Decide(r, spec, vs, resolved, cluster, o)
	f.Log.Debug("Decided", "xr", r.Name, "stage", p.Stage)

	n := NamesFor(r.Name)
	compose := map[resource.Name]runtime.Object{}
	if p.RBAC {
		compose[resServiceAccount] = ServiceAccount(r, spec, n)
		compose[resRole] = Role(r, spec, n)
		compose[resRoleBinding] = RoleBinding(r, spec, n)
	}
	if p.Lock {
		compose[resLock] = LockRequest(r, spec, n)
	}
	if p.Job {
		compose[resJob] = Job(r, spec, cluster, p.Auth, set, n)
	}
	for k, obj := range compose {
		cd, err := composed.From(obj)
		if err != nil {
			response.Fatal(rsp, errors.Wrapf(err, "cannot compose %s", k))
			return rsp, nil
		}
		desired[k] = &resource.DesiredComposed{Resource: cd, Ready: readiness(k, o)}
	}
	if p.KeepObservedJob {
		desired[resJob] = &resource.DesiredComposed{Resource: keepJob(o.Job), Ready: readiness(resJob, o)}
	}
	if err := response.SetDesiredComposedResources(rsp, desired); err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot set the desired composed resources"))
		return rsp, nil
	}

	// The XR is Ready once the restore has Completed: the Job alone is not
	// the end, the reconciler still restarts the pods.
	dxr.Ready = resource.ReadyFalse
	if r.Phase == schemas.PhaseCompleted {
		dxr.Ready = resource.ReadyTrue
	}
	if err := dxr.Resource.SetValue("status.plan", planStatus(r, spec, p, n)); err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot set the XR's status"))
		return rsp, nil
	}
	if err := response.SetDesiredCompositeResource(rsp, dxr); err != nil {
		response.Fatal(rsp, errors.Wrap(err, "cannot set the desired XR"))
		return rsp, nil
	}

	// Say what happened. Expected states are never Fatal: Fatal would wipe
	// the reconciler's conditions.
	if p.Stage == StageInvalid {
		response.ConditionFalse(rsp, CondValid, string(StageInvalid)).WithMessage(p.Message).TargetCompositeAndClaim()
		for _, v := range p.Violations {
			response.Warning(rsp, errors.New(v.Message)).WithReason(string(StageInvalid)).TargetCompositeAndClaim()
		}
	} else {
		response.ConditionTrue(rsp, CondValid, "Valid").TargetCompositeAndClaim()
	}
	status := response.ConditionFalse
	if p.Stage == StageJobComposed || p.Stage == StageJobComplete || p.Stage == StageFinished {
		status = response.ConditionTrue
	}
	status(rsp, CondComposed, string(p.Stage)).WithMessage(p.Message).TargetCompositeAndClaim()
	if p.Stage == StageWaitingCluster {
		response.Warning(rsp, errors.New(p.Message)).WithReason(string(p.Stage)).TargetCompositeAndClaim()
	}
	return rsp, nil
}

// restoreOf reads the restore's identity from the observed XR.
func restoreOf(xr map[string]any) Restore {
	md, _ := xr["metadata"].(map[string]any)
	spec, _ := xr["spec"].(map[string]any)
	st, _ := xr["status"].(map[string]any)
	r := Restore{
		APIVersion: str(xr["apiVersion"]),
		Kind:       str(xr["kind"]),
		Name:       str(md["name"]),
		UID:        str(md["uid"]),
		Namespace:  str(md["namespace"]),
		Phase:      str(st["phase"]),
	}
	r.RequestName = r.Name
	// A legacy XR is cluster scoped: its claim says where the restore runs.
	// A namespaced (v2) XR has spec.crossplane instead and no claim.
	if r.Namespace == "" {
		if ref, ok := spec["claimRef"].(map[string]any); ok {
			r.Namespace = str(ref["namespace"])
			r.ClaimName = str(ref["name"])
			if r.ClaimName != "" {
				r.RequestName = r.ClaimName
			}
		}
	}
	return r
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// require asks for the OpenBaoCluster through both protocol fields: Crossplane
// v1 only reads extra_resources and silently ignores resources.
func require(rsp *fnv1.RunFunctionResponse, name, ns string) {
	sel := func(withNS bool) *fnv1.ResourceSelector {
		s := &fnv1.ResourceSelector{
			ApiVersion: schemas.ClusterGroup + "/" + schemas.ClusterVersion,
			Kind:       schemas.ClusterKind,
			Match:      &fnv1.ResourceSelector_MatchName{MatchName: name},
		}
		if withNS {
			s.Namespace = &ns
		}
		return s
	}
	if rsp.Requirements == nil {
		rsp.Requirements = &fnv1.Requirements{}
	}
	rsp.Requirements.Resources = map[string]*fnv1.ResourceSelector{reqCluster: sel(true)}
	//nolint:staticcheck // v1 control planes read only this field.
	rsp.Requirements.ExtraResources = map[string]*fnv1.ResourceSelector{reqCluster: sel(false)}
}

// requiredCluster reads the OpenBaoCluster from whichever field Crossplane
// filled. resolved is false until Crossplane has looked it up.
func requiredCluster(req *fnv1.RunFunctionRequest) (*Cluster, bool, error) {
	rs, ok, err := request.GetRequiredResource(req, reqCluster)
	if err != nil {
		return nil, true, err
	}
	if !ok {
		//nolint:staticcheck // v1 control planes fill only this field.
		extra, err := request.GetExtraResources(req)
		if err != nil {
			return nil, true, err
		}
		if rs, ok = extra[reqCluster]; !ok {
			return nil, false, nil
		}
	}
	if len(rs) == 0 {
		return nil, true, nil
	}
	o := rs[0].Resource.Object
	c := &Cluster{Replicas: 1}
	if v, ok := dig(o, "spec", "replicas").(int64); ok {
		c.Replicas = v
	} else if v, ok := dig(o, "spec", "replicas").(float64); ok {
		c.Replicas = int64(v)
	}
	c.TLS, _ = dig(o, "spec", "tls", "enabled").(bool)
	c.OIDC, _ = dig(o, "spec", "selfInit", "oidc", "enabled").(bool)
	c.Initialized, _ = dig(o, "status", "initialized").(bool)
	return c, true, nil
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// observe reads the state of the composed resources.
func observe(oc map[resource.Name]resource.ObservedComposed) Observed {
	var o Observed
	if l, ok := oc[resLock]; ok {
		o.LockExists = true
		o.LockState, _ = dig(l.Resource.Object, "status", "state").(string)
		o.LockHeldBy, _ = dig(l.Resource.Object, "status", "heldBy").(string)
	}
	if j, ok := oc[resJob]; ok {
		o.Job = j.Resource.Object
		conds, _ := dig(j.Resource.Object, "status", "conditions").([]any)
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			if str(cm["status"]) != "True" {
				continue
			}
			switch str(cm["type"]) {
			case "Complete":
				o.JobComplete = true
			case "Failed":
				o.JobFailed = true
			}
		}
	}
	return o
}

// readiness tells Crossplane when a composed resource is ready.
func readiness(k resource.Name, o Observed) resource.Ready {
	switch k {
	case resLock:
		if o.LockState == schemas.LockHeld {
			return resource.ReadyTrue
		}
		return resource.ReadyFalse
	case resJob:
		if o.JobComplete {
			return resource.ReadyTrue
		}
		return resource.ReadyFalse
	}
	return resource.ReadyTrue
}

// keepJob re-emits an observed Job with only what we set: identity, labels
// and spec. Sending it back unchanged keeps a changed Input from ever
// touching a Job's immutable template.
func keepJob(obs map[string]any) *composed.Unstructured {
	md, _ := obs["metadata"].(map[string]any)
	keep := map[string]any{"name": md["name"], "namespace": md["namespace"]}
	if l, ok := md["labels"].(map[string]any); ok {
		labels := map[string]any{}
		for k, v := range l {
			if strings.HasPrefix(k, "restore.openbao-restore.io/") {
				labels[k] = v
			}
		}
		keep["labels"] = labels
	}
	return &composed.Unstructured{Unstructured: unstructured.Unstructured{Object: map[string]any{
		"apiVersion": obs["apiVersion"],
		"kind":       obs["kind"],
		"metadata":   keep,
		"spec":       obs["spec"],
	}}}
}

// planStatus is what the function says in status.plan: the names of what it
// composes and how the executor authenticates.
func planStatus(r Restore, spec *schemas.Spec, p Plan, n Names) map[string]any {
	s := map[string]any{"stage": string(p.Stage), "namespace": r.Namespace}
	if spec == nil {
		return s
	}
	s["lockRequest"] = n.Lock
	s["job"] = n.Job
	s["serviceAccount"] = n.ServiceAccount
	if p.Auth.Method != "" {
		s["authMethod"] = p.Auth.Method
	}
	return s
}
