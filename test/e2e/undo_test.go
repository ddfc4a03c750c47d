package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// undo is issue 13's way back, on the real stack: the happy path's
// restore took a safety snapshot first (the Input's default, Required),
// and its claim's status holds a ready-made claim that restores it. That
// claim, applied as it is, restores the state from before the happy path
// (the later writes are back), with the safety snapshot's digest, size and
// cluster ID pinned.
func (r *RealBed) undo(t *testing.T) {
	s := r.s
	if r.restored == nil {
		t.Skip("the happy path did not run")
	}
	c := &unstructured.Unstructured{Object: map[string]any{"apiVersion": r.restored.GetAPIVersion(), "kind": r.restored.GetKind()}}
	if err := s.Client.Get(context.Background(), client.ObjectKeyFromObject(r.restored), c); err != nil {
		t.Fatal(err)
	}
	st, _, _ := unstructured.NestedMap(c.Object, "status", "safetySnapshot")
	msg, _, _ := unstructured.NestedString(c.Object, "status", "message")
	claimYAML, _ := st["undoClaim"].(string)
	if claimYAML == "" || !strings.Contains(msg, "undo: kubectl get openbaorestore") {
		t.Fatalf("the restore's status has no undo: safetySnapshot %v, message %q", st, msg)
	}
	t.Logf("e2e: safety snapshot %v (%v bytes); undo: %v", st["url"], st["size"], st["undo"])
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(claimYAML), &u.Object); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Create(context.Background(), u); err != nil {
		t.Fatalf("apply the undo claim: %v", err)
	}
	applied := time.Now()
	s.waitClaim(t, u, "Completed and Ready", 5*time.Minute, completed)
	t.Logf("e2e: undo claim -> Completed and Ready in %s", time.Since(applied).Round(time.Millisecond))
	// The state before the restore: the later writes are back.
	r.serves(t, map[string]string{"app/db": "password-after-snapshot", "app/api": "key-at-snapshot", "app/new": "written-after-snapshot"})
	s.waitLockFree(t, r.ns, "prod")
}
