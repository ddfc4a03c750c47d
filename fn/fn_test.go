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
	"google.golang.org/protobuf/types/known/structpb"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"github.com/crossplane/function-sdk-go/resource"

	"github.com/openbao-restore/openbao-restore/input/v1beta1"
	"github.com/openbao-restore/openbao-restore/schemas"
)

const (
	xrUID  = "6f1c2b9e-4d7a-4c1e-9a53-2e8f0b7d4c11"
	holder = "openbaorestore/prod-2025-10-14/" + xrUID
)

func xrJSON(spec, status string) string {
	return `{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"XOpenBaoRestore",
	"metadata":{"name":"prod-2025-10-14-x7k2p","uid":"` + xrUID + `"},
	"spec":` + spec + `,"status":` + status + `}`
}

const validSpec = `{"claimRef":{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"OpenBaoRestore","name":"prod-2025-10-14","namespace":"vault"},
	"cluster":"prod","source":{"key":"clusters/prod/a.snap","target":{"bucket":"b","credentialsSecretRef":{"name":"s3"}}},
	"tokenSecretRef":{"name":"tok"}}`

const clusterJSON = `{"apiVersion":"openbao.org/v1alpha1","kind":"OpenBaoCluster","metadata":{"name":"prod","namespace":"vault"},
	"spec":{"replicas":3,"tls":{"enabled":false}},"status":{"initialized":true}}`

func req(xr string, required bool, observed map[string]string) *fnv1.RunFunctionRequest {
	r := &fnv1.RunFunctionRequest{
		Observed: &fnv1.State{Composite: &fnv1.Resource{Resource: resource.MustStructJSON(xr)}},
	}
	if required {
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(clusterJSON)}}}}
	}
	if len(observed) > 0 {
		r.Observed.Resources = map[string]*fnv1.Resource{}
		for k, v := range observed {
			r.Observed.Resources[k] = &fnv1.Resource{Resource: resource.MustStructJSON(v)}
		}
	}
	return r
}

func lockJSON(state, heldBy string) string {
	return `{"apiVersion":"restore.openbao-restore.io/v1alpha1","kind":"LockRequest","metadata":{"name":"prod-2025-10-14-x7k2p-lock","namespace":"vault"},
	"status":{"state":"` + state + `","heldBy":"` + heldBy + `"}}`
}

func requirements() *fnv1.Requirements {
	ns := "vault"
	sel := func(withNS bool) *fnv1.ResourceSelector {
		s := &fnv1.ResourceSelector{ApiVersion: "openbao.org/v1alpha1", Kind: "OpenBaoCluster", Match: &fnv1.ResourceSelector_MatchName{MatchName: "prod"}}
		if withNS {
			s.Namespace = &ns
		}
		return s
	}
	return &fnv1.Requirements{
		Resources:      map[string]*fnv1.ResourceSelector{reqCluster: sel(true)},
		ExtraResources: map[string]*fnv1.ResourceSelector{reqCluster: sel(false)}, //nolint:staticcheck // v1 control planes read only this field.
	}
}

func cond(typ string, s fnv1.Status, reason, msg string) *fnv1.Condition {
	c := &fnv1.Condition{Type: typ, Status: s, Reason: reason, Target: fnv1.Target_TARGET_COMPOSITE_AND_CLAIM.Enum()}
	if msg != "" {
		c.Message = &msg
	}
	return c
}

func desiredXR(status string) *fnv1.Resource {
	return &fnv1.Resource{Resource: resource.MustStructJSON(`{"status":` + status + `}`), Ready: fnv1.Ready_READY_FALSE}
}

