package phase_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/google/go-cmp/cmp"
	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/phase"
	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// Jobs must really run here: the full test bed (KCM, scheduler, kwok).
func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	testbed.Main(m, testbed.Options{CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs}, OperatorPolicy: true})
}

// installXRCRDs installs the legacy and the namespaced XR CRDs.
func installXRCRDs(t *testing.T, env *testbed.Env) {
	t.Helper()
	env.InstallCRDObjects(t,
		testbed.XRCRD(t, "package/configuration/xrd.yaml", apiextensionsv1.ClusterScoped),
		testbed.XRCRD(t, "examples/xrd-namespaced.yaml", apiextensionsv1.NamespaceScoped))
}

var setupOnce struct {
	once sync.Once
	cfg  *rest.Config
}

// prepare installs the XR CRDs and a user holding exactly the generated
// role (rbac/role.yaml), once per control plane.
func prepare(t *testing.T, env *testbed.Env) *rest.Config {
	t.Helper()
	setupOnce.once.Do(func() {
		installXRCRDs(t, env)
		cfg, err := env.RoleUser(context.Background(), "openbao-restore-phase-test", "rbac/role.yaml")
		if err != nil {
			t.Fatal(err)
		}
		setupOnce.cfg = cfg
	})
	if setupOnce.cfg == nil {
		t.Fatal("setup failed earlier")
	}
	return setupOnce.cfg
}

// written records when each XR's phase was written.
type written struct {
	mu sync.Mutex
	at map[string]map[string]time.Time
}

func (w *written) observe(xr types.NamespacedName, p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at[xr.String()] == nil {
		w.at[xr.String()] = map[string]time.Time{}
	}
	w.at[xr.String()][p] = time.Now()
}

func (w *written) get(xr types.NamespacedName, p string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.at[xr.String()][p]
	return at, ok
}

// start runs the phase reconcilers for one namespace, as the generated
// role's user, until the test ends.
func start(t *testing.T, env *testbed.Env, ns string) *written {
	return startWith(t, env, ns, false, noHealth)
}

// noHealth is a health URL nothing answers: for tests whose restores never
// reach the restart.
const noHealth = "http://127.0.0.1:1"

// restartOptions are the restart settings of the tests: a fast poll and
// short timeouts, with OpenBao's health at url.
func restartOptions(t *testing.T, url string) phase.RestartOptions {
	t.Helper()
	p, err := restart.NewProber(url, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return phase.RestartOptions{Prober: p, Poll: 200 * time.Millisecond, Timeouts: restart.Timeouts{Gate: 45 * time.Second, Sealed: 3 * time.Second}}
}

// startWith, viaSetup, registers the reconcilers as the binary does (Setup,
// after the manager started and found the XR kinds served).
func startWith(t *testing.T, env *testbed.Env, ns string, viaSetup bool, healthURL string) *written {
	t.Helper()
	return startAs(t, env, prepare(t, env), ns, viaSetup, restartOptions(t, healthURL))
}

// startAs is startWith as the user of cfg, with these restart options.
func startAs(t *testing.T, env *testbed.Env, cfg *rest.Config, ns string, viaSetup bool, restart phase.RestartOptions) *written {
	t.Helper()
	mgr := env.Manager(t, cfg, ns)
	w := &written{at: map[string]map[string]time.Time{}}
	opts := controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptr.To(true)}
	if viaSetup {
		if err := phase.AddControllers(mgr, []string{ns}, opts, phase.Follow{Restart: restart}); err != nil {
			t.Fatal(err)
		}
		return run(t, mgr, w)
	}
	jobs, err := phase.NewJobCache(mgr, []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(jobs); err != nil {
		t.Fatal(err)
	}
	members, err := phase.NewMemberCache(mgr, []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(members); err != nil {
		t.Fatal(err)
	}
	for _, gvk := range []schema.GroupVersionKind{schemas.LegacyXR, schemas.NamespacedXR} {
		r := &phase.Reconciler{GVK: gvk, Client: mgr.GetClient(), Cache: mgr.GetCache(), APIReader: mgr.GetAPIReader(), Jobs: jobs, Members: members,
			Recorder: mgr.GetEventRecorder(phase.FieldManager), Observe: w.observe, Namespaces: []string{ns}, Restart: restart}
		if err := r.SetupWithManager(mgr, opts); err != nil {
			t.Fatal(err)
		}
	}
	return run(t, mgr, w)
}

func run(t *testing.T, mgr ctrl.Manager, w *written) *written {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return w
}

// startWithCluster takes a namespace of the shared control plane, starts
// the phase reconciler on it (start) and creates the cluster "prod" there,
// without pods: for restores that never reach the restart.
func startWithCluster(t *testing.T) (*testbed.Env, string, *written) {
	t.Helper()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	w := start(t, env, ns)
	createCluster(t, env, ns)
	return env, ns, w
}

// startRestoring is startWithCluster for restores that reach the restart:
// the cluster "prod" has one kwok pod, whose health is a real one-node
// OpenBao.
func startRestoring(t *testing.T) (*testbed.Env, string, *written) {
	t.Helper()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	bao := baotest.Start(t, 1)
	w := startWith(t, env, ns, false, bao.Nodes[0].Addr)
	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 1)
	return env, ns, w
}

// cluster is the OpenBaoCluster "prod" of ns (not read from the API).
func cluster(ns string) *unstructured.Unstructured {
	c := &unstructured.Unstructured{}
	c.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
	c.SetKind(schemas.ClusterKind)
	c.SetNamespace(ns)
	c.SetName("prod")
	return c
}

func createCluster(t *testing.T, env *testbed.Env, ns string) {
	t.Helper()
	env.OpenBaoClusterObject(t, ns, "prod", 3)
}

// exampleSpec is the spec of examples/xr.yaml.
func exampleSpec(t *testing.T) map[string]any {
	t.Helper()
	return testbed.ExampleSpec(t, "xr.yaml")
}

// createHeldXR creates a legacy XR (createXR) and its LockRequest, held.
func createHeldXR(t *testing.T, env *testbed.Env, ns string) *unstructured.Unstructured {
	t.Helper()
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld})
	return xr
}

