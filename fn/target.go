package fn

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A fresh-target restore (spec.clusterTemplate) composes the OpenBaoCluster
// it restores into. Until that cluster is up the plan is decideTarget's;
// then the usual flow takes over, with the target still composed until the
// reconciler says a Disposable one's time is up.

// resTarget is the composed OpenBaoCluster of a fresh-target restore.
const resTarget = "target"

// The stages of a fresh target before its restore.
const (
	StageCreatingTarget Stage = "CreatingTarget"
	StageWaitingTarget  Stage = "WaitingForTarget"
)

// decideTarget is the plan of a fresh-target restore until its new cluster
// is up; done is false once the usual flow takes over. c is the required
// cluster of spec.cluster, nil while it does not exist.
func decideTarget(r Restore, spec *schemas.Spec, c *Cluster, keepJob bool) (p Plan, done bool) {
	terminal := schemas.Terminal(r.Phase)
	switch {
	case c != nil && c.Origin != r.UID:
		// Never compose over a cluster this restore did not create:
		// Crossplane would take it over, and the restore would replace
		// someone else's data.
		vs := []schemas.Violation{{Path: "spec.cluster", Message: schemas.MsgTargetConflict(spec.Cluster, r.Namespace)}}
		return Plan{Stage: StageInvalid, Violations: vs, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("the restore's spec is invalid (1 problem(s)); nothing was composed: %s", vs[0].Message)}, true
	case r.TargetExpired:
		return Plan{Stage: StageFinished, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("the restore is %s; its Disposable cluster %s was deleted cleanupAfterSeconds after the end", r.Phase, spec.Cluster)}, true
	case c == nil && terminal:
		// Gone after the end (deleted by hand): never created again.
		return Plan{Stage: StageFinished, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("the restore is %s; its cluster %s no longer exists", r.Phase, spec.Cluster)}, true
	case c == nil:
		return Plan{Stage: StageCreatingTarget, Target: true, RBAC: true, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("creating OpenBaoCluster %s from spec.clusterTemplate", spec.Cluster)}, true
	case !terminal && (!c.Initialized || c.Version != spec.Source.ExpectedVersion):
		return Plan{Stage: StageWaitingTarget, Target: true, RBAC: true, Lock: true, KeepObservedJob: keepJob,
			Message: fmt.Sprintf("waiting for the new OpenBaoCluster %s to come up (initialized: %t, version: %q, want %q); the restore fails if it is not up within the bootstrap deadline",
				spec.Cluster, c.Initialized, c.Version, spec.Source.ExpectedVersion)}, true
	}
	return Plan{}, false
}

// Target is the new OpenBaoCluster of a fresh-target restore: the
// template, one voter and the Development profile unless it says
// otherwise, the restore's UID as its origin, and OIDC
// self-initialisation with the executor's login added (TargetRequests).
func Target(r Restore, spec *schemas.Spec, n Names) runtime.Object {
	s := runtime.DeepCopyJSON(spec.ClusterTemplate)
	if _, ok := s["replicas"]; !ok {
		s["replicas"] = int64(1)
	}
	if _, ok := s["profile"]; !ok {
		s["profile"] = schemas.FreshProfile
	}
	si, _ := s["selfInit"].(map[string]any)
	if si == nil {
		si = map[string]any{}
	}
	si["enabled"] = true
	oidc, _ := si["oidc"].(map[string]any)
	if oidc == nil {
		oidc = map[string]any{}
	}
	oidc["enabled"] = true
	si["oidc"] = oidc
	aud, _ := oidc["audience"].(string)
	reqs, _ := si["requests"].([]any)
	si["requests"] = append(reqs, TargetRequests(r, n, aud)...)
	s["selfInit"] = si

	u := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	u.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
	u.SetKind(schemas.ClusterKind)
	m := meta(r, spec.Cluster, spec.Cluster)
	u.SetName(m.Name)
	u.SetNamespace(m.Namespace)
	u.SetLabels(m.Labels)
	u.SetAnnotations(map[string]string{schemas.AnnotationRestoreOrigin: r.UID})
	return u
}

// TargetRequests are the self-initialisation requests that let the
// executor in: an ACL policy that allows the restore and its capability
// check, and a JWT role on the mount OIDC self-initialisation configures,
// bound to the executor's ServiceAccount and the token's audience. No
// secret is in them: the login is the pod's projected token.
func TargetRequests(r Restore, n Names, audience string) []any {
	if audience == "" {
		audience = schemas.DefaultJWTAudience
	}
	return []any{
		map[string]any{
			"name": "openbao_restore_policy", "operation": "update",
			"path": "sys/policies/acl/" + schemas.FreshPolicy,
			"data": map[string]any{"policy": schemas.FreshPolicyHCL},
		},
		map[string]any{
			"name": "openbao_restore_role", "operation": "update",
			"path": "auth/jwt/role/" + schemas.FreshJWTRole,
			"data": map[string]any{
				"role_type":               "jwt",
				"user_claim":              "sub",
				"bound_audiences":         []any{audience},
				"bound_subject":           "system:serviceaccount:" + r.Namespace + ":" + n.ServiceAccount,
				"token_policies":          []any{schemas.FreshPolicy},
				"token_no_default_policy": true,
				"token_ttl":               schemas.FreshTokenTTL,
			},
		},
	}
}
