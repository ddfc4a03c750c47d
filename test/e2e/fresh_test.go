package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// freshTarget is issue 12's fresh-target restore on the real stack: a claim
// with a clusterTemplate restores the happy path's snapshot of prod into a
// new cluster. Crossplane composes the OpenBaoCluster; the stand-in
// operator runs it (one voter, TLS, prod's static seal key from
// <name>-unseal-key, self-initialised with the executor's JWT login the
// function added); the executor logs in with its ServiceAccount's token,
// restores through snapshot-force and confirms the new identity, the pod
// restarts, and the claim is Completed with no human step. The new cluster
// then serves prod's data as of the snapshot, under prod's identity. A
// Disposable one is deleted cleanupAfterSeconds after the end; a Retained
// one outlives its claim. With deleteClaim, a Disposable one whose cleanup
// is an hour away goes with its claim instead.
func (r *RealBed) freshTarget(lifecycle string, deleteClaim bool) func(t *testing.T) {
	return func(t *testing.T) {
		s := r.s
		if r.snap == nil {
			t.Skip("the happy path did not run")
		}
		ctx := context.Background()
		name := "restored-" + strings.ToLower(lifecycle)
		if deleteClaim {
			name += "-deleted"
		}
		var seal corev1.Secret
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "prod-seal"}, &seal); err != nil {
			t.Fatal(err)
		}
		if err := s.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: name + "-unseal-key"}, Data: seal.Data}); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(r.snap)
		claim := r.claim(t, name, "clusters/prod/e2e.snap", func(src, spec map[string]any) {
			delete(spec, "tokenSecretRef")
			spec["cluster"] = name
			spec["force"] = true
			spec["targetLifecycle"] = lifecycle
			if lifecycle == schemas.LifecycleDisposable {
				spec["cleanupAfterSeconds"] = int64(5)
				if deleteClaim {
					spec["cleanupAfterSeconds"] = int64(3600)
				}
			}
			spec["clusterTemplate"] = map[string]any{"version": "2.4.0", "tls": map[string]any{"enabled": true}, "unseal": map[string]any{"type": "static"}}
			src["expectedDigest"] = "sha256:" + hex.EncodeToString(sum[:])
			src["expectedSize"] = int64(len(r.snap))
			src["expectedClusterID"] = r.snapID
			src["expectedVersion"] = "2.4.0"
		})
		claimed := time.Now()
		t.Logf("e2e: claim %s/%s created: restore clusters/prod/e2e.snap into a new cluster %s (%s)", r.ns, claim.GetName(), name, lifecycle)
		target := s.bootstrapComposed(t, r.k, r.ns, name)
		up := time.Since(claimed)
		s.waitClaim(t, claim, "Completed and Ready", 5*time.Minute, completed)
		t.Logf("e2e: claim -> Completed and Ready in %s (the new cluster up after %s)", time.Since(claimed).Round(time.Millisecond), up.Round(time.Millisecond))

		xr := s.xrOf(t, claim)
		st, _, _ := unstructured.NestedMap(xr.Object, "status")
		r.executorLog(t, st)
		if upAt, _, _ := unstructured.NestedString(st, "target", "upAt"); upAt == "" {
			t.Errorf("status.target %v: no upAt", st["target"])
		}
		// The new cluster is prod as of the snapshot: prod's identity, its
		// data, read with prod's root token (valid in the restored data).
		target.RootToken = r.bao.RootToken
		target.WaitHealthy(t)
		if h := target.Health(t, 0); h.ClusterID != r.snapID {
			t.Errorf("the new cluster's cluster_id %s, want the snapshot's %s", h.ClusterID, r.snapID)
		}
		for k, want := range map[string]string{"app/db": "password-at-snapshot", "app/api": "key-at-snapshot", "app/new": ""} {
			if got := target.Get(t, 0, k); got != want {
				t.Errorf("the new cluster: %s = %q, want %q", k, got, want)
			}
		}
		t.Logf("e2e: the new cluster %s serves prod's secrets as of the snapshot, under prod's cluster_id", name)

		c := &unstructured.Unstructured{}
		c.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
		c.SetKind(schemas.ClusterKind)
		key := client.ObjectKey{Namespace: r.ns, Name: name}
		switch lifecycle {
		case schemas.LifecycleDisposable:
			if deleteClaim {
				if err := s.Client.Delete(ctx, claim); err != nil {
					t.Fatal(err)
				}
				t.Logf("e2e: the claim %s is deleted, its cleanup an hour away", claim.GetName())
			}
			testbed.Eventually(t, 2*time.Minute, "the Disposable cluster and its StatefulSet gone", func() (bool, error) {
				err1 := s.Client.Get(ctx, key, c)
				sts := &appsv1.StatefulSet{}
				err2 := s.Client.Get(ctx, key, sts)
				if apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) {
					return true, nil
				}
				// What holds it, should it not go.
				var pvcs corev1.PersistentVolumeClaimList
				_ = s.Client.List(ctx, &pvcs, client.InNamespace(r.ns))
				held := []string{fmt.Sprintf("cluster: %v (deleting %v, finalizers %v)", err1, c.GetDeletionTimestamp(), c.GetFinalizers()),
					fmt.Sprintf("StatefulSet: %v (deleting %v, finalizers %v)", err2, sts.DeletionTimestamp, sts.Finalizers)}
				for _, p := range pvcs.Items {
					if strings.Contains(p.Name, name) {
						held = append(held, fmt.Sprintf("PVC %s (deleting %v, finalizers %v)", p.Name, p.DeletionTimestamp, p.Finalizers))
					}
				}
				return false, errors.New(strings.Join(held, "; "))
			})
			if deleteClaim {
				t.Logf("e2e: the Disposable cluster %s was deleted with its claim, with its StatefulSet", name)
				return
			}
			t.Logf("e2e: the Disposable cluster %s was deleted after cleanupAfterSeconds, with its StatefulSet", name)
		case schemas.LifecycleRetain:
			if err := s.Client.Delete(ctx, claim); err != nil {
				t.Fatal(err)
			}
			testbed.Eventually(t, 2*time.Minute, "the claim and its XR gone", func() (bool, error) {
				err := s.Client.Get(ctx, client.ObjectKeyFromObject(xr), xr)
				return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
			})
			if err := s.Client.Get(ctx, key, c); err != nil {
				t.Fatalf("the Retained cluster after its claim went: %v", err)
			}
			if refs := c.GetOwnerReferences(); len(refs) != 0 {
				t.Errorf("the Retained cluster is still owned: %+v", refs)
			}
			if got := target.Get(t, 0, "app/db"); got != "password-at-snapshot" {
				t.Errorf("the Retained cluster after its claim went: app/db = %q", got)
			}
			t.Logf("e2e: the claim is deleted; the Retained cluster %s stays, unowned, and serves prod's secrets", name)
			t.Cleanup(func() { _ = s.Client.Delete(context.Background(), c) })
		}
	}
}
