package e2e

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// newestUnderPrefix is issue 12's restore of the newest object under the
// path prefix, on the real stack: prod reports no newest backup yet, so a
// claim with no key and a path prefix has the executor list the prefix,
// choose the newest object (safety snapshots aside), record the choice on
// its lock request, and restore it; status.snapshotKey shows it.
func (r *RealBed) newestUnderPrefix(t *testing.T) {
	s := r.s
	if r.snap == nil {
		t.Skip("the happy path did not run")
	}
	const key = "clusters/prod/e2e-newest.snap"
	r.store.Put(t, key, r.snap)
	claim := r.claim(t, "newest-prefix", "", func(src, _ map[string]any) {
		delete(src, "key")
		src["target"].(map[string]any)["pathPrefix"] = "clusters/prod"
	})
	claimed := time.Now()
	s.waitClaim(t, claim, "Completed and Ready", 5*time.Minute, completed)
	t.Logf("e2e: claim with no key under prefix clusters/prod -> Completed and Ready in %s", time.Since(claimed).Round(time.Millisecond))
	xr := s.xrOf(t, claim)
	if got, _, _ := unstructured.NestedString(xr.Object, "status", "snapshotKey"); got != key {
		t.Errorf("status.snapshotKey %q, want the newest object %q", got, key)
	}
	if _, found, _ := unstructured.NestedMap(xr.Object, "status", "plan", "snapshot"); found {
		t.Error("status.plan.snapshot is set: the function chose, not the executor")
	}
	r.serves(t, map[string]string{"app/db": "password-at-snapshot", "app/api": "key-at-snapshot", "app/new": ""})
	s.waitLockFree(t, r.ns, "prod")
}
