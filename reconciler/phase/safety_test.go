package phase

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// The undo is the user's restore with the safety snapshot's key and pins,
// the composition kept and Crossplane's own fields dropped, and one
// command that applies it.
func TestUndoClaim(t *testing.T) {
	o := Origin{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind, Name: "prod-2026-12-04", Namespace: "vault",
		Spec: map[string]any{
			"claimRef":       map[string]any{"name": "prod-2026-12-04"},
			"resourceRefs":   []any{map[string]any{"kind": "Job"}},
			"compositionRef": map[string]any{"name": "openbao-restore"},
			"cluster":        "prod", "force": true, "overrideOperationLock": true, "dryRun": false,
			"source": map[string]any{"key": "clusters/prod/old.snap", "expectedDigest": "sha256:00", "expectedVersion": "2.4.0",
				"target": map[string]any{"bucket": "b"}},
			"tokenSecretRef": map[string]any{"name": "tok"},
		}}
	s := schemas.SafetySnapshot{Key: "safety/vault/prod/prod-2026-12-04-20261204T221000Z.snap", SHA256: "ab", Size: 42, ClusterID: "c-1"}
	claim, cmd := undo(o, s)
	var got map[string]any
	if err := yaml.Unmarshal([]byte(claim), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.ClaimKind,
		"metadata": map[string]any{"name": "prod-2026-12-04-undo", "namespace": "vault"},
		"spec": map[string]any{
			"compositionRef": map[string]any{"name": "openbao-restore"},
			"cluster":        "prod", "force": true,
			"source": map[string]any{"key": s.Key, "expectedDigest": "sha256:ab", "expectedSize": float64(42), "expectedClusterID": "c-1", "expectedVersion": "2.4.0",
				"target": map[string]any{"bucket": "b"}},
			"tokenSecretRef": map[string]any{"name": "tok"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("undo claim (-want +got):\n%s", diff)
	}
	if cmd != "kubectl get openbaorestore."+schemas.Group+" prod-2026-12-04 -n vault -o jsonpath='{.status.safetySnapshot.undoClaim}' | kubectl apply -f -" {
		t.Errorf("command %q", cmd)
	}
	if o.Spec["claimRef"] == nil || o.Spec["source"].(map[string]any)["key"] != "clusters/prod/old.snap" {
		t.Error("the XR's spec was changed")
	}
	long := o
	long.Name = strings.Repeat("a", 70)
	if claim, _ := undo(long, s); !strings.Contains(claim, "name: "+strings.Repeat("a", 58)+"-undo\n") {
		t.Errorf("a long name: %s", claim)
	}
}

// A Completed restore with a safety snapshot says how to undo it; one
// whose safety snapshot was skipped reports why, with no undo.
func TestNextSafetySnapshot(t *testing.T) {
	origin := Origin{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind, Name: "r", Namespace: "vault", Spec: map[string]any{"cluster": "prod"}}
	job := func(s *schemas.SafetySnapshot) *Job {
		return &Job{Name: "j", Complete: true, Pods: []Pod{{Name: "p", Termination: &schemas.TerminationMessage{Submitted: true, SnapshotKey: "k", Safety: s}}}}
	}
	taken := &schemas.SafetySnapshot{Key: "safety/k.snap", URL: "s3://b/safety/k.snap", SHA256: "ab", Size: 3, ClusterID: "c"}
	got, _ := Next(Status{Phase: schemas.PhaseRunning}, Facts{Cluster: &Cluster{Initialized: true}, Origin: origin, Members: healthy3(), Job: job(taken)})
	if got.SafetySnapshot == nil || got.SafetySnapshot.Key != taken.Key || !strings.Contains(got.SafetySnapshot.UndoClaim, "expectedDigest: sha256:ab") {
		t.Fatalf("safety %+v", got.SafetySnapshot)
	}
	earlier := metav1.NewTime(time.Now().Add(-time.Minute))
	done := Status{Phase: schemas.PhaseRunning, SafetySnapshot: got.SafetySnapshot, SnapshotKey: "k", Restart: &restart.Restart{StartedAt: &earlier}}
	for _, n := range []string{"prod-1", "prod-2", "prod-0"} {
		done.Restart.Pods = append(done.Restart.Pods, restart.RestartedPod{Name: n, UID: "x", DeletedAt: &earlier, HealthyAt: &earlier})
	}
	fin, _ := Next(done, Facts{Cluster: &Cluster{Initialized: true}, Origin: origin, Members: healthy3(), Job: job(taken)})
	if fin.Phase != schemas.PhaseCompleted || !strings.Contains(fin.Message, "undo: kubectl get openbaorestore") {
		t.Fatalf("%s: %s", fin.Phase, fin.Message)
	}
	skipped, _ := Next(Status{Phase: schemas.PhaseRunning}, Facts{Cluster: &Cluster{Initialized: true}, Origin: origin, Members: healthy3(),
		Job: job(&schemas.SafetySnapshot{Skipped: "read-only credentials"})})
	if s := skipped.SafetySnapshot; s == nil || s.Skipped != "read-only credentials" || s.UndoClaim != "" {
		t.Fatalf("skipped %+v", s)
	}
}