// TestRunFunctionWhole compares whole responses for the stages that compose
// little; the stages with a Job are covered below and by the golden renders.
func TestRunFunctionWhole(t *testing.T) {
	const dryOverrideMsg = "spec.overrideOperationLock has no effect on a dry run, which takes no lock: remove overrideOperationLock, or set spec.dryRun: false"
	invalidMsg := "spec.overrideOperationLock requires spec.force: set spec.force: true as well (break glass), or remove overrideOperationLock"
	cases := map[string]struct {
		req  *fnv1.RunFunctionRequest
		want *fnv1.RunFunctionResponse
	}{
		"InvalidSpecComposesNothing": {
			req: req(xrJSON(strings.Replace(validSpec, `"cluster":"prod"`, `"cluster":"prod","overrideOperationLock":true`, 1), `{}`), true, nil),
			want: &fnv1.RunFunctionResponse{
				Meta:    &fnv1.ResponseMeta{Ttl: durationpb.New(TTL)},
				Desired: &fnv1.State{Composite: desiredXR(`{"plan":{"stage":"InvalidSpec","namespace":"vault"}}`)},
				Conditions: []*fnv1.Condition{
					cond(schemas.CondSpecValid, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", "the restore's spec is invalid (1 problem(s)); nothing was composed: "+invalidMsg),
					cond(schemas.CondComposed, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", "the restore's spec is invalid (1 problem(s)); nothing was composed: "+invalidMsg),
				},
				Results: []*fnv1.Result{{Severity: fnv1.Severity_SEVERITY_WARNING, Message: invalidMsg, Reason: ptr.To("InvalidSpec"), Target: fnv1.Target_TARGET_COMPOSITE_AND_CLAIM.Enum()}},
			},
		},
		"DryRunWithOverrideIsInvalid": {
			req: req(xrJSON(strings.Replace(validSpec, `"cluster":"prod"`, `"cluster":"prod","dryRun":true,"force":true,"overrideOperationLock":true`, 1), `{}`), true, nil),
			want: &fnv1.RunFunctionResponse{
				Meta:    &fnv1.ResponseMeta{Ttl: durationpb.New(TTL)},
				Desired: &fnv1.State{Composite: desiredXR(`{"plan":{"stage":"InvalidSpec","namespace":"vault"}}`)},
				Conditions: []*fnv1.Condition{
					cond(schemas.CondSpecValid, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", "the restore's spec is invalid (1 problem(s)); nothing was composed: "+dryOverrideMsg),
					cond(schemas.CondComposed, fnv1.Status_STATUS_CONDITION_FALSE, "InvalidSpec", "the restore's spec is invalid (1 problem(s)); nothing was composed: "+dryOverrideMsg),
				},
				Results: []*fnv1.Result{{Severity: fnv1.Severity_SEVERITY_WARNING, Message: dryOverrideMsg, Reason: ptr.To("InvalidSpec"), Target: fnv1.Target_TARGET_COMPOSITE_AND_CLAIM.Enum()}},
			},
		},
		"FirstCallAsksForTheCluster": {
			req: req(xrJSON(validSpec, `{}`), false, nil),
			want: &fnv1.RunFunctionResponse{
				Meta:         &fnv1.ResponseMeta{Ttl: durationpb.New(TTL)},
				Desired:      &fnv1.State{Composite: desiredXR(`{"plan":{"stage":"ResolvingCluster","namespace":"vault","lockRequest":"prod-2025-10-14-x7k2p-lock","job":"prod-2025-10-14-x7k2p-restore","serviceAccount":"prod-2025-10-14-x7k2p-executor"}}`)},
				Requirements: requirements(),
				Conditions: []*fnv1.Condition{
					cond(schemas.CondSpecValid, fnv1.Status_STATUS_CONDITION_TRUE, "Valid", ""),
					cond(schemas.CondComposed, fnv1.Status_STATUS_CONDITION_FALSE, "ResolvingCluster", "looking up OpenBaoCluster prod in namespace vault"),
				},
			},
		},
		"MissingClusterComposesNothing": {
			req: func() *fnv1.RunFunctionRequest {
				r := req(xrJSON(validSpec, `{}`), false, nil)
				r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {}}
				return r
			}(),
			want: &fnv1.RunFunctionResponse{
				Meta:         &fnv1.ResponseMeta{Ttl: durationpb.New(TTL)},
				Desired:      &fnv1.State{Composite: desiredXR(`{"plan":{"stage":"WaitingForCluster","namespace":"vault","lockRequest":"prod-2025-10-14-x7k2p-lock","job":"prod-2025-10-14-x7k2p-restore","serviceAccount":"prod-2025-10-14-x7k2p-executor"}}`)},
				Requirements: requirements(),
				Conditions: []*fnv1.Condition{
					cond(schemas.CondSpecValid, fnv1.Status_STATUS_CONDITION_TRUE, "Valid", ""),
					cond(schemas.CondComposed, fnv1.Status_STATUS_CONDITION_FALSE, "WaitingForCluster", "OpenBaoCluster prod was not found in namespace vault: create it, or correct spec.cluster"),
				},
				Results: []*fnv1.Result{{Severity: fnv1.Severity_SEVERITY_WARNING, Message: "OpenBaoCluster prod was not found in namespace vault: create it, or correct spec.cluster", Reason: ptr.To("WaitingForCluster"), Target: fnv1.Target_TARGET_COMPOSITE_AND_CLAIM.Enum()}},
			},
		},
	}
	f := &Function{Log: logging.NewNopLogger()}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := f.RunFunction(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("RunFunction (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRunFunctionStages checks what is composed at each stage.
func TestRunFunctionStages(t *testing.T) {
	job := `{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"prod-2025-10-14-x7k2p-restore","namespace":"vault","labels":{"restore.openbao-restore.io/restore":"prod-2025-10-14","other":"x"}},"spec":{"backoffLimit":7}`
	dry := strings.Replace(validSpec, `"cluster":"prod"`, `"cluster":"prod","dryRun":true`, 1)
	cases := map[string]struct {
		spec     string // validSpec when empty
		status   string
		observed map[string]string
		want     []string
		stage    Stage
		ready    fnv1.Ready
	}{
		"NoLockYet":        {status: `{}`, want: []string{resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageWaitingLock},
		"LockWaiting":      {status: `{"phase":"Pending"}`, observed: map[string]string{resLock: lockJSON("Waiting", "openbaobackup/nightly")}, want: []string{resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageWaitingLock},
		"LockHeldByOther":  {status: `{}`, observed: map[string]string{resLock: lockJSON("Held", "openbaorestore/prod-2025-10-14/other-uid")}, want: []string{resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageWaitingLock},
		"LockHeld":         {status: `{"phase":"Running"}`, observed: map[string]string{resLock: lockJSON("Held", holder)}, want: []string{resJob, resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComposed},
		"JobRunning":       {status: `{"phase":"Running"}`, observed: map[string]string{resLock: lockJSON("Held", holder), resJob: job + `}`}, want: []string{resJob, resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComposed},
		"JobComplete":      {status: `{"phase":"Running"}`, observed: map[string]string{resLock: lockJSON("Held", holder), resJob: job + `,"status":{"conditions":[{"type":"Complete","status":"True"}]}}`}, want: []string{resJob, resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComplete},
		"CompletedDrops":   {status: `{"phase":"Completed"}`, observed: map[string]string{resLock: lockJSON("Held", holder), resJob: job + `,"status":{"conditions":[{"type":"Complete","status":"True"}]}}`}, want: []string{resJob}, stage: StageFinished, ready: fnv1.Ready_READY_TRUE},
		"FailedDrops":      {status: `{"phase":"Failed"}`, observed: map[string]string{resLock: lockJSON("Held", holder), resJob: job + `,"status":{"conditions":[{"type":"Failed","status":"True"}]}}`}, want: []string{resJob}, stage: StageFinished},
		"UnknownKeepsLock": {status: `{"phase":"Unknown"}`, observed: map[string]string{resLock: lockJSON("Held", holder), resJob: job + `,"status":{"conditions":[{"type":"Failed","status":"True"}]}}`}, want: []string{resJob, resLock, resRole, resRoleBinding, resServiceAccount}, stage: StageJobFailed},
		"TerminalNoJob":    {status: `{"phase":"Failed"}`, observed: map[string]string{resLock: lockJSON("Held", holder)}, want: nil, stage: StageFinished},
		// A dry run takes no lock: its Job is composed at once.
		"DryRunNoLock":         {spec: dry, status: `{}`, want: []string{resJob, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComposed},
		"DryRunJobRunning":     {spec: dry, status: `{"phase":"Running"}`, observed: map[string]string{resJob: job + `}`}, want: []string{resJob, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComposed},
		"DryRunJobComplete":    {spec: dry, status: `{"phase":"Running"}`, observed: map[string]string{resJob: job + `,"status":{"conditions":[{"type":"Complete","status":"True"}]}}`}, want: []string{resJob, resRole, resRoleBinding, resServiceAccount}, stage: StageJobComplete},
		"DryRunCompletedDrops": {spec: dry, status: `{"phase":"Completed"}`, observed: map[string]string{resJob: job + `,"status":{"conditions":[{"type":"Complete","status":"True"}]}}`}, want: []string{resJob}, stage: StageFinished, ready: fnv1.Ready_READY_TRUE},
	}
	f := &Function{Log: logging.NewNopLogger()}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			spec := tc.spec
			if spec == "" {
				spec = validSpec
			}
			rsp, err := f.RunFunction(context.Background(), req(xrJSON(spec, tc.status), true, tc.observed))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range rsp.GetDesired().GetResources() {
				got = append(got, k)
			}
			if diff := cmp.Diff(tc.want, got, sortStrings()); diff != "" {
				t.Errorf("composed (-want +got):\n%s", diff)
			}
			stage := rsp.GetDesired().GetComposite().GetResource().GetFields()["status"].GetStructValue().GetFields()["plan"].GetStructValue().GetFields()["stage"].GetStringValue()
			if Stage(stage) != tc.stage {
				t.Errorf("stage %s, want %s", stage, tc.stage)
			}
			want := tc.ready
			if want == fnv1.Ready_READY_UNSPECIFIED {
				want = fnv1.Ready_READY_FALSE
			}
			if got := rsp.GetDesired().GetComposite().GetReady(); got != want {
				t.Errorf("XR ready %v, want %v", got, want)
			}
			for _, r := range rsp.GetResults() {
				if r.GetSeverity() == fnv1.Severity_SEVERITY_FATAL {
					t.Errorf("fatal result: %s", r.GetMessage())
				}
			}
			// An observed Job is sent back as it is: never re-rendered.
			if j, ok := tc.observed[resJob]; ok {
				d := rsp.GetDesired().GetResources()[resJob].GetResource().AsMap()
				var o map[string]any
				_ = json.Unmarshal([]byte(j), &o)
				if diff := cmp.Diff(o["spec"], d["spec"]); diff != "" {
					t.Errorf("observed Job's spec changed (-observed +desired):\n%s", diff)
				}
				if _, ok := d["metadata"].(map[string]any)["labels"].(map[string]any)["other"]; ok {
					t.Error("desired Job claims a label we did not set")
				}
			}
		})
	}
}

func sortStrings() cmp.Option {
	return cmp.Transformer("sort", func(in []string) []string {
		out := append([]string(nil), in...)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[j] < out[i] {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	})
}

// TestExtraResourcesProtocol reads the cluster from extra_resources, the
// only field a Crossplane v1 control plane fills.
func TestExtraResourcesProtocol(t *testing.T) {
	r := req(xrJSON(validSpec, `{}`), false, map[string]string{resLock: lockJSON("Held", holder)})
	//nolint:staticcheck // the v1 protocol field is the point of this test.
	r.ExtraResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(clusterJSON)}}}}
	rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rsp.GetDesired().GetResources()[resJob]; !ok {
		t.Fatalf("no Job composed from extra_resources: %v", rsp.GetConditions())
	}
}

func TestNamespacedXR(t *testing.T) {
	xr := `{"apiVersion":"ns.restore.openbao-restore.io/v1alpha1","kind":"OpenBaoRestore","metadata":{"name":"r1","namespace":"vault","uid":"u1"},
	"spec":{"crossplane":{"compositionRef":{"name":"x"}},"cluster":"prod","source":{"key":"k","target":{"bucket":"b"}},"jwtAuthRole":"restore"},"status":{}}`
	rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), req(xr, true, map[string]string{resLock: lockJSON("Held", "openbaorestore/r1/u1")}))
	if err != nil {
		t.Fatal(err)
	}
	lock := rsp.GetDesired().GetResources()[resLock].GetResource().AsMap()
	spec := lock["spec"].(map[string]any)
	if spec["holder"] != "openbaorestore/r1/u1" || spec["restore"].(map[string]any)["namespace"] != "vault" {
		t.Errorf("lock request of a namespaced XR: %v", spec)
	}
	if _, ok := rsp.GetDesired().GetResources()[resJob]; !ok {
		t.Fatal("no Job for a namespaced XR")
	}
}

func TestLegacyXRWithoutClaim(t *testing.T) {
	xr := xrJSON(strings.Replace(validSpec, `"namespace":"vault"`, `"namespace":""`, 1), `{}`)
	rsp, _ := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), req(xr, true, nil))
	if len(rsp.GetDesired().GetResources()) != 0 || len(rsp.GetResults()) == 0 || !strings.Contains(rsp.GetResults()[0].GetMessage(), "needs a claim") {
		t.Fatalf("a claimless legacy XR must compose nothing and say why: %v", rsp.GetResults())
	}
}

func TestJobSecurity(t *testing.T) {
	rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), req(xrJSON(validSpec, `{}`), true, map[string]string{resLock: lockJSON("Held", holder)}))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rsp.GetDesired().GetResources()[resJob].GetResource())
	var job batchv1.Job
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	pod := job.Spec.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q, want Never", pod.RestartPolicy)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the ServiceAccount token is automounted")
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", psc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, every capability dropped", sc)
	}
	if job.Spec.PodFailurePolicy == nil || len(job.Spec.PodFailurePolicy.Rules) == 0 {
		t.Error("the Job has no podFailurePolicy")
	}
	// Every secret is a file readable by its owner only, never a value in
	// the environment.
	secrets := 0
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secrets++
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
				t.Errorf("secret volume %s: mode %v, want 0400", v.Name, v.Secret.DefaultMode)
			}
		}
	}
	if secrets == 0 {
		t.Error("no secret volume: the storage credentials are not mounted")
	}
	force := false
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("env %s comes from a Secret: secrets must be mounted files", e.Name)
		}
		if slices.Contains([]string{"AWS_SECRET_ACCESS_KEY", "VAULT_TOKEN", "BAO_TOKEN"}, e.Name) {
			t.Errorf("env has %s", e.Name)
		}
		force = force || e.Name == schemas.EnvRestoreForce && e.Value == "false"
	}
	if !force {
		t.Errorf("env lacks %s=false", schemas.EnvRestoreForce)
	}
}

