// Package fn is the composition function: from an OpenBaoRestore XR, its
// Input, the observed composed resources and the required OpenBaoCluster, it
// decides what should exist and what the XR should say. It makes no API
// calls; the reconciler records what happens.
package fn

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/utils/lru"

	"github.com/crossplane/function-sdk-go/errors"
	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/request"
	"github.com/crossplane/function-sdk-go/resource"
	"github.com/crossplane/function-sdk-go/response"

	"github.com/openbao-restore/openbao-restore/input/v1beta1"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// TTL is how long Crossplane may cache a response: the idle requeue. Real
// progress arrives through realtime compositions (a composed resource
// changes) well before it.
const TTL = time.Minute

// Function is the restore composition function.
type Function struct {
	fnv1.UnimplementedFunctionRunnerServiceServer

	Log logging.Logger

	once     sync.Once
	rendered *lru.Cache // renderKey → *structpb.Struct (compose.go)
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
	if schemas.IsDrill(oxr.Resource.GetKind()) {
		if err := f.runDrill(rsp, req, oxr.Resource.Object, set); err != nil {
			response.Fatal(rsp, err)
		}
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
		vs = append(vs, schemas.Violation{Path: "spec.claimRef", Message: schemas.MsgNeedsClaim})
		spec = nil
	}

	var cluster *Cluster
	resolved := false
	if spec != nil {
		from := fromOther(spec)
		require(rsp, spec.Cluster, from, r.Namespace)
		cluster, resolved, err = requiredCluster(req, reqCluster)
		if err != nil {
			response.Fatal(rsp, errors.Wrap(err, "cannot read the required OpenBaoCluster"))
			return rsp, nil
		}
		if from != "" && cluster != nil {
			// The source cluster: only its newest backup matters.
			src, ok, err := requiredCluster(req, reqFrom)
			if err != nil {
				response.Fatal(rsp, errors.Wrap(err, "cannot read the OpenBaoCluster of spec.source.fromCluster"))
				return rsp, nil
			}
			resolved = resolved && ok
			cluster.From = &From{Found: src != nil}
			if src != nil {
				cluster.From.Latest = src.Latest
			}
		}
	}

	o := observe(req.GetObserved().GetResources())
	p := Decide(r, spec, vs, resolved, cluster, o)
	f.Log.Debug("Decided", "xr", r.Name, "stage", p.Stage)

	if err := f.compose(rsp, req, r, spec, cluster, set, p, o); err != nil {
		response.Fatal(rsp, err)
		return rsp, nil
	}

	// The XR is Ready once the restore has Completed: the Job alone is not
	// the end, the reconciler still restarts the pods.
	setComposite(rsp, r.Phase == schemas.PhaseCompleted, planStatus(r, spec, p, NamesFor(r.Name)))

	// Say what happened. Expected states are never Fatal: Fatal would wipe
	// the reconciler's conditions.
	if p.Stage == StageInvalid {
		response.ConditionFalse(rsp, schemas.CondSpecValid, string(StageInvalid)).WithMessage(p.Message).TargetCompositeAndClaim()
		for _, v := range p.Violations {
			response.Warning(rsp, errors.New(v.Message)).WithReason(string(StageInvalid)).TargetCompositeAndClaim()
		}
	} else {
		response.ConditionTrue(rsp, schemas.CondSpecValid, "Valid").TargetCompositeAndClaim()
	}
	status := response.ConditionFalse
	if p.Stage == StageJobComposed || p.Stage == StageJobComplete || p.Stage == StageFinished {
		status = response.ConditionTrue
	}
	status(rsp, schemas.CondComposed, string(p.Stage)).WithMessage(p.Message).TargetCompositeAndClaim()
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
	if plan, ok := st["plan"].(map[string]any); ok {
		r.Chosen = snapshotRef(plan["snapshot"])
	}
	r.TargetExpired, _ = dig(st, "target", "expired").(bool)
	if rs, ok := st["restart"].(map[string]any); ok {
		r.Restarting = rs["startedAt"] != nil
		if sd, ok := rs["stepDown"].(map[string]any); ok && sd["endedAt"] == nil {
			r.StepDownPod = str(sd["pod"])
		}
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

// snapshotRef reads a snapshot reference (status.plan.snapshot, or the
// cluster's status.backup.latestSnapshot); nil without a key. A digest of
// bare hex is written as the pins are, sha256:<hex>.
func snapshotRef(v any) *schemas.SnapshotRef {
	m, _ := v.(map[string]any)
	if str(m["key"]) == "" {
		return nil
	}
	s := &schemas.SnapshotRef{Key: str(m["key"]), Digest: str(m["digest"]), ClusterID: str(m["clusterID"]), Version: str(m["version"])}
	if len(s.Digest) == 64 && !strings.Contains(s.Digest, ":") {
		s.Digest = "sha256:" + s.Digest
	}
	switch n := m["size"].(type) {
	case int64:
		s.Size = n
	case float64:
		s.Size = int64(n)
	}
	return s
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// require asks for the OpenBaoCluster through both protocol fields: Crossplane
// v1 only reads extra_resources and silently ignores resources.
func require(rsp *fnv1.RunFunctionResponse, name, from, ns string) {
	sel := func(name string, withNS bool) *fnv1.ResourceSelector {
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
	rsp.Requirements.Resources = map[string]*fnv1.ResourceSelector{reqCluster: sel(name, true)}
	//nolint:staticcheck // v1 control planes read only this field.
	rsp.Requirements.ExtraResources = map[string]*fnv1.ResourceSelector{reqCluster: sel(name, false)}
	if from != "" {
		rsp.Requirements.Resources[reqFrom] = sel(from, true)
		//nolint:staticcheck // v1 control planes read only this field.
		rsp.Requirements.ExtraResources[reqFrom] = sel(from, false)
	}
}

// requiredCluster reads a required OpenBaoCluster (reqCluster, reqFrom)
// from whichever field Crossplane filled. resolved is false until
// Crossplane has looked it up.
func requiredCluster(req *fnv1.RunFunctionRequest, name string) (*Cluster, bool, error) {
	rs, ok, err := request.GetRequiredResource(req, name)
	if err != nil {
		return nil, true, err
	}
	if !ok {
		//nolint:staticcheck // v1 control planes fill only this field.
		extra, err := request.GetExtraResources(req)
		if err != nil {
			return nil, true, err
		}
		if rs, ok = extra[name]; !ok {
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
	// TLS is on unless the cluster turns it off, as openbao-operator runs
	// OpenBao (and as the reconciler's health gates read it).
	if on, ok := dig(o, "spec", "tls", "enabled").(bool); !ok || on {
		c.TLS = true
	}
	c.OIDC, _ = dig(o, "spec", "selfInit", "oidc", "enabled").(bool)
	c.Audience, _ = dig(o, "spec", "selfInit", "oidc", "audience").(string)
	c.Initialized, _ = dig(o, "status", "initialized").(bool)
	c.Version, _ = dig(o, "status", "currentVersion").(string)
	c.Origin, _ = dig(o, "metadata", "annotations", schemas.AnnotationRestoreOrigin).(string)
	c.Latest = snapshotRef(dig(o, "status", "backup", "latestSnapshot"))
	if op, _ := dig(o, "status", "operationLock", "operation").(string); op == schemas.OperationRestore {
		c.LockHolder, _ = dig(o, "status", "operationLock", "holder").(string)
	}
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

// observe reads the state of the composed resources straight from the
// request's protobuf structs: converting them to unstructured objects would
// cost a JSON round trip of each on every call.
func observe(oc map[string]*fnv1.Resource) Observed {
	var o Observed
	if l, ok := oc[resLock]; ok {
		o.LockExists = true
		st := field(l.GetResource(), "status")
		o.LockState = field(st, "state").GetStringValue()
		o.LockHeldBy = field(st, "heldBy").GetStringValue()
	}
	if j, ok := oc[resJob]; ok {
		o.Job = j.GetResource()
		for _, c := range field(field(j.GetResource(), "status"), "conditions").GetListValue().GetValues() {
			cs := c.GetStructValue()
			if field(cs, "status").GetStringValue() != "True" {
				continue
			}
			switch field(cs, "type").GetStringValue() {
			case "Complete":
				o.JobComplete = true
			case "Failed":
				o.JobFailed = true
			}
		}
	}
	return o
}

// field is a struct's field; nil when either is missing, which the proto
// getters read as zero values.
func field(s any, name string) *structpb.Value {
	var st *structpb.Struct
	switch v := s.(type) {
	case *structpb.Struct:
		st = v
	case *structpb.Value:
		st = v.GetStructValue()
	}
	return st.GetFields()[name]
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

// keepJob re-emits an observed Job with only what we set: identity, our
// labels and spec. Sending it back unchanged keeps a changed Input from ever
// touching a Job's immutable template.
func keepJob(obs *structpb.Struct) *structpb.Struct {
	md := field(obs, "metadata")
	keep := map[string]*structpb.Value{"name": field(md, "name"), "namespace": field(md, "namespace")}
	labels := map[string]*structpb.Value{}
	for k, v := range field(md, "labels").GetStructValue().GetFields() {
		if strings.HasPrefix(k, schemas.Group+"/") {
			labels[k] = v
		}
	}
	keep["labels"] = structpb.NewStructValue(&structpb.Struct{Fields: labels})
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"apiVersion": field(obs, "apiVersion"),
		"kind":       field(obs, "kind"),
		"metadata":   structpb.NewStructValue(&structpb.Struct{Fields: keep}),
		"spec":       field(obs, "spec"),
	}}
}
