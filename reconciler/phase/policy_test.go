package phase_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/phase"
	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// The stack of these tests has the stand-in for openbao-operator's
// admission policy on: a direct DELETE of one of its pods is refused with
// the operator's message, even to an admin. The restarts of every other
// test in this package go through it by eviction.
func TestOperatorPolicyRefusesDirectDelete(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	env.OpenBaoPods(t, ns, "prod", 1)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prod-0"}}
	err := env.Client.Delete(context.Background(), pod)
	if err == nil || !strings.Contains(err.Error(), testbed.PolicyMessage) {
		t.Fatalf("direct DELETE of a managed pod: %v, want the operator policy's refusal", err)
	}
}

// A reconciler whose role lacks create on pods/eviction (the one grant
// the follow-through needs on a real installation) says so: condition
// RestartBlocked with the grant to add, one Warning event, no hot loop of
// writes, and Unknown once the gate's timeout passes. The pod stays.
func TestRestartWithoutEvictionGrant(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	prepare(t, env) // the XR kinds
	bao := baotest.Start(t, 1)
	opts := restartOptions(t, bao.Nodes[0].Addr)
	// The gate must outlast the record-then-evict round trips under load:
	// with 8 s, a loaded CI run once reached the timeout before the first
	// refusal was written, and saw the recorded pod as "being deleted".
	opts.Timeouts = restart.Timeouts{Gate: 20 * time.Second, Sealed: 3 * time.Second}
	startAs(t, env, withoutEviction(t, env), ns, false, opts)
	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 1)
	var pod corev1.Pod
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod-0"}, &pod); err != nil {
		t.Fatal(err)
	}

	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, Message: "holding"})
	waitPhase(t, env, xr, schemas.PhaseValidating)
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)

	var st = waitCondition(t, env, xr, schemas.CondRestartBlocked, "True")
	c := condition(st, schemas.CondRestartBlocked)
	for _, want := range []string{"may not evict pod " + ns + "/prod-0", "create on pods/eviction", "openbao-restore:reconciler"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("RestartBlocked message %q lacks %q", c.Message, want)
		}
	}
	if c.Reason != restart.ReasonForbidden || !strings.Contains(st.Message, "create on pods/eviction") {
		t.Errorf("reason %s, phase message %q", c.Reason, st.Message)
	}
	writes := countWrites(t, env, xr)

	st = waitPhaseFor(t, env, xr, schemas.PhaseUnknown, time.Minute)
	for _, want := range []string{"create on pods/eviction", string(xr.GetUID()) + "/Resume"} {
		if !strings.Contains(st.Message, want) {
			t.Errorf("Unknown message %q lacks %q", st.Message, want)
		}
	}
	// No loop: the XR was written for the refusal and for Unknown, not for
	// each retry of the eviction (one every 5 s in between).
	time.Sleep(2 * time.Second) // a write after Unknown would count too
	if n := writes(); n > 3 {
		t.Errorf("%d writes of the XR while the eviction was refused", n)
	}
	var reasons []string
	testbed.Eventually(t, 10*time.Second, "one RestartBlocked event", func() (bool, error) {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs); err != nil {
			return false, err
		}
		n := 0
		reasons = nil
		for _, e := range evs.Items {
			if e.Regarding.Name == xr.GetName() {
				reasons = append(reasons, e.Reason)
				if e.Reason == "RestartBlocked" {
					n++
				}
			}
		}
		return n == 1, fmt.Errorf("events of the XR: %v", reasons)
	})
	var after corev1.Pod
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod-0"}, &after); err != nil || after.UID != pod.UID || after.DeletionTimestamp != nil {
		t.Errorf("the pod changed without a grant: %v %+v", err, after.ObjectMeta)
	}
}

// withoutEviction is a user holding the generated role minus pods/eviction.
func withoutEviction(t *testing.T, env *testbed.Env) *rest.Config {
	t.Helper()
	b, err := os.ReadFile("rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &role); err != nil {
		t.Fatal(err)
	}
	role.ObjectMeta = metav1.ObjectMeta{Name: "openbao-restore-phase-noevict-" + env.Namespace(t)}
	role.Rules = slices.DeleteFunc(role.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "pods/eviction") })
	ctx := context.Background()
	if err := env.Client.Create(ctx, &role); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: role.Name}},
	}); err != nil {
		t.Fatal(err)
	}
	cfg, err := env.AddUser(role.Name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// waitCondition waits until the XR's condition of that type has status.
func waitCondition(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured, typ, want string) phase.Status {
	t.Helper()
	var st phase.Status
	testbed.Eventually(t, time.Minute, xr.GetName()+" condition "+typ+"="+want, func() (bool, error) {
		st = status(t, get(t, env, xr))
		return condition(st, typ).Status == want, fmt.Errorf("phase %s: %s", st.Phase, st.Message)
	})
	return st
}

// countWrites counts the writes of the XR from now on, as a watch sees them.
func countWrites(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured) func() int {
	t.Helper()
	gvk := xr.GroupVersionKind()
	gvk.Kind += "List"
	w := env.WatchNamed(t, gvk, xr.GetNamespace(), xr.GetName())
	var n atomic.Int32
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type == watch.Modified {
				n.Add(1)
			}
		}
	}()
	return func() int { return int(n.Load()) }
}

// A PodDisruptionBudget that allows no disruption holds the restart: the
// XR says so (RestartBlocked, reason DisruptionBudget) and the restart
// goes on by itself once the budget allows it (RestartBlocked=False).
func TestRestartWaitsForTheDisruptionBudget(t *testing.T) {
	t.Parallel()
	env, ns, _ := startRestoring(t)
	ctx := context.Background()
	op, err := env.Operator()
	if err != nil {
		t.Fatal(err)
	}
	strict := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prod-strict"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: testbed.ClusterPodLabels("prod")}},
	}
	if err := op.Create(ctx, strict); err != nil {
		t.Fatal(err)
	}
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, Message: "holding"})
	waitPhase(t, env, xr, schemas.PhaseValidating)
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)

	st := waitCondition(t, env, xr, schemas.CondRestartBlocked, "True")
	if c := condition(st, schemas.CondRestartBlocked); c.Reason != restart.ReasonBudget || !strings.Contains(c.Message, "PodDisruptionBudget") {
		t.Errorf("RestartBlocked %+v", c)
	}
	if err := op.Delete(ctx, strict); err != nil {
		t.Fatal(err)
	}
	st = waitPhase(t, env, xr, schemas.PhaseCompleted)
	if c := condition(st, schemas.CondRestartBlocked); c.Status != "False" || c.Reason != "Evicted" {
		t.Errorf("RestartBlocked after the budget allowed it: %+v", c)
	}
}