// createXR creates a legacy XR claimed from ns, with examples/xr.yaml's
// spec (edit may change it).
func createXR(t *testing.T, env *testbed.Env, ns string, edit func(spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	return createXRNamed(t, env, ns, ns+"-x", edit)
}

func createXRNamed(t *testing.T, env *testbed.Env, ns, name string, edit func(spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	spec := exampleSpec(t)
	spec["claimRef"] = map[string]any{"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.ClaimKind, "name": "r", "namespace": ns}
	if edit != nil {
		edit(spec)
	}
	xr := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	xr.SetGroupVersionKind(schemas.LegacyXR)
	xr.SetName(name)
	if err := env.Client.Create(context.Background(), xr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), xr) })
	return xr
}

func owner(xr *unstructured.Unstructured) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(), UID: xr.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
}

func labels(xr *unstructured.Unstructured) map[string]string {
	return map[string]string{schemas.LabelComposite: xr.GetName(), schemas.LabelRestore: "r", "restore.openbao-restore.io/cluster": "prod"}
}

// createLock creates the XR's LockRequest as the function composes it and
// sets its status as the lock reconciler (and the executor) would.
func createLock(t *testing.T, env *testbed.Env, ns string, xr *unstructured.Unstructured, st lockv1alpha1.LockRequestStatus) *lockv1alpha1.LockRequest {
	t.Helper()
	ctx := context.Background()
	holder := schemas.Holder("r", string(xr.GetUID()))
	lr := &lockv1alpha1.LockRequest{
		ObjectMeta: metav1.ObjectMeta{Name: xr.GetName() + "-lock", Namespace: ns, Labels: labels(xr), OwnerReferences: owner(xr)},
		Spec: lockv1alpha1.LockRequestSpec{Cluster: "prod", Operation: schemas.OperationRestore, Holder: holder,
			Restore: lockv1alpha1.RestoreRef{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(), Namespace: xr.GetNamespace(),
				UID: string(xr.GetUID()), ClaimName: "r"}},
	}
	if err := env.Client.Create(ctx, lr); err != nil {
		t.Fatal(err)
	}
	if st.State == "" {
		return lr // the lock reconciler answers
	}
	if st.State == schemas.LockHeld {
		st.HeldBy = holder
	}
	lr.Status = st
	if err := env.Client.Status().Update(ctx, lr); err != nil {
		t.Fatal(err)
	}
	return lr
}

// createJob creates the XR's restore Job as the function composes it
// (labels, controller reference), its pod ending with this exit code and
// termination message, and returns when the Job finished, as seen by a
// watch.
func createJob(t *testing.T, env *testbed.Env, ns string, xr *unstructured.Unstructured, exit int32, msg string) <-chan time.Time {
	t.Helper()
	return createJobWith(t, env, ns, xr, exit, msg, nil)
}