// A JWT login's projected token is for the audience the cluster's JWT auth
// role accepts: the cluster's own (spec.selfInit.oidc.audience), else
// openbao-operator's default.
func TestJobJWTAudience(t *testing.T) {
	spec := strings.Replace(validSpec, `"tokenSecretRef":{"name":"tok"}`, `"jwtAuthRole":"restore"`, 1)
	for _, tc := range []struct{ cluster, want string }{
		{clusterJSON, schemas.DefaultJWTAudience},
		{strings.Replace(clusterJSON, `"replicas":3`, `"replicas":3,"selfInit":{"oidc":{"enabled":true,"audience":"bao-prod"}}`, 1), "bao-prod"},
	} {
		r := req(xrJSON(spec, `{}`), true, map[string]string{resLock: lockJSON("Held", holder)})
		r.RequiredResources[reqCluster].Items[0].Resource = resource.MustStructJSON(tc.cluster)
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rsp.GetDesired().GetResources()[resJob].GetResource())
		if want := `"audience":"` + tc.want + `"`; !strings.Contains(string(b), want) {
			t.Errorf("Job lacks %s: %s", want, b)
		}
	}
}

// TLS is on unless the cluster says it is off: the Job then mounts the
// cluster's CA and names the server its certificates carry.
func TestJobTLSUnlessOff(t *testing.T) {
	for _, tc := range []struct {
		name, tls string
		on        bool
	}{
		{"off", `"tls":{"enabled":false}`, false},
		{"on", `"tls":{"enabled":true}`, true},
		{"unset", `"tls":{}`, true},
	} {
		r := req(xrJSON(validSpec, `{}`), true, map[string]string{resLock: lockJSON("Held", holder)})
		r.RequiredResources[reqCluster].Items[0].Resource = resource.MustStructJSON(strings.Replace(clusterJSON, `"tls":{"enabled":false}`, tc.tls, 1))
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rsp.GetDesired().GetResources()[resJob].GetResource())
		for _, want := range []string{schemas.EnvTLSCAPath, `"value":"prod.vault.svc"`, `"secretName":"prod-tls-ca"`} {
			if strings.Contains(string(b), want) != tc.on {
				t.Errorf("TLS %s: Job has %s: %v, want %v", tc.name, want, !tc.on, tc.on)
			}
		}
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 70)
	n := name(long, "executor")
	if len(n) > maxName || !strings.HasSuffix(n, "-executor") {
		t.Errorf("name %q (%d)", n, len(n))
	}
	if name(long+"b", "executor") == n {
		t.Error("two long names collide")
	}
	if got := name("short", "lock"); got != "short-lock" {
		t.Errorf("got %q", got)
	}
	if n := name(strings.Repeat("a", 45)+"-"+strings.Repeat("b", 20), "restore"); strings.Contains(n, "--") {
		t.Errorf("name %q has a dash before the hash", n)
	}
}

