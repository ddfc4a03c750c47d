package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// newest is issue 12's restore of the newest snapshot, on the real stack:
// the cluster reports the happy path's snapshot as its newest backup
// (status.backup.latestSnapshot, as openbao-operator's backup manager
// writes it), and a claim with no key restores it, pinned to its digest,
// size, cluster ID and version, with the choice in status.plan.snapshot.
func (r *RealBed) newest(t *testing.T) {
	s, bao := r.s, r.bao
	if r.snap == nil {
		t.Skip("the happy path did not run")
	}
	sum := sha256.Sum256(r.snap)
	h := bao.Health(t, bao.Leader(t))
	c, err := s.getCluster(r.ns, "prod")
	if err != nil {
		t.Fatal(err)
	}
	latest := map[string]any{"key": "clusters/prod/e2e.snap", "digest": "sha256:" + hex.EncodeToString(sum[:]),
		"size": int64(len(r.snap)), "clusterID": h.ClusterID, "version": h.Version}
	if err := unstructured.SetNestedMap(c.Object, latest, "status", "backup", "latestSnapshot"); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Status().Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	claim := r.claim(t, "newest", "", func(src, _ map[string]any) { delete(src, "key") })
	claimed := time.Now()
	s.waitClaim(t, claim, "Completed and Ready", 5*time.Minute, completed)
	t.Logf("e2e: claim with no key -> Completed and Ready in %s", time.Since(claimed).Round(time.Millisecond))
	xr := s.xrOf(t, claim)
	if key, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "snapshot", "key"); key != latest["key"] {
		t.Errorf("status.plan.snapshot.key %q, want %q", key, latest["key"])
	}
	if key, _, _ := unstructured.NestedString(xr.Object, "status", "snapshotKey"); key != latest["key"] {
		t.Errorf("status.snapshotKey %q, want %q", key, latest["key"])
	}
	r.serves(t, map[string]string{"app/db": "password-at-snapshot", "app/api": "key-at-snapshot", "app/new": ""})
	s.waitLockFree(t, r.ns, "prod")
}