func createJobWith(t *testing.T, env *testbed.Env, ns string, xr *unstructured.Unstructured, exit int32, msg string, edit func(*batchv1.Job)) <-chan time.Time {
	t.Helper()
	ctx := context.Background()
	name := xr.GetName() + "-restore"
	env.JobPodStage(t, ns, name, exit, msg)
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &batchv1.JobList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	finished := make(chan time.Time, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			j, ok := ev.Object.(*batchv1.Job)
			if !ok || ev.Type == watch.Deleted || j.Name != name {
				continue
			}
			for _, c := range j.Status.Conditions {
				if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
					finished <- time.Now()
					return
				}
			}
		}
	}()
	t.Cleanup(w.Stop)
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels(xr), OwnerReferences: owner(xr)},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{schemas.LabelRestore: "r"}},
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "restore", Image: "example.invalid/executor"}}},
			},
		},
	}
	if edit != nil {
		edit(j)
	}
	if err := env.Client.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	return finished
}

// status reads the reconciler's fields of the XR's status.
func status(t *testing.T, xr *unstructured.Unstructured) phase.Status {
	t.Helper()
	st, err := phase.ReadStatus(xr)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitPhase waits generously: the bound only matters when a test fails,
// and a loaded 2-core CI machine once took over 30 s.
func waitPhase(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured, want string) phase.Status {
	t.Helper()
	return waitPhaseFor(t, env, xr, want, 60*time.Second)
}

func waitPhaseFor(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured, want string, timeout time.Duration) phase.Status {
	t.Helper()
	var st phase.Status
	testbed.Eventually(t, timeout, xr.GetName()+" phase "+want, func() (bool, error) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(xr), xr); err != nil {
			return false, err
		}
		st = status(t, xr)
		if st.Phase != want {
			return false, fmt.Errorf("phase %s: %s", st.Phase, st.Message)
		}
		return true, nil
	})
	return st
}

// latency logs how long after the Job finished (as a watch saw it) the
// reconciler wrote the phase.
func latency(t *testing.T, w *written, xr *unstructured.Unstructured, finished <-chan time.Time, p string) time.Duration {
	t.Helper()
	var done time.Time
	select {
	case done = <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("the Job never finished")
	}
	at := observed(t, w, xr, p)
	d := at.Sub(done)
	t.Logf("Job finished -> phase %s written: %s", p, d)
	return d
}

func get(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(xr), xr); err != nil {
		t.Fatal(err)
	}
	return xr
}

// observed returns when the reconciler under test wrote the phase (its
// Observe hook runs just after the write returns).
func observed(t *testing.T, w *written, xr *unstructured.Unstructured, p string) time.Time {
	t.Helper()
	var at time.Time
	testbed.Eventually(t, 5*time.Second, "phase "+p+" written by the reconciler under test", func() (bool, error) {
		var ok bool
		at, ok = w.get(client.ObjectKeyFromObject(xr), p)
		return ok, nil
	})
	return at
}

func condition(st phase.Status, typ string) phase.Condition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return phase.Condition{}
}