// FuzzRunFunction feeds arbitrary specs. It must never panic, never return
// an error, and never compose a Job for a spec that does not validate.
func FuzzRunFunction(f *testing.F) {
	f.Add(validSpec)
	f.Add(`{"cluster":"prod","overrideOperationLock":true}`)
	f.Add(`{"claimRef":{"namespace":"vault","name":"x"},"cluster":"p","source":{"key":"../x","target":{"bucket":"b","endpoint":"http://localhost"}}}`)
	f.Add(`null`)
	f.Add(`{"source":[1,2],"cluster":7}`)
	fn := &Function{Log: logging.NewNopLogger()}
	f.Fuzz(func(t *testing.T, spec string) {
		var v any
		if json.Unmarshal([]byte(spec), &v) != nil {
			return
		}
		xr, err := structpb.NewStruct(map[string]any{
			"apiVersion": "restore.openbao-restore.io/v1alpha1", "kind": "XOpenBaoRestore",
			"metadata": map[string]any{"name": "x", "uid": "u"}, "spec": v,
		})
		if err != nil {
			return
		}
		r := req(`{}`, true, map[string]string{resLock: lockJSON("Held", "openbaorestore/x/u")})
		r.Observed.Composite.Resource = xr
		rsp, err := fn.RunFunction(context.Background(), r)
		if err != nil {
			t.Fatalf("RunFunction returned an error: %v", err)
		}
		sm, _ := v.(map[string]any)
		_, vs, _ := schemas.Validate(sm, SettingsFrom(nil).Policy())
		if _, ok := rsp.GetDesired().GetResources()[resJob]; ok && len(vs) > 0 {
			t.Fatalf("a Job was composed for an invalid spec: %v", vs)
		}
	})
}

