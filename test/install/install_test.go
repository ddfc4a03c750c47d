// Package install proves on a real apiserver that the install manifest's
// Crossplane ClusterRole is enough to create everything the function
// composes, including the executor's Role (Kubernetes refuses a Role that
// grants what its creator does not hold), and nothing more.
package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{NoKCM: true, NoScheduler: true, NoKwok: true,
		CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs}})
}

func docs(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(file) //nolint:gosec // repository files
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

func TestCrossplaneCanComposeARestore(t *testing.T) {
	e := testbed.Shared(t)
	ctx := context.Background()
	root := testbin.Root()

	// Only the install manifest's Crossplane role, bound to a user that
	// stands for Crossplane's ServiceAccount.
	var role *unstructured.Unstructured
	for _, d := range docs(t, filepath.Join(root, "deploy", "install.yaml")) {
		if d.GetKind() == "ClusterRole" && d.GetLabels()["rbac.crossplane.io/aggregate-to-crossplane"] == "true" {
			role = d
		}
	}
	if role == nil {
		t.Fatal("install.yaml has no ClusterRole aggregated to Crossplane")
	}
	role.SetName(role.GetName() + "-test")
	if err := e.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "crossplane-as-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.GetName()},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "crossplane-test"}},
	}
	if err := e.Client.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	cfg, err := e.AddUser("crossplane-test")
	if err != nil {
		t.Fatal(err)
	}
	xp, err := client.New(cfg, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "vault"}}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	// Everything the function composes once the lock is held, as the real
	// crossplane render printed it (examples/golden).
	n := 0
	for _, d := range docs(t, filepath.Join(root, "examples", "golden", "crossplane", "lock-held.yaml")) {
		if strings.HasPrefix(d.GetAPIVersion(), "render.crossplane.io") || d.GetKind() == "XOpenBaoRestore" {
			continue
		}
		d.SetOwnerReferences(nil) // the XR does not exist here
		if err := xp.Create(ctx, d); err != nil {
			t.Errorf("Crossplane with the install role cannot create %s %s: %v", d.GetKind(), d.GetName(), err)
		}
		n++
	}
	if n != 5 {
		t.Errorf("composed %d objects, want 5 (ServiceAccount, Role, RoleBinding, LockRequest, Job)", n)
	}
	// A fresh-target restore's new OpenBaoCluster, which Crossplane also
	// deletes when it is Disposable.
	for _, d := range docs(t, filepath.Join(root, "examples", "golden", "crossplane", "fresh-target.yaml")) {
		if d.GetKind() != "OpenBaoCluster" {
			continue
		}
		d.SetOwnerReferences(nil)
		if err := xp.Create(ctx, d); err != nil {
			t.Errorf("Crossplane with the install role cannot create the fresh target: %v", err)
		}
		if err := xp.Delete(ctx, d); err != nil {
			t.Errorf("Crossplane with the install role cannot delete the fresh target: %v", err)
		}
	}

	// Least privilege: nothing beyond what composing needs.
	secret := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "x", "namespace": "vault"}}}
	if err := xp.Create(ctx, secret); !apierrors.IsForbidden(err) {
		t.Errorf("the install role lets Crossplane create Secrets: %v", err)
	}
}

// TestReconcilerRoleMatchesMarkers keeps the install manifest's reconciler
// ClusterRole equal to the union of the roles generated from the
// reconcilers' RBAC markers (lock and phase, which their tests run under),
// so neither drifts.
func TestReconcilerRoleMatchesMarkers(t *testing.T) {
	root := testbin.Root()
	rules := func(file, name string) []any {
		for _, d := range docs(t, file) {
			if d.GetKind() == "ClusterRole" && (name == "" || d.GetName() == name) {
				r, _, _ := unstructured.NestedSlice(d.Object, "rules")
				return r
			}
		}
		t.Fatalf("no ClusterRole %q in %s", name, file)
		return nil
	}
	norm := func(rs []any) map[string]bool {
		out := map[string]bool{}
		for _, r := range rs {
			m := r.(map[string]any)
			for _, g := range m["apiGroups"].([]any) {
				for _, res := range m["resources"].([]any) {
					for _, v := range m["verbs"].([]any) {
						out[g.(string)+"/"+res.(string)+":"+v.(string)] = true
					}
				}
			}
		}
		return out
	}
	want := map[string]bool{}
	for _, r := range []string{"lock", "phase", "drill"} {
		for k := range norm(rules(filepath.Join(root, "reconciler", r, "rbac", "role.yaml"), "")) {
			want[k] = true
		}
	}
	got := norm(rules(filepath.Join(root, "deploy", "install.yaml"), "openbao-restore:reconciler"))
	for k := range want {
		if !got[k] {
			t.Errorf("install.yaml's reconciler role lacks %s", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("install.yaml's reconciler role grants %s, which the reconciler's markers do not ask for", k)
		}
	}
	// The follow-through evicts (docs/architecture.md): openbao-operator's
	// admission policy refuses a DELETE of its pods, so none is granted.
	if got["/pods:delete"] || !got["/pods/eviction:create"] {
		t.Errorf("the reconciler must evict OpenBao pods, never delete them: pods delete %v, pods/eviction create %v",
			got["/pods:delete"], got["/pods/eviction:create"])
	}
}
