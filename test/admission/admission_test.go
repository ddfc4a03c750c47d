// Package admission tries the generated XRD schema against a real
// kube-apiserver: the invalid corpus is refused at admission where OpenAPI
// and CEL can refuse it, the spec is immutable, and Crossplane's own spec
// writes still pass.
//
// Crossplane turns the XRD into the claim and XR CRDs; its generator is
// internal, so this test wraps the XRD's schema the same way (the restore's
// schema plus Crossplane's own spec fields, which are open objects here).
// The end-to-end tests install the XRD through real Crossplane.
package admission

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{NoKCM: true, NoScheduler: true, NoKwok: true})
}

// install installs the claim CRD of the XRD at file (the restore's when
// empty) and returns a client that knows it.
func install(t *testing.T, e *testbed.Env, file ...string) client.Client {
	t.Helper()
	xrd := "package/configuration/xrd.yaml"
	if len(file) > 0 {
		xrd = file[0]
	}
	e.InstallCRDObjects(t, testbed.ClaimCRD(t, xrd))
	c, err := client.New(e.Config, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func claim(t *testing.T, file, ns string) *unstructured.Unstructured {
	t.Helper()
	spec := testbed.ExampleSpec(t, file)
	delete(spec, "claimRef") // the XR fixtures carry the XR's own field
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.ClaimKind})
	u.SetNamespace(ns)
	u.SetName(strings.TrimSuffix(filepath.Base(file), ".yaml"))
	return u
}

// TestInvalidCorpusAtAdmission: what OpenAPI and CEL can express is refused
// by the apiserver, with the field in the message; the rest is left to the
// function (and named here, so a change of either side shows).
func TestInvalidCorpusAtAdmission(t *testing.T) {
	e := testbed.Shared(t)
	k := install(t, e)
	ns := e.Namespace(t)
	// Refused by the XRD's OpenAPI schema and CEL rules (schemas/admission.cue),
	// in the function's words.
	refused := map[string]string{
		"bad-digest":                 "spec.source.expectedDigest",
		"bad-provider":               "spec.source.target.provider",
		"secret-namespace":           "credentialsSecretRef.namespace",
		"unsupported-field":          "workloadIdentity",
		"template-without-force":     "spec.clusterTemplate restores into a new cluster",
		"template-version-mismatch":  "spec.source.expectedVersion must equal spec.clusterTemplate.version",
		"template-with-token":        "spec.tokenSecretRef is not allowed with spec.clusterTemplate",
		"lifecycle-without-template": "spec.targetLifecycle only applies to spec.clusterTemplate",
		"azure-no-account":           "spec.source.target.azure.storageAccount is required when provider is azure",
		"dry-run-override":           "spec.overrideOperationLock has no effect on a dry run",
		"key-traversal":              "spec.source.key must not contain a '..' segment",
		"override-without-force":     "spec.overrideOperationLock requires spec.force",
		"system-secret":              "spec.tokenSecretRef.name names the cluster's system Secret prod-root-token",
		"from-cluster-with-key":      "spec.source.fromCluster restores the newest backup of that cluster",
		"from-cluster-without-force": "spec.source.fromCluster names another cluster",
	}
	// The Input's policy and the cluster (authentication) live in the
	// function alone.
	functionOnly := map[string]bool{"custom-image": true, "link-local-endpoint": true, "localhost-endpoint": true, "no-auth": true,
		"template-foreign-cluster": true}
	atAdmission(t, k, ns, "invalid", schemas.ClaimKind, refused, functionOnly)
}

// atAdmission creates each example of examples/<dir> as a claim of kind:
// those in refused must be refused with its words, those in functionOnly
// admitted; every example must be in one of them.
func atAdmission(t *testing.T, k client.Client, ns, dir, kind string, refused map[string]string, functionOnly map[string]bool) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testbin.Root(), "examples", dir, "*.yaml"))
	for _, f := range files {
		n := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(n, func(t *testing.T) {
			c := claim(t, dir+"/"+n+".yaml", ns)
			c.SetKind(kind)
			err := k.Create(context.Background(), c)
			switch {
			case refused[n] != "":
				if err == nil || !strings.Contains(err.Error(), refused[n]) {
					t.Fatalf("want refusal naming %s, got %v", refused[n], err)
				}
			case functionOnly[n]:
				if err != nil {
					t.Fatalf("admission refused what only the function checks: %v", err)
				}
			default:
				t.Fatalf("example %s/%s is in neither list", dir, n)
			}
		})
	}
}