// A dry run's Job switches the executor to dry run and names no lock
// request; its Role may only find the cluster's pods.
func TestDryRunJobAndRole(t *testing.T) {
	spec := &schemas.Spec{Cluster: "prod", DryRun: true, TokenSecretRef: &schemas.SecretRef{Name: "tok"}}
	r := Restore{Name: "x", Namespace: "vault", RequestName: "x", UID: xrUID}
	n := NamesFor(r.Name)
	j := Job(r, spec, &Cluster{Replicas: 3}, Plan{Auth: schemas.Auth{Method: "token"}}, Settings{}, n)
	env := map[string]string{}
	for _, e := range j.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if _, ok := env[schemas.EnvLockRequestName]; ok || env[schemas.EnvDryRun] != "true" {
		t.Fatalf("env %v", env)
	}
	role := Role(r, spec, n)
	if len(role.Rules) != 1 || role.Rules[0].Resources[0] != "pods" || slices.Contains(role.Rules[0].Verbs, "patch") {
		t.Fatalf("rules %+v", role.Rules)
	}
	spec.DryRun = false
	if got := len(Role(r, spec, n).Rules); got != 4 {
		t.Fatalf("a restore's Role has %d rules", got)
	}
}

// The Job's safety snapshot mode: the spec's, else the Input's, else
// Required.
func TestJobSafetySnapshot(t *testing.T) {
	r := Restore{Name: "x", Namespace: "vault", RequestName: "x", UID: xrUID}
	mode := func(spec *schemas.Spec, in *v1beta1.Input) string {
		j := Job(r, spec, &Cluster{Replicas: 3}, Plan{Auth: schemas.Auth{Method: "token"}}, SettingsFrom(in), NamesFor(r.Name))
		for _, e := range j.Spec.Template.Spec.Containers[0].Env {
			if e.Name == schemas.EnvSafetySnapshot {
				return e.Value
			}
		}
		return ""
	}
	spec := &schemas.Spec{Cluster: "prod", TokenSecretRef: &schemas.SecretRef{Name: "tok"}}
	if got := mode(spec, nil); got != schemas.SafetyRequired {
		t.Errorf("default %q", got)
	}
	if got := mode(spec, &v1beta1.Input{SafetySnapshot: schemas.SafetyBestEffort}); got != schemas.SafetyBestEffort {
		t.Errorf("Input's %q", got)
	}
	spec.SafetySnapshot = schemas.SafetyOff
	if got := mode(spec, &v1beta1.Input{SafetySnapshot: schemas.SafetyBestEffort}); got != schemas.SafetyOff {
		t.Errorf("spec's %q", got)
	}
}