func TestJobSucceedsCompleted(t *testing.T) {
	t.Parallel()
	env, ns, w := startRestoring(t)
	xr := createXR(t, env, ns, nil)
	waitPhase(t, env, xr, schemas.PhasePending)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, Message: "holding"})
	st := waitPhase(t, env, xr, schemas.PhaseValidating)
	if c := condition(st, schemas.CondLockHeld); c.Status != "True" {
		t.Errorf("LockHeld condition %+v", c)
	}
	finished := createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"clusters/prod/a.snap","snapshotSize":42317,`+
		`"safety":{"key":"safety/k.snap","url":"s3://b/safety/k.snap","sha256":"ab","size":7,"clusterID":"c-1","takenAt":"2026-12-04T22:00:00Z"}}`)
	st = waitPhase(t, env, xr, schemas.PhaseCompleted)
	latency(t, w, xr, finished, schemas.PhaseCompleted)
	if st.SnapshotKey != "clusters/prod/a.snap" || st.SnapshotSize != 42317 || st.StartTime == nil || st.CompletionTime == nil {
		t.Errorf("status %+v", st)
	}
	// The safety snapshot and its undo, as the claim will show them.
	if s := st.SafetySnapshot; s == nil || s.Key != "safety/k.snap" || s.Size != 7 || !strings.Contains(s.UndoClaim, "key: safety/k.snap") ||
		!strings.Contains(s.Undo, "kubectl get openbaorestore") || !strings.Contains(st.Message, "undo: ") {
		t.Errorf("safety snapshot %+v, message %q", st.SafetySnapshot, st.Message)
	}
	if c := condition(st, schemas.CondRestored); c.Status != "True" {
		t.Errorf("Restored condition %+v", c)
	}
	if _, ok := w.get(client.ObjectKeyFromObject(xr), schemas.PhaseRunning); !ok {
		t.Log("the Job finished before Running was written (allowed: phases may be skipped, never reversed)")
	}
	// The field manager owns exactly its fields.
	found := false
	for _, mf := range xr.GetManagedFields() {
		if mf.Manager == phase.FieldManager && mf.Subresource == "status" {
			found = true
		}
	}
	if !found {
		t.Errorf("no status fields managed by %s: %+v", phase.FieldManager, xr.GetManagedFields())
	}
}

// A StatefulSet without openbao.org/cluster is not in the member cache:
// the restart reads it and its pods from the API and polls, and still
// completes.
func TestRestartOfUnlabelledStatefulSetPolls(t *testing.T) {
	t.Parallel()
	env, ns, _ := startRestoring(t)
	ctx := context.Background()
	sts := &appsv1.StatefulSet{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod"}, sts); err != nil {
		t.Fatal(err)
	}
	orig := sts.DeepCopy()
	delete(sts.Labels, schemas.LabelOperatorCluster) // the pods keep theirs: no rollout
	op, err := env.Operator()                        // the policy lets only the operator change it
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Patch(ctx, sts, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, Message: "holding"})
	waitPhase(t, env, xr, schemas.PhaseValidating)
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)
	st := waitPhase(t, env, xr, schemas.PhaseCompleted)
	if st.Restart == nil || len(st.Restart.Pods) != 1 || st.Restart.Pods[0].HealthyAt == nil {
		t.Errorf("restart %+v", st.Restart)
	}
}

func TestExit4BeforeSubmissionFails(t *testing.T) {
	t.Parallel()
	env, ns, w := startWithCluster(t)
	xr := createHeldXR(t, env, ns)
	finished := createJob(t, env, ns, xr, 4, `{"submitted":false,"exitCode":4,"message":"snapshot clusters/prod/a.snap not found"}`)
	st := waitPhase(t, env, xr, schemas.PhaseFailed)
	latency(t, w, xr, finished, schemas.PhaseFailed)
	for _, m := range []string{"exit code 4", "snapshot clusters/prod/a.snap not found", "nothing was submitted"} {
		if !strings.Contains(st.Message, m) {
			t.Errorf("message %q lacks %q", st.Message, m)
		}
	}
	if c := condition(st, schemas.CondRestored); c.Status != "False" || st.CompletionTime == nil {
		t.Errorf("status %+v", st)
	}
}

func TestExit11UnknownThenAbandon(t *testing.T) {
	t.Parallel()
	env, ns, w := startWithCluster(t)
	xr := createHeldXR(t, env, ns)
	finished := createJob(t, env, ns, xr, 11, `{"submitted":true,"exitCode":11,"message":"connection reset after upload"}`)
	st := waitPhase(t, env, xr, schemas.PhaseUnknown)
	latency(t, w, xr, finished, schemas.PhaseUnknown)
	ack := schemas.AcknowledgeAnnotation + "=" + string(xr.GetUID()) + "/Abandon"
	if !strings.Contains(st.Message, ack) || st.CompletionTime != nil {
		t.Fatalf("status %+v lacks %q", st, ack)
	}

	// An acknowledgement naming another UID changes nothing.
	annotate(t, env, xr, "someone-else/Abandon")
	time.Sleep(time.Second)
	waitPhase(t, env, xr, schemas.PhaseUnknown)

	annotate(t, env, xr, string(xr.GetUID())+"/Abandon")
	st = waitPhase(t, env, xr, schemas.PhaseFailed)
	if !strings.Contains(st.Message, "abandoned") || st.CompletionTime == nil {
		t.Errorf("status %+v", st)
	}
}

func annotate(t *testing.T, env *testbed.Env, xr *unstructured.Unstructured, v string) {
	t.Helper()
	patch := []byte(`{"metadata":{"annotations":{"` + schemas.AcknowledgeAnnotation + `":"` + v + `"}}}`)
	if err := env.Client.Patch(context.Background(), xr, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// A submission record on the LockRequest outweighs a pod that says it
// submitted nothing.
func TestSubmissionRecordMakesUnknown(t *testing.T) {
	t.Parallel()
	env, ns, _ := startRestoring(t)
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld,
		Submission: &lockv1alpha1.Submission{Pod: "p-0", Target: "https://bao:8200/v1/sys/storage/raft/snapshot", Endpoint: "https://bao:8200",
			SubmittedAt: metav1.Now()}})
	createJob(t, env, ns, xr, 4, `{"submitted":false,"exitCode":4,"message":"refused"}`)
	st := waitPhase(t, env, xr, schemas.PhaseUnknown)
	if !strings.Contains(st.Message, "pod p-0 recorded a submission") {
		t.Errorf("message %q", st.Message)
	}
	annotate(t, env, xr, string(xr.GetUID())+"/Resume")
	waitPhase(t, env, xr, schemas.PhaseCompleted)
}

// An invalid restore never gets as far as the reconciler when the XRD can
// judge it: the XRD's CEL rules refuse a bad key at admission, in the
// same words as the function and the reconciler's own check. That check
// (Validate, for XRs stored before such a rule) is TestNext's "invalid
// spec fails at once"; a refusal by the function's policy, which admission
// cannot know, is TestFunctionVerdictFailsAndConditionsCoexist.
func TestInvalidSpecFails(t *testing.T) {
	t.Parallel()
	env, ns, _ := startWithCluster(t)
	bad := &unstructured.Unstructured{Object: map[string]any{"spec": exampleSpec(t)}}
	bad.SetGroupVersionKind(schemas.LegacyXR)
	bad.SetName(ns + "-bad-key")
	_ = unstructured.SetNestedField(bad.Object, map[string]any{"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.ClaimKind, "name": "r", "namespace": ns}, "spec", "claimRef")
	_ = unstructured.SetNestedField(bad.Object, "/clusters/../prod.snap", "spec", "source", "key")
	err := env.Client.Create(context.Background(), bad)
	for _, want := range []string{"spec.source.key must not start with '/'", "spec.source.key must not contain a '..' segment"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a bad key was not refused at admission with %q: %v", want, err)
		}
	}
}

// The lock waiting on a Backup keeps the restore Pending. The reconcilers
// are registered here as the binary registers them (Setup).
func TestWaitingLockStaysPending(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	startWith(t, env, ns, true, noHealth)
	createCluster(t, env, ns)
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockWaiting, HeldBy: "backup/nightly",
		Message: "the operation lock is held by Backup backup/nightly"})
	st := waitPhase(t, env, xr, schemas.PhasePending)
	testbed.Eventually(t, 10*time.Second, "LockHeld False", func() (bool, error) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(xr), xr); err != nil {
			return false, err
		}
		st = status(t, xr)
		return condition(st, schemas.CondLockHeld).Status == "False", nil
	})
	if !strings.Contains(st.Message, "Backup backup/nightly") {
		t.Errorf("message %q", st.Message)
	}
}

// createNamespacedXR creates a namespaced XR with examples/xr.yaml's spec
// (without the claim reference).
func createNamespacedXR(t *testing.T, env *testbed.Env, ns string) *unstructured.Unstructured {
	t.Helper()
	spec := exampleSpec(t)
	delete(spec, "claimRef")
	xr := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	xr.SetGroupVersionKind(schemas.NamespacedXR)
	xr.SetNamespace(ns)
	xr.SetName("r")
	if err := env.Client.Create(context.Background(), xr); err != nil {
		t.Fatal(err)
	}
	return xr
}

func TestNamespacedXRCompleted(t *testing.T) {
	t.Parallel()
	env, ns, w := startRestoring(t)
	xr := createNamespacedXR(t, env, ns)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld})
	finished := createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":7}`)
	st := waitPhase(t, env, xr, schemas.PhaseCompleted)
	latency(t, w, xr, finished, schemas.PhaseCompleted)
	if st.SnapshotKey != "k.snap" || st.SnapshotSize != 7 {
		t.Errorf("status %+v", st)
	}
}

