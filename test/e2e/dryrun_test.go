package e2e

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// dryRun is issue 13's dry run on the real stack: while a Backup holds the
// cluster's lock, a dry run of the happy path's snapshot runs every check
// with the real executor, reads the whole snapshot from SeaweedFS, and ends
// Completed with its report in status.dryRun. It takes no lock (the
// Backup's stays), sends nothing (the data stays) and restarts no pod. A
// dry run of a truncated copy of the snapshot ends Failed, naming the
// check and the archive's fault, equally harmless.
func (r *RealBed) dryRun(t *testing.T) {
	s, bao := r.s, r.bao
	const holder = "openbaobackup/nightly-dry"
	want := bao.Get(t, 0, "app/db")
	before := s.podUIDs(t, r.ns)
	s.holdBackupLock(t, r.ns, "prod", holder)
	defer s.releaseLock(t, r.ns, "prod")

	claim := r.claim(t, "dry-run", "clusters/prod/e2e.snap", func(_, spec map[string]any) { spec["dryRun"] = true })
	claimed := time.Now()
	s.waitClaim(t, claim, "Completed and Ready", 3*time.Minute, completed)
	t.Logf("e2e: dry run claim -> Completed in %s, beside a Backup's lock", time.Since(claimed).Round(time.Millisecond))
	xr := s.xrOf(t, claim)
	checks, _, _ := unstructured.NestedSlice(xr.Object, "status", "dryRun", "checks")
	var names []string
	for _, c := range checks {
		m := c.(map[string]any)
		names = append(names, m["name"].(string))
		if passed, _ := m["passed"].(bool); !passed {
			t.Errorf("check %v did not pass", m)
		}
	}
	if got := strings.Join(names, ","); got != "configuration,object,leader,auth,capability,clusterPin,snapshot" {
		t.Errorf("status.dryRun.checks %s", got)
	}
	if v, _, _ := unstructured.NestedString(xr.Object, "status", "dryRun", "snapshotVersion"); v == "" {
		t.Errorf("status.dryRun.snapshotVersion is empty: %v", xr.Object["status"])
	}
	if size, _, _ := unstructured.NestedInt64(xr.Object, "status", "dryRun", "archive", "stateSize"); size == 0 {
		t.Errorf("status.dryRun.archive %v", xr.Object["status"])
	}
	r.untouched(t, holder, want, before, xr.GetName())

	// A truncated copy: Failed, naming the check; still harmless.
	r.store.Put(t, "clusters/prod/e2e-truncated.snap", r.snap[:len(r.snap)*2/3])
	bad := r.claim(t, "dry-run-truncated", "clusters/prod/e2e-truncated.snap", func(_, spec map[string]any) { spec["dryRun"] = true })
	var msg string
	s.waitClaim(t, bad, "Failed", 3*time.Minute, func(c *unstructured.Unstructured, phase, _ string) bool {
		msg, _, _ = unstructured.NestedString(c.Object, "status", "message")
		return phase == schemas.PhaseFailed
	})
	if !strings.Contains(msg, "dry run: the check snapshot failed") || !strings.Contains(msg, "ends early") {
		t.Errorf("message %q", msg)
	}
	r.untouched(t, holder, want, before, s.xrOf(t, bad).GetName())
}

// untouched checks that a dry run left everything as it was: the Backup
// still holds the lock, the data is the same on every node, no pod was
// restarted, and the restore composed no lock request.
func (r *RealBed) untouched(t *testing.T, holder, want string, before map[string]string, xr string) {
	t.Helper()
	s := r.s
	c, err := s.getCluster(r.ns, "prod")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(c.Object, "status", "operationLock", "holder"); got != holder {
		t.Errorf("the cluster's lock holder is %q, want the Backup's %q", got, holder)
	}
	for i := range r.bao.Nodes {
		if got := r.bao.Get(t, i, "app/db"); got != want {
			t.Errorf("node %d: app/db = %q, want %q (untouched)", i, got, want)
		}
	}
	if after := s.podUIDs(t, r.ns); !maps.Equal(before, after) {
		t.Errorf("pods restarted by a dry run: %v -> %v", before, after)
	}
	var locks lockv1alpha1.LockRequestList
	if err := s.Client.List(context.Background(), &locks, client.InNamespace(r.ns), client.MatchingLabels{"crossplane.io/composite": xr}); err != nil || len(locks.Items) != 0 {
		t.Errorf("a dry run composed %d lock requests (%v)", len(locks.Items), err)
	}
}
