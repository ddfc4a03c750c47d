package fn

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/resource"

	"github.com/openbao-restore/openbao-restore/schemas"
)

const drillSpec = `{"claimRef":{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"OpenBaoRestoreDrill","name":"weekly","namespace":"vault"},
	"source":{"cluster":"prod","target":{"bucket":"b","credentialsSecretRef":{"name":"s3"}}},"schedule":"0 3 * * 0",
	"clusterTemplate":{"version":"2.4.0","unseal":{"type":"static"}},"readPaths":["secret/data/app/db","secret/data/app/api"],"tokenSecretRef":{"name":"read-token"}}`

func drillReq(spec, status string, observed map[string]string) *fnv1.RunFunctionRequest {
	xr := `{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"XOpenBaoRestoreDrill","metadata":{"name":"weekly-x1","uid":"d-uid"},"spec":` + spec + `,"status":` + status + `}`
	r := &fnv1.RunFunctionRequest{Observed: &fnv1.State{Composite: &fnv1.Resource{Resource: resource.MustStructJSON(xr)}}}
	if len(observed) > 0 {
		r.Observed.Resources = map[string]*fnv1.Resource{}
		for k, v := range observed {
			r.Observed.Resources[k] = &fnv1.Resource{Resource: resource.MustStructJSON(v)}
		}
	}
	return r
}

const activeRun3 = `{"active":{"run":3,"restore":"weekly-run-3","cluster":"weekly-run-3","snapshot":{"key":"clusters/prod/newest.snap","digest":"sha256:` +
	`abababababababababababababababababababababababababababababababab","size":4096,"clusterID":"c-prod","version":"2.4.0"}}}`

// TestDrillCompose: an idle drill composes nothing; a run composes its
// restore claim (the snapshot pinned, a Disposable new cluster from the
// template); once that restore is Completed, the Job that reads the paths.
func TestDrillCompose(t *testing.T) {
	f := &Function{Log: logging.NewNopLogger()}
	run := func(spec, status string, observed map[string]string) (*fnv1.RunFunctionResponse, []string) {
		rsp, err := f.RunFunction(context.Background(), drillReq(spec, status, observed))
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range rsp.GetDesired().GetResources() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return rsp, keys
	}
	// Idle: only the read checks' identity, which stays while the drill
	// checks paths.
	if rsp, keys := run(drillSpec, `{}`, nil); !slices.Equal(keys, []string{resRole, resRoleBinding, resServiceAccount}) || rsp.GetConditions()[0].GetStatus() != fnv1.Status_STATUS_CONDITION_TRUE {
		t.Fatalf("idle: %v %v", keys, rsp.GetConditions())
	}
	bad := `{"claimRef":{"name":"weekly","namespace":"vault"},"source":{"cluster":"prod","target":{"bucket":"b"}},"clusterTemplate":{"version":"2.4.0"}}`
	if rsp, keys := run(bad, `{}`, nil); len(keys) != 0 || rsp.GetConditions()[0].GetStatus() != fnv1.Status_STATUS_CONDITION_FALSE || len(rsp.GetResults()) == 0 {
		t.Fatalf("no trigger: %v %v", keys, rsp.GetConditions())
	}

	rsp, keys := run(drillSpec, activeRun3, nil)
	if !slices.Equal(keys, []string{resRole, resRoleBinding, "run-3", resServiceAccount}) {
		t.Fatalf("run 3 composed %v", keys)
	}
	b, _ := json.Marshal(rsp.GetDesired().GetResources()["run-3"].GetResource())
	claim := &unstructured.Unstructured{}
	_ = json.Unmarshal(b, &claim.Object)
	for path, want := range map[string]any{
		"kind": schemas.ClaimKind, "metadata.name": "weekly-run-3", "metadata.namespace": "vault", "spec.cluster": "weekly-run-3",
		"spec.force": true, "spec.targetLifecycle": schemas.LifecycleDisposable, "spec.source.key": "clusters/prod/newest.snap",
		"spec.source.expectedClusterID": "c-prod", "spec.source.expectedVersion": "2.4.0", "spec.source.expectedSize": float64(4096),
		"spec.clusterTemplate.version": "2.4.0", "spec.source.target.bucket": "b",
	} {
		got, _, _ := unstructured.NestedFieldNoCopy(claim.Object, strings.Split(path, ".")...)
		if got != want {
			t.Errorf("run claim %s = %v, want %v", path, got, want)
		}
	}
	if claim.GetLabels()[schemas.LabelDrill] != "weekly" || claim.GetLabels()[schemas.LabelDrillRun] != "3" {
		t.Errorf("run claim labels %v", claim.GetLabels())
	}

	// The reconciler says the restore is Completed (restoredAt): the check,
	// even before the observed claim shows it.
	restored := strings.Replace(activeRun3, `"run":3,`, `"run":3,"restoredAt":"2026-12-06T03:00:15Z",`, 1)
	if _, keys = run(drillSpec, restored, nil); !slices.Contains(keys, "check-3") {
		t.Fatalf("restoredAt: composed %v", keys)
	}
	completed := map[string]string{"run-3": `{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"OpenBaoRestore","metadata":{"name":"weekly-run-3","namespace":"vault"},"status":{"phase":"Completed"}}`}
	rsp, keys = run(drillSpec, activeRun3, completed)
	if !slices.Equal(keys, []string{"check-3", resRole, resRoleBinding, "run-3", resServiceAccount}) {
		t.Fatalf("completed run composed %v", keys)
	}
	b, _ = json.Marshal(rsp.GetDesired().GetResources()["check-3"].GetResource())
	var job batchv1.Job
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	for k, want := range map[string]string{schemas.EnvExecutorMode: schemas.ModeReadCheck, schemas.EnvReadPaths: "secret/data/app/db,secret/data/app/api",
		schemas.EnvAuthMethod: "token", schemas.EnvClusterName: "weekly-run-3", schemas.EnvTLSServerName: "weekly-run-3.vault.svc"} {
		if env[k] != want {
			t.Errorf("check Job %s=%q, want %q", k, env[k], want)
		}
	}
	for k := range env {
		if k == schemas.EnvBucket || k == schemas.EnvRestoreKey || k == schemas.EnvLockRequestName {
			t.Errorf("check Job has %s: it restores nothing", k)
		}
	}
	var vols []string
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			vols = append(vols, v.Secret.SecretName)
		}
	}
	slices.Sort(vols)
	if !slices.Equal(vols, []string{"read-token", "weekly-run-3-tls-ca"}) {
		t.Errorf("check Job's Secrets %v, want the token and the new cluster's CA only", vols)
	}
}
