package fn

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/resource"

	"github.com/openbao-restore/openbao-restore/schemas"
)

const freshSpec = `{"claimRef":{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"OpenBaoRestore","name":"prod-2025-10-14","namespace":"vault"},
	"cluster":"restored","force":true,"targetLifecycle":"Disposable",
	"clusterTemplate":{"version":"2.4.0","unseal":{"type":"static"},"selfInit":{"requests":[{"name":"audit","operation":"update","path":"sys/audit/stdout","data":{"type":"file"}}]}},
	"source":{"key":"clusters/prod/a.snap","expectedVersion":"2.4.0","expectedClusterID":"c-prod","target":{"bucket":"b","credentialsSecretRef":{"name":"s3"}}}}`

// targetJSON is the required cluster "restored": origin is its
// restore-origin annotation ("" for none).
func targetJSON(origin string, initialized bool, version string) string {
	ann := ""
	if origin != "" {
		ann = `,"annotations":{"openbao.org/restore-origin":"` + origin + `"}`
	}
	init := "false"
	if initialized {
		init = "true"
	}
	return `{"apiVersion":"openbao.org/v1alpha1","kind":"OpenBaoCluster","metadata":{"name":"restored","namespace":"vault"` + ann + `},
	"spec":{"replicas":1,"selfInit":{"enabled":true,"oidc":{"enabled":true}}},"status":{"initialized":` + init + `,"currentVersion":"` + version + `"}}`
}

func freshReq(status, cluster string, observed map[string]string) *fnv1.RunFunctionRequest {
	r := req(xrJSON(freshSpec, status), false, observed)
	switch cluster {
	case "unresolved":
	case "missing":
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {}}
	default:
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(cluster)}}}}
	}
	return r
}

// TestFreshTargetStages: what a fresh-target restore composes from the
// first call to the end, and that it never composes over a cluster it did
// not create.
func TestFreshTargetStages(t *testing.T) {
	held := map[string]string{resLock: lockJSON("Held", holder)}
	rbac := []string{resServiceAccount, resRole, resRoleBinding}
	cases := map[string]struct {
		status, cluster string
		observed        map[string]string
		stage           Stage
		composed        []string
	}{
		"not looked up":        {`{}`, "unresolved", nil, StageResolvingCluster, nil},
		"created":              {`{}`, "missing", nil, StageCreatingTarget, append([]string{resTarget}, rbac...)},
		"not initialised":      {`{}`, targetJSON(xrUID, false, ""), nil, StageWaitingTarget, append([]string{resTarget, resLock}, rbac...)},
		"another version":      {`{}`, targetJSON(xrUID, true, "2.3.1"), held, StageWaitingTarget, append([]string{resTarget, resLock}, rbac...)},
		"up, waiting for lock": {`{}`, targetJSON(xrUID, true, "2.4.0"), nil, StageWaitingLock, append([]string{resTarget, resLock}, rbac...)},
		"up, lock held":        {`{}`, targetJSON(xrUID, true, "2.4.0"), held, StageJobComposed, append([]string{resTarget, resLock, resJob}, rbac...)},
		"foreign cluster":      {`{}`, targetJSON("", true, "2.4.0"), held, StageInvalid, nil},
		"another restore's":    {`{}`, targetJSON("another-uid", true, "2.4.0"), held, StageInvalid, nil},
		"completed":            {`{"phase":"Completed"}`, targetJSON(xrUID, true, "2.4.0"), held, StageFinished, []string{resTarget}},
		"failed before up":     {`{"phase":"Failed"}`, targetJSON(xrUID, false, ""), nil, StageFinished, []string{resTarget}},
		"expired":              {`{"phase":"Completed","target":{"expired":true}}`, targetJSON(xrUID, true, "2.4.0"), held, StageFinished, nil},
		"gone after the end":   {`{"phase":"Failed"}`, "missing", nil, StageFinished, nil},
	}
	f := &Function{Log: logging.NewNopLogger()}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rsp, err := f.RunFunction(context.Background(), freshReq(c.status, c.cluster, c.observed))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range rsp.GetDesired().GetResources() {
				got = append(got, k)
			}
			if diff := cmp.Diff(c.composed, got, sortStrings()); diff != "" {
				t.Errorf("composed (-want +got):\n%s", diff)
			}
			stage := rsp.GetDesired().GetComposite().GetResource().GetFields()["status"].GetStructValue().GetFields()["plan"].GetStructValue().GetFields()["stage"].GetStringValue()
			if stage != string(c.stage) {
				t.Errorf("stage %s, want %s", stage, c.stage)
			}
		})
	}
}