// The function's verdict (SpecValid False, for a rule of the Input's
// policy the reconciler cannot check) fails the restore; the conditions
// of the function and of Crossplane survive the reconciler's apply, and a
// Warning event says why.
func TestFunctionVerdictFailsAndConditionsCoexist(t *testing.T) {
	t.Parallel()
	env, ns, _ := startWithCluster(t)
	xr := createNamespacedXR(t, env, ns)
	now := time.Now().UTC().Format(time.RFC3339)
	fnStatus := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": xr.GetAPIVersion(), "kind": xr.GetKind(),
		"metadata": map[string]any{"name": xr.GetName(), "namespace": ns},
		"status": map[string]any{
			"plan": map[string]any{"stage": "InvalidSpec"},
			"conditions": []any{
				map[string]any{"type": "SpecValid", "status": "False", "reason": "InvalidSpec", "lastTransitionTime": now,
					"message": "spec.image example.com/x is not on the function's allow-list"},
				map[string]any{"type": "Ready", "status": "False", "reason": "Creating", "lastTransitionTime": now},
			},
		},
	}}
	if err := env.Client.Status().Apply(context.Background(), client.ApplyConfigurationFromUnstructured(fnStatus),
		client.FieldOwner("apiextensions.crossplane.io/composite"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	st := waitPhase(t, env, xr, schemas.PhaseFailed)
	if !strings.Contains(st.Message, "allow-list") {
		t.Errorf("message %q", st.Message)
	}
	types := map[string]bool{}
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		types[c.(map[string]any)["type"].(string)] = true
	}
	for _, typ := range []string{"SpecValid", "Ready", schemas.CondRestored} {
		if !types[typ] {
			t.Errorf("condition %s missing: %v", typ, conds)
		}
	}
	if stage, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "stage"); stage != "InvalidSpec" {
		t.Errorf("the function's status.plan was lost: %v", xr.Object["status"])
	}
	testbed.Eventually(t, 10*time.Second, "RestoreFailed event", func() (bool, error) {
		var list eventsv1.EventList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == xr.GetName() && e.Reason == "RestoreFailed" && e.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})
}

