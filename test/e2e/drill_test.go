package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// e2eDrillComposition is the packaged drill Composition with an Input that
// allows the loopback S3 endpoint and names the e2e restore Composition
// for the runs.
const e2eDrillComposition = "openbao-restore-drill-e2e"

// drill is issue 12's restore drill on the real stack: prod reports its
// newest backup (the happy path's snapshot, set by NewestSnapshot); a drill
// checks two paths. A manual trigger starts run 1: Crossplane composes its
// restore of a Disposable new cluster, the stand-in operator bootstraps it,
// the executor restores and confirms it, then the read check logs in with
// prod's token and reads both paths: Passed, with a time to recover. Its
// cluster goes at once (cleanupAfterSeconds 0). Run 2 also checks a path
// written after the backup was taken: ReadCheckFailed, naming it, and its
// cluster goes too; prod is untouched throughout.
func (r *RealBed) drill(t *testing.T) {
	s := r.s
	if r.snap == nil {
		t.Skip("the happy path did not run")
	}
	ctx := context.Background()
	s.e2eDrillComposition(t)
	if err := s.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "drill-read-token"},
		StringData: map[string]string{schemas.KeyToken: r.bao.RootToken}}); err != nil {
		t.Fatal(err)
	}
	prodID := r.bao.Health(t, 0).ClusterID
	d := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.DrillClaimKind,
		"metadata": map[string]any{"name": "prod-drill", "namespace": r.ns},
		"spec": map[string]any{
			"compositionRef": map[string]any{"name": e2eDrillComposition},
			"source": map[string]any{"cluster": "prod", "target": map[string]any{"provider": "s3", "endpoint": r.store.URL, "bucket": r.store.Bucket,
				"region": "us-east-1", "usePathStyle": true, "credentialsSecretRef": map[string]any{"name": "backup-s3"}}},
			"schedule":        "0 3 * * 0",
			"clusterTemplate": map[string]any{"version": "2.4.0", "tls": map[string]any{"enabled": true}, "unseal": map[string]any{"type": "static"}},
			"readPaths":       []any{"secret/data/app/db", "secret/data/app/api"},
			"tokenSecretRef":  map[string]any{"name": "drill-read-token"},
		},
	}}
	testbed.Eventually(t, time.Minute, "the drill claim created (its XRD served)", func() (bool, error) {
		err := s.Client.Create(ctx, d.DeepCopy())
		return err == nil, err
	})

	run := func(n int64, wantOutcome, wantReason, wantMessage string) map[string]any {
		name := schemas.RunName("prod-drill", n)
		// Each run's new cluster opens prod's snapshot with prod's static
		// seal key, given as openbao-operator reads a static key.
		var seal corev1.Secret
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "prod-seal"}, &seal); err != nil {
			t.Fatal(err)
		}
		if err := s.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: name + "-unseal-key"}, Data: seal.Data}); err != nil {
			t.Fatal(err)
		}
		xr := s.drillXR(t, r.ns, "prod-drill")
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, schemas.AnnotationRunNow, n)
		if err := s.Client.Patch(ctx, xr, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		t.Logf("e2e: drill prod-drill triggered: run %d", n)
		testbed.Eventually(t, time.Minute, fmt.Sprintf("run %d begun", n), func() (bool, error) {
			x := s.drillXR(t, r.ns, "prod-drill")
			a, _, _ := unstructured.NestedMap(x.Object, "status", "active")
			st, _, _ := unstructured.NestedMap(x.Object, "status")
			return fmt.Sprint(a["run"]) == fmt.Sprint(n), fmt.Errorf("status %v, annotations %v", st, x.GetAnnotations())
		})
		s.bootstrapComposed(t, r.k, r.ns, name)
		var got map[string]any
		testbed.Eventually(t, 5*time.Minute, fmt.Sprintf("run %d recorded", n), func() (bool, error) {
			x := s.drillXR(t, r.ns, "prod-drill")
			runs, _, _ := unstructured.NestedSlice(x.Object, "status", "runs")
			if len(runs) > 0 {
				if m := runs[0].(map[string]any); fmt.Sprint(m["run"]) == fmt.Sprint(n) {
					got = m
					return true, nil
				}
			}
			a, _, _ := unstructured.NestedMap(x.Object, "status", "active")
			return false, fmt.Errorf("active %v", a)
		})
		t.Logf("e2e: run %d: %s (%s) in %s: %s", n, got["outcome"], got["reason"], time.Since(began).Round(time.Millisecond), got["message"])
		if got["outcome"] != wantOutcome || got["reason"] != wantReason || !strings.Contains(fmt.Sprint(got["message"]), wantMessage) {
			t.Errorf("run %d: %v", n, got)
		}
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.ClusterGroup, Version: schemas.ClusterVersion, Kind: schemas.ClusterKind})
		testbed.Eventually(t, 2*time.Minute, fmt.Sprintf("run %d's cluster gone", n), func() (bool, error) {
			err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: name}, c)
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if id := r.bao.Health(t, 0).ClusterID; id != prodID {
			t.Errorf("prod's cluster_id changed: %s, was %s", id, prodID)
		}
		return got
	}

	got := run(1, "Passed", schemas.DrillPassed, "read 2 path(s)")
	if ttr := fmt.Sprint(got["timeToRecoverSeconds"]); ttr == "" || ttr == "0" || ttr == "<nil>" {
		t.Errorf("run 1: no time to recover: %v", got)
	}
	t.Logf("e2e: run 1's time to recover %vs: the new cluster up in %vs, restored in %vs, read in %vs",
		got["timeToRecoverSeconds"], got["bootstrapSeconds"], got["restoreSeconds"], got["checksSeconds"])
	x := s.drillXR(t, r.ns, "prod-drill")
	if last, _, _ := unstructured.NestedString(x.Object, "status", "lastSuccessTime"); last == "" {
		t.Error("status.lastSuccessTime not set")
	}

	// A path the backup does not hold: app/new was written after it. The
	// claim's spec is the XR's.
	claim := d.DeepCopy()
	if err := s.Client.Patch(ctx, claim, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"readPaths":["secret/data/app/db","secret/data/app/new"]}}`))); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, time.Minute, "the new paths on the drill's XR", func() (bool, error) {
		paths, _, _ := unstructured.NestedStringSlice(s.drillXR(t, r.ns, "prod-drill").Object, "spec", "readPaths")
		return len(paths) == 2 && paths[1] == "secret/data/app/new", nil
	})
	run(2, "Failed", schemas.DrillReadCheckFailed, "secret/data/app/new (not found")
	r.serves(t, map[string]string{"app/db": "password-at-snapshot"})
}

// drillXR reads the drill claim's XR.
func (s *Stack) drillXR(t testing.TB, ns, claim string) *unstructured.Unstructured {
	t.Helper()
	c := &unstructured.Unstructured{}
	c.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.DrillClaimKind})
	var xr *unstructured.Unstructured
	testbed.Eventually(t, time.Minute, "the drill's XR", func() (bool, error) {
		if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: claim}, c); err != nil {
			return false, err
		}
		name, _, _ := unstructured.NestedString(c.Object, "spec", "resourceRef", "name")
		if name == "" {
			return false, nil
		}
		xr = &unstructured.Unstructured{}
		xr.SetGroupVersionKind(schemas.LegacyDrillXR)
		err := s.Client.Get(context.Background(), client.ObjectKey{Name: name}, xr)
		return err == nil, err
	})
	return xr
}

// e2eDrillComposition copies the packaged drill Composition with the test
// bed's Input: insecure endpoints allowed, the runs on the e2e restore
// Composition.
func (s *Stack) e2eDrillComposition(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	c := &unstructured.Unstructured{}
	c.SetAPIVersion("apiextensions.crossplane.io/v1")
	c.SetKind("Composition")
	testbed.Eventually(t, time.Minute, "the drill Composition", func() (bool, error) {
		err := s.Client.Get(ctx, client.ObjectKey{Name: "xopenbaorestoredrills." + schemas.Group}, c)
		return err == nil, client.IgnoreNotFound(err)
	})
	steps, _, _ := unstructured.NestedSlice(c.Object, "spec", "pipeline")
	for _, st := range steps {
		in, _ := st.(map[string]any)["input"].(map[string]any)
		in["allowInsecureEndpoints"] = true
		in["restoreComposition"] = e2eComposition
	}
	cp := &unstructured.Unstructured{Object: map[string]any{"apiVersion": c.GetAPIVersion(), "kind": c.GetKind(),
		"metadata": map[string]any{"name": e2eDrillComposition}, "spec": c.Object["spec"]}}
	_ = unstructured.SetNestedSlice(cp.Object, steps, "spec", "pipeline")
	if err := s.Client.Create(ctx, cp); err != nil {
		t.Fatal(err)
	}
}
