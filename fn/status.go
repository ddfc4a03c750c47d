package fn

import (
	"google.golang.org/protobuf/types/known/structpb"

	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// setComposite writes the function's part of the desired XR: status.plan,
// and readiness. It works on the protobuf struct directly, sparing the SDK's
// JSON round trips of the whole XR.
func setComposite(rsp *fnv1.RunFunctionResponse, isReady bool, plan *structpb.Struct) {
	if rsp.Desired == nil {
		rsp.Desired = &fnv1.State{}
	}
	if rsp.Desired.Composite == nil {
		rsp.Desired.Composite = &fnv1.Resource{}
	}
	xr := rsp.Desired.Composite
	if xr.Resource == nil {
		xr.Resource = &structpb.Struct{}
	}
	if xr.Resource.Fields == nil {
		xr.Resource.Fields = map[string]*structpb.Value{}
	}
	st := xr.Resource.Fields["status"].GetStructValue()
	if st == nil {
		st = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		xr.Resource.Fields["status"] = structpb.NewStructValue(st)
	}
	st.Fields["plan"] = structpb.NewStructValue(plan)
	// The XR is Ready once the restore has Completed: the Job alone is not
	// the end, the reconciler still restarts the pods.
	xr.Ready = fnv1.Ready_READY_FALSE
	if isReady {
		xr.Ready = fnv1.Ready_READY_TRUE
	}
}

// planStatus is what the function says in status.plan: the names of what it
// composes and how the executor authenticates.
func planStatus(r Restore, spec *schemas.Spec, p Plan, n Names) *structpb.Struct {
	f := map[string]*structpb.Value{
		"stage":     structpb.NewStringValue(string(p.Stage)),
		"namespace": structpb.NewStringValue(r.Namespace),
	}
	if spec != nil {
		f["lockRequest"] = structpb.NewStringValue(n.Lock)
		f["job"] = structpb.NewStringValue(n.Job)
		f["serviceAccount"] = structpb.NewStringValue(n.ServiceAccount)
		if p.Auth.Method != "" {
			f["authMethod"] = structpb.NewStringValue(p.Auth.Method)
		}
	}
	if s := p.Snapshot; s.Key != "" {
		// The choice for a restore with no key, kept from here on.
		f["snapshot"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"key": structpb.NewStringValue(s.Key), "digest": structpb.NewStringValue(s.Digest), "size": structpb.NewNumberValue(float64(s.Size)),
			"clusterID": structpb.NewStringValue(s.ClusterID), "version": structpb.NewStringValue(s.Version),
		}})
	}
	return &structpb.Struct{Fields: f}
}