// Twenty restores at once each reach their own phase. How fast is measured
// by the benchmark (test/bench), not here.
func TestConcurrentRestoresReachTheirPhases(t *testing.T) {
	t.Parallel()
	env, ns, _ := startRestoring(t)
	const n = 20
	xrs := make([]*unstructured.Unstructured, n)
	for i := range xrs {
		xrs[i] = createXRNamed(t, env, ns, fmt.Sprintf("%s-%02d", ns, i), nil)
		createLock(t, env, ns, xrs[i], lockv1alpha1.LockRequestStatus{State: schemas.LockHeld})
	}
	for i, xr := range xrs {
		if i%2 == 0 {
			createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":1}`)
		} else {
			createJob(t, env, ns, xr, 4, `{"submitted":false,"exitCode":4,"message":"not found"}`)
		}
	}
	for i, xr := range xrs {
		want := schemas.PhaseCompleted
		if i%2 == 1 {
			want = schemas.PhaseFailed
		}
		waitPhase(t, env, xr, want)
	}
}

var unionOnce sync.Once

// unionUser is a user holding exactly the union of the lock's and the
// phase's generated roles, which is what deploy/install.yaml grants.
func unionUser(t *testing.T, env *testbed.Env) string {
	t.Helper()
	prepare(t, env)
	const user = "openbao-restore-reconciler-union-test"
	unionOnce.Do(func() {
		ctx := context.Background()
		lockRole, err := os.ReadFile(filepath.Join("..", "lock", "rbac", "role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := env.ApplyYAML(ctx, lockRole); err != nil {
			t.Fatal(err)
		}
		for _, role := range []string{"openbao-restore-lock", "openbao-restore-phase"} {
			if err := env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: user + "-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
			}); err != nil {
				t.Fatal(err)
			}
		}
	})
	return user
}

// TestWithLockReconcilerInTheBinary runs the reconciler as the binary does
// (reconciler.Command: the lock and the phase reconcilers in one manager)
// as a user holding exactly the union of the two generated roles, which is
// what deploy/install.yaml grants: the real lock is taken on the cluster,
// and the restore goes Pending -> Validating -> Completed.
func TestWithLockReconcilerInTheBinary(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	cfg, err := env.AddUser(unionUser(t, env))
	if err != nil {
		t.Fatal(err)
	}
	bao := baotest.Start(t, 1)
	cmd := command(ns, bao.Nodes[0].Addr)
	mgr, err := cmd.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, mgr, nil)

	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 1)
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{})
	st := waitPhase(t, env, xr, schemas.PhaseValidating)
	if c := condition(st, schemas.CondLockHeld); c.Status != "True" {
		t.Errorf("LockHeld %+v", c)
	}
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)
	waitPhase(t, env, xr, schemas.PhaseCompleted)
}

