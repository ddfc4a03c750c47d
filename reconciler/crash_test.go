package reconciler_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// The test binary doubles as the reconciler process: with this variable set
// it runs the reconciler instead of the tests, so a test can SIGKILL it.
const childEnv = "OPENBAO_RESTORE_RECONCILER_CHILD_NAMESPACE"

func TestMain(m *testing.M) {
	if ns := os.Getenv(childEnv); ns != "" {
		cmd := &reconciler.Command{MetricsBindAddress: "0", HealthProbeBindAddress: "0",
			Namespace: []string{ns}, Concurrency: 4, LeaseDuration: 15 * time.Second}
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testbed.Main(m, testbed.Options{
		CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs},
		NoKCM:   true, NoScheduler: true, NoKwok: true,
	})
}

// leastPrivilegeKubeconfig writes a kubeconfig for a user holding only the
// reconciler's generated ClusterRole.
func leastPrivilegeKubeconfig(t *testing.T, env *testbed.Env) string {
	t.Helper()
	ctx := context.Background()
	role, err := os.ReadFile(filepath.Join("lock", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.ApplyYAML(ctx, role); err != nil {
		t.Fatal(err)
	}
	const user = "openbao-restore-reconciler-crash-test"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "openbao-restore-lock"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := env.Client.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kc, err := env.UserKubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// The reconciler is SIGKILLed at random moments while restores queue for one
// cluster and release it one by one. Restarted each time, it converges: the
// lock never passes between holders without being free, every request gets
// it, and none is left.
func TestKilledReconcilerConverges(t *testing.T) {
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()

	c := lock.NewCluster()
	c.SetNamespace(ns)
	c.SetName("c1")
	if err := env.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	hw := env.WatchLockHolders(t, ns, "c1")

	ch := testbed.StartChild(t, []string{childEnv + "=" + ns, "KUBECONFIG=" + leastPrivilegeKubeconfig(t, env)})

	const n = 8
	for i := range n {
		name := fmt.Sprintf("r%d", i)
		lr := &lockv1alpha1.LockRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: lockv1alpha1.LockRequestSpec{Cluster: "c1", Operation: schemas.OperationRestore,
				Holder: schemas.Holder(name, "uid-"+name),
				Restore: lockv1alpha1.RestoreRef{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind,
					Name: name, Namespace: ns, UID: "uid-" + name}},
		}
		if err := env.Client.Create(ctx, lr); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for turn := range n {
		// Kill it while it acquires (the lock is being handed over).
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		ch.Kill()
		ch.Start()
		var holder *lockv1alpha1.LockRequest
		testbed.Eventually(t, 60*time.Second, fmt.Sprintf("turn %d: a holder with status Held", turn), func() (bool, error) {
			got := lock.NewCluster()
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, got); err != nil {
				return false, err
			}
			l := lock.ReadLock(got)
			var list lockv1alpha1.LockRequestList
			if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
				return false, err
			}
			for i := range list.Items {
				o := &list.Items[i]
				if o.Spec.Holder == l.Holder && o.DeletionTimestamp.IsZero() && o.Status.State == schemas.LockHeld {
					holder = o
					return true, nil
				}
			}
			return false, nil
		})
		if err := env.Client.Delete(ctx, holder); err != nil {
			t.Fatal(err)
		}
		// Kill it while it releases.
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		ch.Kill()
		ch.Start()
		testbed.Eventually(t, 60*time.Second, holder.Name+" released and gone", func() (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(holder), &lockv1alpha1.LockRequest{})
			return apierrors.IsNotFound(err), nil
		})
	}
	testbed.Eventually(t, 30*time.Second, "the lock to be free", func() (bool, error) {
		got := lock.NewCluster()
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, got)
		return err == nil && lock.ReadLock(got).Free(), err
	})
	time.Sleep(200 * time.Millisecond) // let the watch deliver the last event
	seen, violations, _ := hw.Snapshot()
	if len(violations) > 0 {
		t.Errorf("the lock passed between holders without being free: %v", violations)
	}
	if len(seen) != n {
		t.Errorf("acquisitions seen %d, want %d: %v", len(seen), n, seen)
	}
	t.Logf("reconciler started %d times", ch.Starts)
}
