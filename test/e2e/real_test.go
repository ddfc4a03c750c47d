package e2e

import (
	"os"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestRealRestore runs the scenarios with every part real: Crossplane
// installs the packages; a three-voter OpenBao 2.4.0 runs as the pods of a
// StatefulSet under the harness kubelet (each pod its own loopback IP and
// persistent volume, unsealed by the static seal); snapshots live in
// SeaweedFS; the harness kubelet runs our executor as the Job's pod.
func TestRealRestore(t *testing.T) {
	r := StartRealBed(t)
	s := r.s
	// In order: each leaves the cluster healthy and its lock free.
	t.Run("HappyPath", func(t *testing.T) { r.happyPath(t) })
	t.Run("UndoFromSafetySnapshot", r.undo)
	t.Run("NewestUnderPrefix", r.newestUnderPrefix)
	t.Run("NewestSnapshot", r.newest)
	t.Run("Drill", r.drill)
	t.Run("FromCluster", r.fromCluster)
	t.Run("FreshTargetDisposable", r.freshTarget(schemas.LifecycleDisposable, false))
	t.Run("FreshTargetDisposableClaimDeleted", r.freshTarget(schemas.LifecycleDisposable, true))
	t.Run("FreshTargetRetain", r.freshTarget(schemas.LifecycleRetain, false))
	t.Run("MissingSnapshotKey", func(t *testing.T) { r.missingKey(t) })
	t.Run("DryRun", r.dryRun)
	t.Run("LockContention", func(t *testing.T) { r.lockContention(t) })
	t.Run("BreakGlass", func(t *testing.T) { r.breakGlass(t) })
	t.Run("ForeignSnapshotWithForce", func(t *testing.T) { r.foreignSnapshot(t) })
	s.logOpenCircuits(t)
	if os.Getenv("KEEP") == "1" {
		keep(t, s)
	}
}