// The Composed message never goes back within a stage. Crossplane reads
// the required cluster afresh on every call, but observes composed
// resources through the XR's resource references, which a stale XR lacks:
// a call may then observe neither the lock request nor the Job. The
// cluster's own lock still names the restore, so the Job stays composed
// and the message stays the same, instead of falling back to waiting for
// the lock (issue 16).
func TestComposedNeverGoesBackToWaiting(t *testing.T) {
	job := `{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"prod-2025-10-14-x7k2p-restore","namespace":"vault"},"spec":{}}`
	heldCluster := strings.Replace(clusterJSON, `"status":{"initialized":true}`,
		`"status":{"initialized":true,"operationLock":{"operation":"Restore","holder":"`+holder+`"}}`, 1)
	call := func(cluster string, observed map[string]string) (string, string, bool) {
		r := req(xrJSON(validSpec, `{"phase":"Running"}`), false, observed)
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(cluster)}}}}
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rsp.GetConditions() {
			if c.GetType() == schemas.CondComposed {
				_, hasJob := rsp.GetDesired().GetResources()[resJob]
				return c.GetReason(), c.GetMessage(), hasJob
			}
		}
		t.Fatal("no Composed condition")
		return "", "", false
	}
	steps := []struct {
		name     string
		cluster  string
		observed map[string]string
	}{
		{"the lock request says Held", heldCluster, map[string]string{resLock: lockJSON("Held", holder)}},
		{"a stale XR: nothing observed", heldCluster, nil},
		{"the Job observed", heldCluster, map[string]string{resLock: lockJSON("Held", holder), resJob: job}},
		{"a stale XR again", heldCluster, nil},
	}
	var first string
	for _, s := range steps {
		reason, msg, hasJob := call(s.cluster, s.observed)
		if reason != string(StageJobComposed) || !hasJob {
			t.Fatalf("%s: Composed %s %q, Job desired %v", s.name, reason, msg, hasJob)
		}
		if first == "" {
			first = msg
		}
		if msg != first {
			t.Errorf("%s: the message changed from %q to %q", s.name, first, msg)
		}
	}
	// A dry run's message is one too, composed or observed.
	dry := func(observed map[string]string) string {
		r := req(xrJSON(strings.Replace(validSpec, `"cluster":"prod"`, `"cluster":"prod","dryRun":true`, 1), `{"phase":"Running"}`), true, observed)
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rsp.GetConditions() {
			if c.GetType() == schemas.CondComposed {
				return c.GetMessage()
			}
		}
		return ""
	}
	if composed, running := dry(nil), dry(map[string]string{resJob: job}); composed != running || !strings.HasPrefix(composed, "dry run: ") {
		t.Errorf("a dry run's message changed from %q to %q", composed, running)
	}
	// Once the reconciler has begun the restart, a call that observes the
	// Job from a lagging cache, not yet Complete, still says it succeeded.
	restarting := func(observed map[string]string) string {
		r := req(xrJSON(validSpec, `{"phase":"Running","restart":{"startedAt":"2026-12-05T01:00:00Z","pods":[]}}`), false, observed)
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(heldCluster)}}}}
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		if _, hasJob := rsp.GetDesired().GetResources()[resJob]; !hasJob {
			t.Error("restarting: the Job is not desired")
		}
		for _, c := range rsp.GetConditions() {
			if c.GetType() == schemas.CondComposed {
				return c.GetReason()
			}
		}
		return ""
	}
	done := `{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"prod-2025-10-14-x7k2p-restore","namespace":"vault"},"status":{"conditions":[{"type":"Complete","status":"True"}]}}`
	for name, observed := range map[string]map[string]string{
		"complete":       {resLock: lockJSON("Held", holder), resJob: done},
		"a lagging Job":  {resLock: lockJSON("Held", holder), resJob: job},
		"nothing at all": nil,
	} {
		if reason := restarting(observed); reason != string(StageJobComplete) {
			t.Errorf("restarting, %s: Composed %s, want %s", name, reason, StageJobComplete)
		}
	}
	// Without the cluster's lock naming the restore, nothing is composed.
	if reason, msg, hasJob := call(clusterJSON, nil); reason != string(StageWaitingLock) || hasJob {
		t.Fatalf("no lock anywhere: Composed %s %q, Job desired %v", reason, msg, hasJob)
	}
}