// TestImmutableSpec: a restore's own fields cannot change, be removed or be
// added; Crossplane's writes into the spec still pass.
func TestImmutableSpec(t *testing.T) {
	e := testbed.Shared(t)
	k := install(t, e)
	ns := e.Namespace(t)
	ctx := context.Background()
	c := claim(t, "claim.yaml", ns)
	if err := k.Create(ctx, c); err != nil {
		t.Fatalf("create the example claim: %v", err)
	}
	// Defaults are applied at admission, as the CUE contract says.
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(c.GroupVersionKind())
	if err := k.Get(ctx, client.ObjectKeyFromObject(c), got); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedInt64(got.Object, "spec", "source", "target", "partSize"); v != 10485760 {
		t.Errorf("partSize default = %d, want 10485760", v)
	}
	if v, _, _ := unstructured.NestedBool(got.Object, "spec", "force"); v {
		t.Error("force defaulted to true")
	}

	mutate := func(name string, f func(u *unstructured.Unstructured), wantRefused bool) {
		t.Run(name, func(t *testing.T) {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(c.GroupVersionKind())
			if err := k.Get(ctx, client.ObjectKeyFromObject(c), cur); err != nil {
				t.Fatal(err)
			}
			f(cur)
			err := k.Update(ctx, cur)
			if wantRefused && (err == nil || !strings.Contains(err.Error(), "immutable")) {
				t.Fatalf("want the update refused as immutable, got %v", err)
			}
			if !wantRefused && err != nil {
				t.Fatalf("update refused: %v", err)
			}
		})
	}
	mutate("change cluster", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "other", "spec", "cluster")
	}, true)
	mutate("change key", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "x.snap", "spec", "source", "key")
	}, true)
	mutate("remove tokenSecretRef", func(u *unstructured.Unstructured) {
		unstructured.RemoveNestedField(u.Object, "spec", "tokenSecretRef")
	}, true)
	mutate("add jwtAuthRole", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "r", "spec", "jwtAuthRole")
	}, true)
	mutate("set force", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, true, "spec", "force")
	}, true)
	mutate("Crossplane writes its refs", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedMap(u.Object, map[string]any{"name": "xopenbaorestores.restore.openbao-restore.io"}, "spec", "compositionRef")
		_ = unstructured.SetNestedMap(u.Object, map[string]any{"apiVersion": "restore.openbao-restore.io/v1alpha1", "kind": "XOpenBaoRestore", "name": "x-abcde"}, "spec", "resourceRef")
	}, false)
	mutate("labels and annotations", func(u *unstructured.Unstructured) {
		u.SetAnnotations(map[string]string{schemas.AcknowledgeAnnotation: string(u.GetUID()) + "/Resume"})
	}, false)
}

// Every valid example claim is admitted: the one with every field, a dry
// run, and one with no key (the newest backup), which the CEL rules on the
// key must let through.
func TestValidClaimsAdmitted(t *testing.T) {
	e := testbed.Shared(t)
	k := install(t, e)
	ns := e.Namespace(t)
	for _, f := range []string{"claim.yaml", "claim-dry-run.yaml", "claim-latest.yaml", "claim-from-cluster.yaml"} {
		if err := k.Create(context.Background(), claim(t, f, ns)); err != nil {
			t.Errorf("%s refused: %v", f, err)
		}
	}
}

// TestInvalidDrillsAtAdmission: the invalid drills (examples/invalid-drill)
// that OpenAPI and CEL can refuse are refused at admission, in the
// function's words; the rest pass to the function, which refuses them
// naming the field (schemas TestInvalidDrillExamples, the e2e).
func TestInvalidDrillsAtAdmission(t *testing.T) {
	e := testbed.Shared(t)
	k := install(t, e, "package/configuration/xrd-drill.yaml")
	ns := e.Namespace(t)
	refused := map[string]string{
		"both-triggers":            "spec.schedule and spec.everySuccessfulBackups: set exactly one",
		"four-field-schedule":      "spec.schedule",
		"reads-without-token":      "spec.readPaths needs spec.tokenSecretRef",
		"template-without-version": "spec.clusterTemplate.version: Required value",
	}
	// A cron expression's meaning and the cluster's system Secrets are the
	// function's to check.
	functionOnly := map[string]bool{"bad-cron": true, "system-token": true}
	atAdmission(t, k, ns, "invalid-drill", schemas.DrillClaimKind, refused, functionOnly)
	// The example drill is admitted.
	d := claim(t, "claim-drill.yaml", ns)
	d.SetKind(schemas.DrillClaimKind)
	if err := k.Create(context.Background(), d); err != nil {
		t.Errorf("claim-drill.yaml refused: %v", err)
	}
}