// The function's podFailurePolicy retries exit code 10 (transient, nothing
// submitted) up to backoffLimit: the restore stays Running while the Job
// retries (the Job controller waits 10 s before the retry), and is Failed
// once the retries are spent.
func TestTransientExitRetriedThenFailed(t *testing.T) {
	t.Parallel()
	env, ns, w := startWithCluster(t)
	xr := createHeldXR(t, env, ns)
	finished := createJobWith(t, env, ns, xr, 10, `{"submitted":false,"exitCode":10,"message":"object store timed out"}`, func(j *batchv1.Job) {
		j.Spec.BackoffLimit = ptr.To[int32](1)
		j.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
			{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
				{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}},
			{Action: batchv1.PodFailurePolicyActionCount, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{10}}},
			{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				Operator: batchv1.PodFailurePolicyOnExitCodesOpNotIn, Values: []int32{10}}},
		}}
	})
	waitPhase(t, env, xr, schemas.PhaseRunning)
	testbed.Eventually(t, 60*time.Second, "the first pod failed", func() (bool, error) {
		var pods corev1.PodList
		err := env.Client.List(context.Background(), &pods, client.InNamespace(ns))
		return err == nil && len(pods.Items) > 0 && pods.Items[0].Status.Phase == corev1.PodFailed, err
	})
	time.Sleep(time.Second)
	if st := status(t, get(t, env, xr)); st.Phase != schemas.PhaseRunning {
		t.Fatalf("phase %s after the first (retried) failure, want Running", st.Phase)
	}
	st := waitPhaseFor(t, env, xr, schemas.PhaseFailed, time.Minute)
	latency(t, w, xr, finished, schemas.PhaseFailed)
	var pods corev1.PodList
	if err := env.Client.List(context.Background(), &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Errorf("%d pods, want 2 (the first try and one retry)", len(pods.Items))
	}
	if _, ok := w.get(client.ObjectKeyFromObject(xr), schemas.PhaseRunning); !ok {
		t.Error("never Running while the Job retried")
	}
	if !strings.Contains(st.Message, "exit code 10") || !strings.Contains(st.Message, "transient") {
		t.Errorf("message %q", st.Message)
	}
}

// The cluster deleted while the Job runs, before any submission: Failed,
// with a message.
func TestClusterDeletedMidRunFails(t *testing.T) {
	t.Parallel()
	env, ns, _ := startWithCluster(t)
	xr := createHeldXR(t, env, ns)
	// A pod that is never scheduled keeps the Job running.
	createJobWith(t, env, ns, xr, 0, "", func(j *batchv1.Job) {
		j.Spec.Template.Spec.NodeSelector = map[string]string{"restore.openbao-restore.io/nowhere": "true"}
	})
	waitPhase(t, env, xr, schemas.PhaseRunning)
	c := cluster(ns)
	if err := env.Client.Delete(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	st := waitPhase(t, env, xr, schemas.PhaseFailed)
	if !strings.Contains(st.Message, "deleted") || condition(st, schemas.CondRestored).Reason != "ClusterDeleted" {
		t.Errorf("status %+v", st)
	}
}

// Crossplane installs the XRDs after the reconciler (a Provider) is
// running: Setup starts following an XR kind once the API serves it,
// without a restart. A control plane of its own, where the XR CRDs do not
// exist yet when the manager starts.
func TestSetupFollowsXRKindsInstalledLater(t *testing.T) {
	t.Parallel()
	env := testbed.Start(t, testbed.Options{CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs},
		NoKCM: true, NoScheduler: true, NoKwok: true})
	ns := env.Namespace(t)
	mgr := env.Manager(t, env.Config, ns)
	if err := phase.AddControllers(mgr, []string{ns}, controller.Options{SkipNameValidation: ptr.To(true)}, phase.Follow{Restart: restartOptions(t, noHealth)}); err != nil {
		t.Fatal(err)
	}
	run(t, mgr, nil)
	time.Sleep(time.Second) // the first look finds neither kind
	installXRCRDs(t, env)
	createCluster(t, env, ns)
	installed := time.Now()
	xr := createNamespacedXR(t, env, ns)
	waitPhaseFor(t, env, xr, schemas.PhasePending, 40*time.Second)
	t.Logf("XRD installed -> first phase written: %s", time.Since(installed).Round(time.Millisecond))
}

