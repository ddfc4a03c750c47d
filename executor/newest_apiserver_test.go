package executor

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// The choice of a restore with no key, on a real API server with the
// executor's composed Role: the first pod records it, a retried pod gets
// the recorded one without listing, and the CRD keeps it as written.
func TestChooseOnceAPIServer(t *testing.T) {
	t.Parallel()
	b := startAPIBed(t)
	ns := b.env.Namespace(t)
	rs := newRestore(ns, "newest", "uid-newest")
	b.composeRBAC(t, rs)
	b.lock(t, rs, schemas.LockHeld)
	ctx := t.Context()

	first := Chosen{Key: "clusters/prod/b.snap", ETag: `"e1"`, Size: 42, ChosenAt: metav1.Now().Rfc3339Copy()}
	k := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	got, err := k.Choose(ctx, func() (Chosen, error) { return first, nil })
	if err != nil || got.Key != first.Key {
		t.Fatalf("first choice: %+v %v", got, err)
	}
	if lr := b.get(t, ns, rs.names.Lock); lr.Status.Chosen == nil || lr.Status.Chosen.Key != first.Key || lr.Status.State != schemas.LockHeld {
		t.Fatalf("recorded %+v, state %s", lr.Status.Chosen, lr.Status.State)
	}

	retry := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	got, err = retry.Choose(ctx, func() (Chosen, error) {
		t.Error("a retried pod listed again")
		return Chosen{Key: "clusters/prod/c.snap"}, nil
	})
	if err != nil || got.Key != first.Key || got.ETag != first.ETag {
		t.Fatalf("retry: %+v %v, want the first choice", got, err)
	}

	// Written once: not even an admin changes it.
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"chosen": map[string]any{"key": "clusters/prod/other.snap", "chosenAt": first.ChosenAt}}})
	lr := b.get(t, ns, rs.names.Lock)
	err = b.env.Client.Status().Patch(ctx, lr, client.RawPatch(types.MergePatchType, patch))
	if err == nil || !strings.Contains(err.Error(), "a choice is written once") {
		t.Fatalf("an admin changed the choice: %v", err)
	}
}