// TestFreshTargetConflict compares the whole response for a cluster of
// that name that this restore did not create.
func TestFreshTargetConflict(t *testing.T) {
	msg := schemas.MsgTargetConflict("restored", "vault")
	whole := "the restore's spec is invalid (1 problem(s)); nothing was composed: " + msg
	sel := func(withNS bool) *fnv1.ResourceSelector {
		s := &fnv1.ResourceSelector{ApiVersion: "openbao.org/v1alpha1", Kind: "OpenBaoCluster", Match: &fnv1.ResourceSelector_MatchName{MatchName: "restored"}}
		if withNS {
			s.Namespace = ptr.To("vault")
		}
		return s
	}
	want := &fnv1.RunFunctionResponse{
		Meta:    &fnv1.ResponseMeta{Ttl: durationpb.New(TTL)},
		Desired: &fnv1.State{Composite: desiredXR(`{"plan":{"stage":"InvalidSpec","namespace":"vault","lockRequest":"prod-2025-10-14-x7k2p-lock","job":"prod-2025-10-14-x7k2p-restore","serviceAccount":"prod-2025-10-14-x7k2p-executor"}}`)},
		Requirements: &fnv1.Requirements{
			Resources:      map[string]*fnv1.ResourceSelector{reqCluster: sel(true)},
			ExtraResources: map[string]*fnv1.ResourceSelector{reqCluster: sel(false)}, //nolint:staticcheck // v1 control planes read only this field.
		},
		Conditions: []*fnv1.Condition{
			cond(schemas.CondSpecValid, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", whole),
			cond(schemas.CondComposed, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", whole),
		},
		Results: []*fnv1.Result{{Severity: fnv1.Severity_SEVERITY_WARNING, Message: msg, Reason: ptr.To("InvalidSpec"), Target: fnv1.Target_TARGET_COMPOSITE_AND_CLAIM.Enum()}},
	}
	got, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), freshReq(`{}`, targetJSON("", true, "2.4.0"), nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("RunFunction (-want +got):\n%s", diff)
	}
}

// TestFreshTargetObjects: the new cluster carries the template, the
// defaults, the origin and the executor's login; the Job logs in with that
// role, takes no safety snapshot and knows the cluster is new.
func TestFreshTargetObjects(t *testing.T) {
	f := &Function{Log: logging.NewNopLogger()}
	rsp, err := f.RunFunction(context.Background(), freshReq(`{}`, "missing", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rsp.GetDesired().GetResources()[resTarget].GetResource())
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &u.Object); err != nil {
		t.Fatal(err)
	}
	if u.GetName() != "restored" || u.GetNamespace() != "vault" || u.GetAnnotations()[schemas.AnnotationRestoreOrigin] != xrUID {
		t.Errorf("identity: %s/%s, annotations %v", u.GetNamespace(), u.GetName(), u.GetAnnotations())
	}
	for path, want := range map[string]any{
		"spec.version": "2.4.0", "spec.replicas": int64(1), "spec.profile": "Development",
		"spec.unseal.type": "static", "spec.selfInit.enabled": true, "spec.selfInit.oidc.enabled": true,
	} {
		got, _, _ := unstructured.NestedFieldNoCopy(u.Object, strings.Split(path, ".")...)
		if f, ok := got.(float64); ok {
			got = int64(f)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	reqs, _, _ := unstructured.NestedSlice(u.Object, "spec", "selfInit", "requests")
	var names []string
	var role map[string]any
	for _, r := range reqs {
		m := r.(map[string]any)
		names = append(names, m["name"].(string))
		if m["path"] == "auth/jwt/role/"+schemas.FreshJWTRole {
			role = m["data"].(map[string]any)
		}
	}
	if !slices.Equal(names, []string{"audit", "openbao_restore_policy", "openbao_restore_role"}) {
		t.Errorf("self-init requests %v: the template's first, then the executor's login", names)
	}
	if role["bound_subject"] != "system:serviceaccount:vault:prod-2025-10-14-x7k2p-executor" || role["token_no_default_policy"] != true {
		t.Errorf("the role: %v", role)
	}

	rsp, err = f.RunFunction(context.Background(), freshReq(`{}`, targetJSON(xrUID, true, "2.4.0"), map[string]string{resLock: lockJSON("Held", holder)}))
	if err != nil {
		t.Fatal(err)
	}
	env := jobEnv(t, rsp)
	for k, v := range map[string]string{
		schemas.EnvAuthMethod: "jwt", schemas.EnvJWTAuthRole: schemas.FreshJWTRole, schemas.EnvSafetySnapshot: schemas.SafetyOff,
		schemas.EnvFreshTarget: "true", schemas.EnvRestoreForce: "true", schemas.EnvClusterName: "restored", schemas.EnvExpectedClusterID: "c-prod",
	} {
		if env[k] != v {
			t.Errorf("Job %s=%q, want %q", k, env[k], v)
		}
	}
}