// A finished restore whose XR Crossplane's watch circuit breaker stopped
// watching closely (Responsive=False), before the function has seen the
// phase (status.plan.stage not Finished), is written again
// (status.execution.nudgedAt), so that an event reaches Crossplane.
func TestNudgeWhenCircuitOpen(t *testing.T) {
	t.Parallel()
	env, ns, _ := startWithCluster(t)
	xr := createXR(t, env, ns, nil)
	waitPhase(t, env, xr, schemas.PhasePending)
	now := time.Now().UTC().Format(time.RFC3339)
	st := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": xr.GetAPIVersion(), "kind": xr.GetKind(), "metadata": map[string]any{"name": xr.GetName()},
		"status": map[string]any{
			"phase": schemas.PhaseCompleted, "completionTime": now, "plan": map[string]any{"stage": "JobComplete"},
			"conditions": []any{map[string]any{"type": "Responsive", "status": "False", "reason": "WatchCircuitOpen",
				"message": "Too many watch events", "lastTransitionTime": now}},
		}}}
	if err := env.Client.Status().Apply(context.Background(), client.ApplyConfigurationFromUnstructured(st),
		client.FieldOwner("crossplane-test"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 30*time.Second, "status.execution.nudgedAt", func() (bool, error) {
		got := status(t, get(t, env, xr))
		return got.Execution != nil && got.Execution.NudgedAt != nil && got.Phase == schemas.PhaseCompleted, nil
	})
}

// A dry run against the API: Validating with no lock request, then, from
// its Job's report, Completed with status.dryRun and the DryRun condition,
// and no pod evicted; a failed one is Failed naming the check, never
// Unknown.
func TestDryRunReport(t *testing.T) {
	t.Parallel()
	env, ns, _ := startRestoring(t)
	ctx := context.Background()
	pod := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod-0"}, pod); err != nil {
		t.Fatal(err)
	}
	dry := func(spec map[string]any) { spec["dryRun"] = true }
	xr := createXR(t, env, ns, dry)
	st := waitPhase(t, env, xr, schemas.PhaseValidating)
	if !strings.Contains(st.Message, "no lock is taken") || condition(st, schemas.CondLockHeld).Type != "" {
		t.Errorf("status %+v", st)
	}
	report := `{"dryRun":true,"submitted":false,"exitCode":0,"snapshotKey":"clusters/prod/a.snap","snapshotSize":42317,"snapshotVersion":"\"e1\"","sha256":"ab","endpoint":"snapshot","clusterIDBefore":"c-1",` +
		`"archive":{"id":"2-42-1","index":42,"term":2,"stateSize":40000,"sealedSums":true},` +
		`"checks":[{"name":"object","passed":true,"message":"exists"},{"name":"snapshot","passed":true,"message":"read whole"}],` +
		`"message":"dry run: every check passed; a restore would send clusters/prod/a.snap. Nothing was submitted"}`
	createJob(t, env, ns, xr, 0, report)
	st = waitPhase(t, env, xr, schemas.PhaseCompleted)
	want := &schemas.DryRunReport{SnapshotKey: "clusters/prod/a.snap", SnapshotSize: 42317, SnapshotVersion: `"e1"`, SHA256: "ab", Endpoint: "snapshot", ClusterID: "c-1",
		Archive: &schemas.ArchiveInfo{ID: "2-42-1", Index: 42, Term: 2, StateSize: 40000, SealedSums: true},
		Checks:  []schemas.Check{{Name: "object", Passed: true, Message: "exists"}, {Name: "snapshot", Passed: true, Message: "read whole"}}}
	if diff := cmp.Diff(want, st.DryRun); diff != "" {
		t.Errorf("status.dryRun (-want +got):\n%s", diff)
	}
	if c := condition(st, schemas.CondDryRun); c.Status != "True" || c.Reason != "Passed" || st.Restart != nil || st.SnapshotKey != "" {
		t.Errorf("status %+v", st)
	}
	var locks lockv1alpha1.LockRequestList
	if err := env.Client.List(ctx, &locks, client.InNamespace(ns)); err != nil || len(locks.Items) != 0 {
		t.Errorf("lock requests %d: %v", len(locks.Items), err)
	}
	after := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod-0"}, after); err != nil || after.UID != pod.UID || after.DeletionTimestamp != nil {
		t.Errorf("the OpenBao pod was restarted or is going: %v", err)
	}

	failed := createXRNamed(t, env, ns, ns+"-failed", dry)
	createJob(t, env, ns, failed, 6, `{"dryRun":true,"submitted":false,"exitCode":6,"checks":[{"name":"snapshot","passed":false,"message":"not sound"}],`+
		`"message":"dry run: the check snapshot failed: the snapshot archive is not sound. Nothing was submitted"}`)
	st = waitPhase(t, env, failed, schemas.PhaseFailed)
	if c := condition(st, schemas.CondDryRun); c.Status != "False" || c.Reason != "CheckFailed" || !strings.Contains(c.Message, "the check snapshot failed") ||
		st.DryRun == nil || len(st.DryRun.Checks) != 1 {
		t.Errorf("status %+v", st)
	}
}
