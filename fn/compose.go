package fn

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/lru"

	"github.com/crossplane/function-sdk-go/errors"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/resource"
	"github.com/crossplane/function-sdk-go/resource/composed"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Rendering a typed object into the protobuf struct Crossplane wants costs
// two JSON round trips, most of a call. The result depends only on the
// restore, its validated spec, the cluster's facts and the Input, none of
// which change between the many calls Crossplane makes for one XR, so
// rendered objects are kept, in a least-recently-used cache of this many
// on the Function.
const maxRendered = 4096

type renderKey struct {
	spec    *schemas.Spec // shared by schemas.Validate for equal specs
	restore Restore       // Phase is cleared: it does not change what is rendered
	cluster Cluster
	auth    schemas.Auth
	snap    schemas.SnapshotRef // chosen for a restore with no key
	newest  bool                // the executor chooses it
	input   string              // the Input, deterministically marshalled
	res     resource.Name
}

// compose sets the desired composed resources the plan asks for.
func (f *Function) compose(rsp *fnv1.RunFunctionResponse, req *fnv1.RunFunctionRequest, r Restore, spec *schemas.Spec, c *Cluster, set Settings, p Plan, o Observed) error {
	if rsp.Desired == nil {
		rsp.Desired = &fnv1.State{}
	}
	if rsp.Desired.Resources == nil {
		rsp.Desired.Resources = map[string]*fnv1.Resource{}
	}
	n := NamesFor(r.Name)
	build := map[resource.Name]func() runtime.Object{}
	if p.RBAC {
		build[resServiceAccount] = func() runtime.Object { return ServiceAccount(r, spec, n) }
		build[resRole] = func() runtime.Object { return Role(r, spec, n) }
		build[resRoleBinding] = func() runtime.Object { return RoleBinding(r, spec, n) }
	}
	if p.Lock {
		build[resLock] = func() runtime.Object { return LockRequest(r, spec, n) }
	}
	if p.Job {
		build[resJob] = func() runtime.Object { return Job(r, spec, c, p, set, n) }
	}
	if p.Target {
		build[resTarget] = func() runtime.Object { return Target(r, spec, n) }
	}
	if p.StepDown {
		build[resStepDown] = func() runtime.Object { return StepDownJob(r, spec, c, p.Auth, set, n) }
	}
	if len(build) > 0 {
		in, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.GetInput())
		if err != nil {
			return errors.Wrap(err, "cannot read the function's Input")
		}
		k := renderKey{spec: spec, restore: r, auth: p.Auth, snap: p.Snapshot, newest: p.Newest, input: string(in)}
		k.restore.Phase, k.restore.Chosen = "", nil // in snap, as a value
		k.restore.Restarting = false                // not rendered
		if c != nil {
			k.cluster = *c
			k.cluster.LockHolder = "" // not rendered: one rendering whoever holds the lock
			k.cluster.Latest = nil    // in snap, as a value, when it is used
			k.cluster.From = nil      // the same
		}
		for name, b := range build {
			k.res = name
			s, err := f.render(k, b)
			if err != nil {
				return errors.Wrapf(err, "cannot compose %s", name)
			}
			rsp.Desired.Resources[string(name)] = &fnv1.Resource{Resource: s, Ready: ready(readiness(name, o))}
		}
	}
	if p.KeepObservedJob {
		rsp.Desired.Resources[resJob] = &fnv1.Resource{Resource: keepJob(o.Job), Ready: ready(readiness(resJob, o))}
	}
	return nil
}

// render returns the cached rendering of an object, or renders it. Cached
// structs are shared and never modified.
func (f *Function) render(k renderKey, build func() runtime.Object) (*structpb.Struct, error) {
	f.once.Do(func() { f.rendered = lru.New(maxRendered) })
	if s, ok := f.rendered.Get(k); ok {
		return s.(*structpb.Struct), nil
	}
	cd, err := composed.From(build())
	if err != nil {
		return nil, err
	}
	s, err := resource.AsStruct(cd)
	if err != nil {
		return nil, err
	}
	f.rendered.Add(k, s)
	return s, nil
}

func ready(r resource.Ready) fnv1.Ready {
	switch r {
	case resource.ReadyTrue:
		return fnv1.Ready_READY_TRUE
	case resource.ReadyFalse:
		return fnv1.Ready_READY_FALSE
	}
	return fnv1.Ready_READY_UNSPECIFIED
}