// A restore with no key restores the cluster's newest backup
// (status.backup.latestSnapshot), pinned, and records the choice in
// status.plan.snapshot; the recorded choice wins over a newer backup; with
// no backup reported, the spec is invalid and nothing is composed; a key
// in the spec is used as it is.
func TestRestoreNewestSnapshot(t *testing.T) {
	noKey := strings.Replace(validSpec, `"key":"clusters/prod/a.snap",`, ``, 1)
	latest := func(key string) string {
		return strings.Replace(clusterJSON, `"status":{"initialized":true}`, `"status":{"initialized":true,"backup":{"latestSnapshot":`+
			`{"key":"`+key+`","digest":"`+strings.Repeat("ab", 32)+`","size":4096,"clusterID":"c-1","version":"2.4.0"}}}`, 1)
	}
	run := func(spec, status, cluster string) (*fnv1.RunFunctionResponse, map[string]string) {
		r := req(xrJSON(spec, status), false, map[string]string{resLock: lockJSON("Held", holder)})
		r.RequiredResources = map[string]*fnv1.Resources{reqCluster: {Items: []*fnv1.Resource{{Resource: resource.MustStructJSON(cluster)}}}}
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return rsp, jobEnv(t, rsp)
	}
	planSnapshot := func(rsp *fnv1.RunFunctionResponse) map[string]any {
		return rsp.GetDesired().GetComposite().GetResource().AsMap()["status"].(map[string]any)["plan"].(map[string]any)["snapshot"].(map[string]any)
	}

	rsp, env := run(noKey, `{}`, latest("clusters/prod/newest.snap"))
	want := map[string]string{schemas.EnvRestoreKey: "clusters/prod/newest.snap", schemas.EnvExpectedDigest: "sha256:" + strings.Repeat("ab", 32),
		schemas.EnvExpectedSize: "4096", schemas.EnvExpectedClusterID: "c-1", schemas.EnvExpectedVersion: "2.4.0"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("newest: %s=%q, want %q", k, env[k], v)
		}
	}
	if s := planSnapshot(rsp); s["key"] != "clusters/prod/newest.snap" || s["size"] != float64(4096) || s["clusterID"] != "c-1" {
		t.Errorf("status.plan.snapshot %v", s)
	}

	// A newer backup lands: the recorded choice stays.
	recorded := `{"plan":{"snapshot":{"key":"clusters/prod/newest.snap","digest":"sha256:` + strings.Repeat("ab", 32) + `","size":4096,"clusterID":"c-1","version":"2.4.0"}}}`
	if rsp, env = run(noKey, recorded, latest("clusters/prod/even-newer.snap")); env[schemas.EnvRestoreKey] != "clusters/prod/newest.snap" ||
		planSnapshot(rsp)["key"] != "clusters/prod/newest.snap" {
		t.Errorf("the choice changed: %s", env[schemas.EnvRestoreKey])
	}

	// No backup reported: invalid, nothing composed.
	rsp, _ = run(noKey, `{}`, clusterJSON)
	if len(rsp.GetDesired().GetResources()) != 0 || len(rsp.GetResults()) == 0 || rsp.GetResults()[0].GetMessage() != schemas.MsgNoSnapshot("prod") {
		t.Errorf("no backup: %d composed, results %v", len(rsp.GetDesired().GetResources()), rsp.GetResults())
	}

	// No backup reported but a path prefix: the executor takes the newest
	// object under it, without a key or pins.
	withPrefix := strings.Replace(noKey, `"bucket":"b",`, `"bucket":"b","pathPrefix":"clusters/prod",`, 1)
	if _, env = run(withPrefix, `{}`, clusterJSON); env[schemas.EnvNewestUnderPrefix] != "true" || env[schemas.EnvRestoreKey] != "" ||
		env[schemas.EnvPathPrefix] != "clusters/prod" || env[schemas.EnvExpectedDigest] != "" {
		t.Errorf("newest under the prefix: %v", env)
	}
	if _, env = run(withPrefix, `{}`, latest("clusters/prod/newest.snap")); env[schemas.EnvNewestUnderPrefix] != "" || env[schemas.EnvRestoreKey] != "clusters/prod/newest.snap" {
		t.Errorf("a reported backup wins over the prefix: %v", env)
	}

	// A key in the spec is used as it is, whatever the newest backup.
	if rsp, env = run(validSpec, `{}`, latest("clusters/prod/newest.snap")); env[schemas.EnvRestoreKey] != "clusters/prod/a.snap" || env[schemas.EnvExpectedClusterID] != "" {
		t.Errorf("explicit key: %v", env)
	} else if _, ok := rsp.GetDesired().GetComposite().GetResource().AsMap()["status"].(map[string]any)["plan"].(map[string]any)["snapshot"]; ok {
		t.Error("a restore with a key records a chosen snapshot")
	}
}

// The reconciler's restart asks for the leader's step-down in
// status.restart.stepDown: the function composes the step-down Job (the
// executor in step-down mode, the restore's OpenBao credentials, none of
// the store's, no lock request) until the step-down has ended, and never
// for a finished restore.
func TestStepDownJob(t *testing.T) {
	jobDone := `{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"prod-2025-10-14-x7k2p-restore"},"status":{"conditions":[{"type":"Complete","status":"True"}]}}`
	run := func(status string) *fnv1.Resource {
		r := req(xrJSON(validSpec, status), true, map[string]string{resLock: lockJSON("Held", holder), resJob: jobDone})
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return rsp.GetDesired().GetResources()[resStepDown]
	}
	asked := `{"phase":"Running","restart":{"pods":[],"stepDown":{"pod":"prod-0","requestedAt":"2026-12-05T01:00:00Z"}}}`
	res := run(asked)
	if res == nil {
		t.Fatal("no step-down Job composed for an asked step-down")
	}
	b, _ := json.Marshal(res.GetResource())
	var job batchv1.Job
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if job.Name != "prod-2025-10-14-x7k2p-step-down" || job.Labels[schemas.LabelJobRole] != schemas.JobRoleStepDown ||
		env[schemas.EnvExecutorMode] != schemas.ModeStepDown || env[schemas.EnvStepDownPod] != "prod-0" || env[schemas.EnvAuthMethod] != "token" {
		t.Errorf("step-down Job %s %v: %v", job.Name, job.Labels, env)
	}
	if _, ok := env[schemas.EnvLockRequestName]; ok {
		t.Error("the step-down Job names the lock request")
	}
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Name == storageCredentials {
			t.Error("the step-down Job mounts the store's credentials")
		}
	}
	if *job.Spec.BackoffLimit != 0 {
		t.Errorf("backoffLimit %d, want 0", *job.Spec.BackoffLimit)
	}
	for name, status := range map[string]string{
		"ended":    `{"phase":"Running","restart":{"pods":[],"stepDown":{"pod":"prod-0","endedAt":"2026-12-05T01:00:05Z","outcome":"SteppedDown"}}}`,
		"none":     `{"phase":"Running","restart":{"pods":[]}}`,
		"finished": `{"phase":"Completed","restart":{"pods":[],"stepDown":{"pod":"prod-0"}}}`,
	} {
		if run(status) != nil {
			t.Errorf("%s: a step-down Job is composed", name)
		}
	}
}

