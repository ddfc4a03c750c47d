package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// fromCluster is issue 12's spec.source.fromCluster on the real stack: an
// OpenBaoCluster "prod-dr" (the object only; no pods) reports the happy
// path's snapshot as its newest backup, and a claim into prod with no key,
// fromCluster prod-dr and force restores it. Real Crossplane hands the
// function both required clusters; the choice is recorded without a
// cluster ID pin (another cluster's identity), and every node serves the
// snapshot's data.
func (r *RealBed) fromCluster(t *testing.T) {
	s := r.s
	if r.snap == nil {
		t.Skip("the happy path did not run")
	}
	sum := sha256.Sum256(r.snap)
	dr := s.OpenBaoClusterObject(t, r.ns, "prod-dr", 1)
	latest := map[string]any{"key": "clusters/prod/e2e.snap", "digest": "sha256:" + hex.EncodeToString(sum[:]),
		"size": int64(len(r.snap)), "clusterID": "another-cluster-id", "version": "2.4.0"}
	if err := unstructured.SetNestedMap(dr.Object, latest, "status", "backup", "latestSnapshot"); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Status().Update(context.Background(), dr); err != nil {
		t.Fatal(err)
	}
	claim := r.claim(t, "from-dr", "", func(src, spec map[string]any) {
		delete(src, "key")
		src["fromCluster"] = "prod-dr"
		spec["force"] = true
	})
	claimed := time.Now()
	s.waitClaim(t, claim, "Completed and Ready", 5*time.Minute, completed)
	t.Logf("e2e: claim from prod-dr's newest backup -> Completed and Ready in %s", time.Since(claimed).Round(time.Millisecond))
	xr := s.xrOf(t, claim)
	plan, _, _ := unstructured.NestedMap(xr.Object, "status", "plan", "snapshot")
	if id, _ := plan["clusterID"].(string); plan["key"] != latest["key"] || plan["digest"] != latest["digest"] || id != "" {
		t.Errorf("status.plan.snapshot %v: want prod-dr's newest backup, its cluster ID not pinned", plan)
	}
	r.serves(t, map[string]string{"app/db": "password-at-snapshot", "app/api": "key-at-snapshot", "app/new": ""})
	s.waitLockFree(t, r.ns, "prod")
}
