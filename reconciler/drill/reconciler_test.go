package drill

import (
	"context"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{CRDDirs: []string{testbed.TestCRDs}, NoKCM: true, NoScheduler: true, NoKwok: true})
}

// TestReconcileOnAPIServer runs Reconcile on a real API server, as the
// generated role (rbac/role.yaml): a drill of a followed namespace gets its
// schedule written by server-side apply; one of another namespace is left
// alone, not retried; a backup of a scheduled drill's source writes
// nothing.
func TestReconcileOnAPIServer(t *testing.T) {
	env := testbed.Shared(t)
	env.InstallCRDObjects(t,
		testbed.XRCRD(t, "package/configuration/xrd-drill.yaml", apiextensionsv1.ClusterScoped),
		testbed.ClaimCRD(t, "package/configuration/xrd.yaml"))
	cfg, err := env.RoleUser(context.Background(), "openbao-restore-drill-test", "rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	ctx := context.Background()
	as, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.CreateClusterObject(ctx, ns, "prod", 1); err != nil {
		t.Fatal(err)
	}
	drill := func(name, claimNS string) types.NamespacedName {
		spec := testbed.ExampleSpec(t, "claim-drill.yaml")
		spec["claimRef"] = map[string]any{"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.DrillClaimKind, "name": name, "namespace": claimNS}
		xr := &unstructured.Unstructured{Object: map[string]any{"spec": runtime.DeepCopyJSON(spec)}}
		xr.SetGroupVersionKind(schemas.LegacyDrillXR)
		xr.SetName(ns + "-" + name)
		if err := env.Client.Create(ctx, xr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), xr) })
		return types.NamespacedName{Name: xr.GetName()}
	}
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	r := &Reconciler{GVK: schemas.LegacyDrillXR, Cache: as, Client: as, APIReader: as, Recorder: events.NewFakeRecorder(10),
		Now: func() time.Time { return now }, Namespaces: []string{ns}}
	status := func(key types.NamespacedName) map[string]any {
		xr := &unstructured.Unstructured{}
		xr.SetGroupVersionKind(schemas.LegacyDrillXR)
		if err := env.Client.Get(ctx, key, xr); err != nil {
			t.Fatal(err)
		}
		st, _, _ := unstructured.NestedMap(xr.Object, "status")
		return st
	}

	mine := drill("weekly", ns)
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: mine})
	if err != nil {
		t.Fatal(err)
	}
	st := status(mine)
	if st["nextRunAt"] != "2026-12-06T03:00:00Z" || res.RequeueAfter != 17*time.Hour {
		t.Fatalf("status %v, requeue after %s; want the next Sunday 03:00 UTC, 17h away", st, res.RequeueAfter)
	}

	other := drill("elsewhere", "another-namespace")
	res, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: other})
	if err != nil || res.RequeueAfter != 0 {
		t.Fatalf("a drill of another namespace: %v, requeue after %s", err, res.RequeueAfter)
	}
	if st := status(other); len(st) != 0 {
		t.Errorf("a drill of another namespace was written: %v", st)
	}

	// A new backup of prod: a scheduled drill does not count backups.
	c := &unstructured.Unstructured{}
	c.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
	c.SetKind(schemas.ClusterKind)
	c.SetNamespace(ns)
	c.SetName("prod")
	patch := []byte(`{"status":{"backup":{"latestSnapshot":{"key":"clusters/prod/new.snap","version":"2.4.0"}}}}`)
	if err := env.Client.Status().Patch(ctx, c, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	before := status(mine)
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: mine}); err != nil {
		t.Fatal(err)
	}
	if after := status(mine); after["lastBackupKey"] != nil || after["backupsSinceRun"] != nil || len(after) != len(before) {
		t.Errorf("a backup changed a scheduled drill: %v, was %v", after, before)
	}
}