// spec.source.fromCluster: a restore with no key takes the newest backup
// of another cluster, pinned but for its cluster ID (another identity),
// and asks Crossplane for that cluster too; a missing source cluster
// composes nothing and says so; the recorded choice is kept; without
// spec.force, or beside a key, the spec is invalid. Naming spec.cluster
// itself is the default behaviour.
func TestRestoreNewestFromCluster(t *testing.T) {
	fromSpec := func(force bool, key string) string {
		s := strings.Replace(validSpec, `"key":"clusters/prod/a.snap",`, key+`"fromCluster":"staging",`, 1)
		if force {
			s = strings.Replace(s, `"cluster":"prod",`, `"cluster":"prod","force":true,`, 1)
		}
		return s
	}
	staging := `{"apiVersion":"openbao.org/v1alpha1","kind":"OpenBaoCluster","metadata":{"name":"staging","namespace":"vault"},` +
		`"spec":{"replicas":1},"status":{"backup":{"latestSnapshot":{"key":"clusters/staging/newest.snap","digest":"` + strings.Repeat("cd", 32) +
		`","size":2048,"clusterID":"c-staging","version":"2.4.0"}}}}`
	run := func(spec, status string, from string) (*fnv1.RunFunctionResponse, map[string]string) {
		r := req(xrJSON(spec, status), true, map[string]string{resLock: lockJSON("Held", holder)})
		if from != "" {
			items := []*fnv1.Resource{}
			if from != "missing" {
				items = append(items, &fnv1.Resource{Resource: resource.MustStructJSON(from)})
			}
			r.RequiredResources[reqFrom] = &fnv1.Resources{Items: items}
		}
		rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return rsp, jobEnv(t, rsp)
	}

	rsp, env := run(fromSpec(true, ""), `{}`, staging)
	if sel := rsp.GetRequirements().GetResources()[reqFrom]; sel.GetMatchName() != "staging" || sel.GetNamespace() != "vault" {
		t.Errorf("the source cluster is not required: %v", rsp.GetRequirements())
	}
	want := map[string]string{schemas.EnvRestoreKey: "clusters/staging/newest.snap", schemas.EnvExpectedDigest: "sha256:" + strings.Repeat("cd", 32),
		schemas.EnvExpectedSize: "2048", schemas.EnvExpectedVersion: "2.4.0", schemas.EnvRestoreForce: "true", schemas.EnvExpectedClusterID: ""}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("from staging: %s=%q, want %q", k, env[k], v)
		}
	}

	// Not yet looked up: nothing composed. Missing: nothing composed, and
	// the message names the field.
	if rsp, _ := run(fromSpec(true, ""), `{}`, ""); len(rsp.GetDesired().GetResources()) != 0 {
		t.Error("composed before the source cluster was looked up")
	}
	rsp, _ = run(fromSpec(true, ""), `{}`, "missing")
	var composed string
	for _, c := range rsp.GetConditions() {
		if c.GetType() == schemas.CondComposed {
			composed = c.GetMessage()
		}
	}
	if _, ok := rsp.GetDesired().GetResources()[resJob]; ok || !strings.Contains(composed, "staging (spec.source.fromCluster) was not found") {
		t.Errorf("missing source: Job composed %v, message %q", ok, composed)
	}

	// The choice, once recorded, is kept even when the source cluster goes.
	recorded := `{"plan":{"snapshot":{"key":"clusters/staging/newest.snap","digest":"sha256:` + strings.Repeat("cd", 32) + `","size":2048,"version":"2.4.0"}}}`
	if _, env := run(fromSpec(true, ""), recorded, "missing"); env[schemas.EnvRestoreKey] != "clusters/staging/newest.snap" {
		t.Errorf("the recorded choice was not kept: %v", env)
	}

	// Invalid: no force; a key beside it. Nothing composed, the field named.
	for name, spec := range map[string]string{
		"no force": fromSpec(false, ""),
		"a key":    fromSpec(true, `"key":"clusters/prod/a.snap",`),
	} {
		rsp, _ := run(spec, `{}`, staging)
		if len(rsp.GetDesired().GetResources()) != 0 || len(rsp.GetResults()) == 0 || !strings.Contains(rsp.GetResults()[0].GetMessage(), "spec.source.fromCluster") {
			t.Errorf("%s: %d composed, results %v", name, len(rsp.GetDesired().GetResources()), rsp.GetResults())
		}
	}

	// Naming spec.cluster itself is the default: no second requirement.
	self := strings.Replace(validSpec, `"key":"clusters/prod/a.snap",`, `"fromCluster":"prod",`, 1)
	rsp, _ = run(self, `{}`, "")
	if _, ok := rsp.GetRequirements().GetResources()[reqFrom]; ok {
		t.Error("fromCluster naming spec.cluster asks for a second cluster")
	}
}

// jobEnv is the environment of the restore Job a response composes, empty
// without one.
func jobEnv(t *testing.T, rsp *fnv1.RunFunctionResponse) map[string]string {
	t.Helper()
	env := map[string]string{}
	if j := rsp.GetDesired().GetResources()[resJob]; j != nil {
		b, _ := json.Marshal(j.GetResource())
		var job batchv1.Job
		if err := json.Unmarshal(b, &job); err != nil {
			t.Fatal(err)
		}
		for _, e := range job.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
	}
	return env
}
