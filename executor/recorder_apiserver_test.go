package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/fn"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// The KubeAPI against a real kube-apiserver and etcd, with the
// LockRequest CRD as the package ships it (its CEL rules included) and the
// executor's RBAC as the function composes it. recorder_test.go covers the
// same code against a fake API; this proves the fake's assumptions hold:
// resourceVersion preconditions, the CRD's write-once rules, and the Role.
func TestKubeRecorderAPIServer(t *testing.T) {
	t.Parallel()
	b := startAPIBed(t)

	t.Run("RecordOnceThenRefuse", b.testRecordOnce)
	t.Run("CELKeepsTheRecord", b.testCEL)
	t.Run("Race", b.testRace)
	t.Run("RefusesForeignOrUnheld", b.testRefusals)
	t.Run("RBAC", b.testRBAC)
	t.Run("WholeStatusRemovalRefused", b.testCELWholeStatus)
	t.Run("PodAddresses", b.testPodAddresses)
	t.Run("LockTakenBlindly", b.testLockTakenBlindly)
}

// startAPIBed starts an API server with the LockRequest CRD as the package
// ships it and the OpenBaoCluster fixture CRD.
func startAPIBed(t testing.TB) *apiBed {
	env := testbed.Start(t, testbed.Options{
		CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs},
		NoKCM:   true, NoScheduler: true, NoKwok: true,
	})
	return &apiBed{env: env, cs: kubernetes.NewForConfigOrDie(env.Config)}
}

// testPodAddresses: with the composed Role, the executor lists the
// StatefulSet's pods and finds each one's OpenBao address by its pod IP, by
// ordinal, skipping pods the StatefulSet does not control, pods without an
// IP and ordinals past the replica count.
func (b *apiBed) testPodAddresses(t *testing.T) {
	ns := b.env.Namespace(t)
	ctx := t.Context()
	rs := newRestore(ns, "pods", "uid-pods")
	b.composeRBAC(t, rs)
	labels := map[string]string{"app": "bao"}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "prod", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "bao", Image: "openbao/openbao:2.4.0"}}}}}}
	if err := b.env.Client.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	owner := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "prod", UID: sts.UID, Controller: ptr.To(true)}}
	for _, p := range []struct {
		name, ip string
		owned    bool
	}{{"prod-1", "10.1.0.2", true}, {"prod-0", "10.1.0.1", true}, {"prod-2", "10.1.0.3", true}, {"prod-9", "10.1.0.9", false}, {"prod-3", "", true}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "bao", Image: "openbao/openbao:2.4.0"}}}}
		if p.owned {
			pod.OwnerReferences = owner
		}
		if err := b.env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if p.ip != "" {
			pod.Status.PodIP = p.ip
			if err := b.env.Client.Status().Update(ctx, pod); err != nil {
				t.Fatal(err)
			}
		}
	}
	k := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	got, err := k.PodAddresses(ctx, ns, "prod", 3, "https")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://10.1.0.1:8200", "https://10.1.0.2:8200", "https://10.1.0.3:8200"}; !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
	if got, err := k.PodAddresses(ctx, ns, "prod", 5, "http"); err != nil || len(got) != 3 || got[0] != "http://10.1.0.1:8200" {
		t.Errorf("5 replicas: %v %v", got, err)
	}
	// Another namespace's pods are not the Role's to list.
	if _, err := k.PodAddresses(ctx, "default", "prod", 3, "https"); ExitCode(err) != schemas.ExitConfig {
		t.Errorf("listing another namespace: %v", err)
	}
}

type apiBed struct {
	env *testbed.Env
	cs  *kubernetes.Clientset
}

// restore is one restore's composed objects, as the function composes them.
type restore struct {
	r     fn.Restore
	spec  *schemas.Spec
	names fn.Names
}

// newRestore is a restore of its own OpenBaoCluster bao-<xr>, so that the
// restores of one namespace may each hold their cluster's lock.
func newRestore(ns, xr, uid string) restore {
	return restore{
		r: fn.Restore{APIVersion: "restore.openbao-restore.io/v1alpha1", Kind: "OpenBaoRestore", Name: xr,
			UID: uid, Namespace: ns, RequestName: xr},
		spec:  &schemas.Spec{Cluster: "bao-" + xr},
		names: fn.NamesFor(xr),
	}
}

// lock creates the restore's LockRequest and, as the reconciler would,
// sets its status.state (nothing when state is empty); for Held, it first
// writes the restore's lock on its OpenBaoCluster (holdCluster).
func (b *apiBed) lock(t testing.TB, rs restore, state string) *lockv1.LockRequest {
	t.Helper()
	ctx := t.Context()
	lr := fn.LockRequest(rs.r, rs.spec, rs.names)
	if state == schemas.LockHeld {
		b.holdCluster(t, rs)
	}
	if err := b.env.Client.Create(ctx, lr); err != nil {
		t.Fatalf("create lockrequest: %v", err)
	}
	if state != "" {
		lr.Status.State = state
		lr.Status.HeldBy = lr.Spec.Holder
		if err := b.env.Client.Status().Update(ctx, lr); err != nil {
			t.Fatalf("lockrequest status: %v", err)
		}
	}
	return b.get(t, lr.Namespace, lr.Name)
}

// holdCluster creates the restore's OpenBaoCluster when it is missing and
// writes the restore's lock on it, as the reconciler does: operation
// Restore, the request's holder, by compare-and-swap.
func (b *apiBed) holdCluster(t testing.TB, rs restore) {
	t.Helper()
	ctx := context.Background()
	c, err := b.env.CreateClusterObject(ctx, rs.r.Namespace, rs.spec.Cluster, 3)
	if apierrors.IsAlreadyExists(err) {
		c, err = b.cluster(rs.r.Namespace, rs.spec.Cluster)
	}
	if err != nil {
		t.Fatalf("OpenBaoCluster %s: %v", rs.spec.Cluster, err)
	}
	orig := c.DeepCopy()
	now := time.Now().UTC().Format(time.RFC3339)
	_ = unstructured.SetNestedStringMap(c.Object, map[string]string{
		"operation": schemas.OperationRestore, "holder": schemas.Holder(rs.r.RequestName, rs.r.UID),
		"message": "held by a restore", "acquiredAt": now, "renewedAt": now,
	}, "status", "operationLock")
	if err := b.env.Client.Status().Patch(ctx, c, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		t.Fatalf("lock OpenBaoCluster %s: %v", rs.spec.Cluster, err)
	}
}

// cluster reads an OpenBaoCluster.
func (b *apiBed) cluster(ns, name string) (*unstructured.Unstructured, error) {
	c := &unstructured.Unstructured{}
	c.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
	c.SetKind(schemas.ClusterKind)
	return c, b.env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, c)
}

// deleting puts a finalizer on the request and deletes it, so that it
// stays with a deletion mark (until the test ends), and returns it so.
func (b *apiBed) deleting(t *testing.T, lr *lockv1.LockRequest) *lockv1.LockRequest {
	t.Helper()
	ctx := context.Background()
	orig := lr.DeepCopy()
	lr.Finalizers = append(lr.Finalizers, "test.openbao-restore.io/hold")
	if err := b.env.Client.Patch(ctx, lr, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cur := b.get(t, lr.Namespace, lr.Name)
		orig := cur.DeepCopy()
		cur.Finalizers = nil
		_ = b.env.Client.Patch(ctx, cur, client.MergeFrom(orig))
	})
	if err := b.env.Client.Delete(ctx, lr); err != nil {
		t.Fatal(err)
	}
	return b.get(t, lr.Namespace, lr.Name)
}

func (b *apiBed) get(t testing.TB, ns, name string) *lockv1.LockRequest {
	t.Helper()
	lr := &lockv1.LockRequest{}
	if err := b.env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, lr); err != nil {
		t.Fatalf("get lockrequest: %v", err)
	}
	return lr
}

// composeRBAC creates the restore's ServiceAccount, Role and RoleBinding
// exactly as the function composes them.
func (b *apiBed) composeRBAC(t testing.TB, rs restore) {
	t.Helper()
	ctx := t.Context()
	for _, o := range []client.Object{
		fn.ServiceAccount(rs.r, rs.spec, rs.names),
		fn.Role(rs.r, rs.spec, rs.names),
		fn.RoleBinding(rs.r, rs.spec, rs.names),
	} {
		if err := b.env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	user, groups := saUser(rs.r.Namespace, rs.names.ServiceAccount)
	b.waitAllowed(t, user, groups, rs.r.Namespace, "patch", "status", rs.names.Lock)
}

func (b *apiBed) apiHostPort(t testing.TB) (host, port string) {
	t.Helper()
	h := b.env.Config.Host
	if !strings.Contains(h, "://") {
		h = "https://" + h
	}
	u, err := url.Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), u.Port()
}

// saRecorder builds the recorder the way the executor does in its pod:
// NewInClusterRecorder from KUBERNETES_SERVICE_HOST/PORT and a directory
// holding a ServiceAccount token (issued by the API server's TokenRequest,
// as a projected token would be), the API's CA and the namespace.
func (b *apiBed) saRecorder(t testing.TB, ns, sa, lock, restoreUID string) *KubeAPI {
	t.Helper()
	dir := t.TempDir()
	for n, v := range map[string][]byte{"token": []byte(b.saToken(t, ns, sa)), "ca.crt": b.env.Config.CAData, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, n), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port := b.apiHostPort(t)
	getenv := func(k string) string {
		switch k {
		case "KUBERNETES_SERVICE_HOST":
			return host
		case "KUBERNETES_SERVICE_PORT":
			return port
		}
		return ""
	}
	k, err := NewInClusterRecorder(getenv, dir, "", lock, restoreUID)
	if err != nil {
		t.Fatalf("in-cluster recorder: %v", err)
	}
	return k
}

// userRecorder builds a recorder that authenticates with a user's client
// certificate (env.AddUser); KubeAPI's empty bearer token is ignored by
// the API server's authenticators.
func (b *apiBed) userRecorder(t *testing.T, cfg *rest.Config, ns, lock, restoreUID string) *KubeAPI {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host, port := b.apiHostPort(t)
	return &KubeAPI{Base: "https://" + host + ":" + port, Namespace: ns, Name: lock, RestoreUID: restoreUID,
		Client: hc, Token: func() (string, error) { return "", nil }}
}

// submission is what the executor records; SubmittedAt has the API's
// (second) precision so a stored record compares equal.
func submission(pod string) Submission {
	return Submission{Pod: pod, PodUID: "uid-of-" + pod, Target: "https://bao-0.bao:8200",
		Digest: "sha256:" + strings.Repeat("ab", 32), Size: 123456, Endpoint: "snapshot",
		SubmittedAt: metav1.NewTime(time.Now().UTC().Truncate(time.Second))}
}

func sameSubmission(a, b *Submission) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Pod == b.Pod && a.PodUID == b.PodUID && a.Target == b.Target && a.Digest == b.Digest &&
		a.Size == b.Size && a.Endpoint == b.Endpoint && a.SubmittedAt.Equal(&b.SubmittedAt)
}

// 1 and 2: the first Record writes the whole record; a second, by the same
// or another pod's recorder, finds it and refuses without writing.
func (b *apiBed) testRecordOnce(t *testing.T) {
	ns := b.env.Namespace(t)
	rs := newRestore(ns, "once", "uid-once")
	b.composeRBAC(t, rs)
	b.lock(t, rs, schemas.LockHeld)
	ctx := t.Context()

	k := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	if err := k.Check(ctx); err != nil {
		t.Fatalf("check before record: %v", err)
	}
	want := submission("restore-abc12")
	if err := k.Record(ctx, want); err != nil {
		t.Fatalf("first record: %v", err)
	}
	got := b.get(t, ns, rs.names.Lock)
	if !sameSubmission(got.Status.Submission, &want) {
		t.Fatalf("stored record %+v, want %+v", got.Status.Submission, want)
	}
	if got.Status.State != schemas.LockHeld || got.Status.HeldBy != got.Spec.Holder {
		t.Fatalf("the record's patch changed the reconciler's fields: %+v", got.Status)
	}
	rv := got.ResourceVersion

	other := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	for name, r := range map[string]*KubeAPI{"same recorder": k, "another pod's recorder": other} {
		if err := r.Check(ctx); !errors.Is(err, ErrAlreadySubmitted) {
			t.Fatalf("%s: check after record: %v, want ErrAlreadySubmitted", name, err)
		}
		err := r.Record(ctx, submission("restore-zzz99"))
		if !errors.Is(err, ErrAlreadySubmitted) {
			t.Fatalf("%s: second record: %v, want ErrAlreadySubmitted", name, err)
		}
		if !strings.Contains(err.Error(), "restore-abc12") {
			t.Errorf("%s: the refusal does not name the pod that submitted: %v", name, err)
		}
	}
	after := b.get(t, ns, rs.names.Lock)
	if after.ResourceVersion != rv || !sameSubmission(after.Status.Submission, &want) {
		t.Fatalf("a refused record wrote: rv %s→%s, record %+v", rv, after.ResourceVersion, after.Status.Submission)
	}
}

// 3: the CRD's CEL rules refuse removing or changing the record, whoever
// writes (here the admin, with the current resourceVersion), by merge patch
// or by update of the status subresource.
func (b *apiBed) testCEL(t *testing.T) {
	ns := b.env.Namespace(t)
	rs := newRestore(ns, "cel", "uid-cel")
	b.composeRBAC(t, rs)
	b.lock(t, rs, schemas.LockHeld)
	ctx := t.Context()
	want := submission("restore-cel01")
	if err := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID).Record(ctx, want); err != nil {
		t.Fatalf("record: %v", err)
	}

	patch := func(status map[string]any) error {
		lr := b.get(t, ns, rs.names.Lock)
		body, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": lr.ResourceVersion},
			"status":   status,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b.env.Client.Status().Patch(ctx, lr, client.RawPatch(types.MergePatchType, body))
	}
	update := func(mutate func(*lockv1.LockRequest)) error {
		lr := b.get(t, ns, rs.names.Lock)
		mutate(lr)
		return b.env.Client.Status().Update(ctx, lr)
	}
	changed := want
	changed.Target = "https://elsewhere:8200"
	changedJSON, _ := json.Marshal(changed)
	var changedMap map[string]any
	_ = json.Unmarshal(changedJSON, &changedMap)

	const removed, writtenOnce = "a submission record is never removed", "a submission record is written once"
	refused := func(what string, err error, field, msg string, before *lockv1.LockRequest) {
		t.Helper()
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want 422 Invalid", what, err)
		} else if !strings.Contains(err.Error(), field+": Invalid value") || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: refusal %q does not name %s and say %q", what, err, field, msg)
		}
		after := b.get(t, ns, rs.names.Lock)
		if after.ResourceVersion != before.ResourceVersion || !sameSubmission(after.Status.Submission, &want) {
			t.Fatalf("%s: the record changed: %+v", what, after.Status.Submission)
		}
	}
	for _, c := range []struct {
		name       string
		status     map[string]any
		field, msg string
	}{
		{"merge patch removes submission", map[string]any{"submission": nil}, "status", removed},
		{"merge patch changes target", map[string]any{"submission": map[string]any{"target": "https://elsewhere:8200"}}, "status.submission", writtenOnce},
		{"merge patch changes pod", map[string]any{"submission": map[string]any{"pod": "restore-other"}}, "status.submission", writtenOnce},
		{"merge patch replaces the record", map[string]any{"submission": changedMap}, "status.submission", writtenOnce},
		{"merge patch drops optional digest", map[string]any{"submission": map[string]any{"digest": nil}}, "status.submission", writtenOnce},
	} {
		before := b.get(t, ns, rs.names.Lock)
		refused(c.name, patch(c.status), c.field, c.msg, before)
	}
	for _, c := range []struct {
		name       string
		mutate     func(*lockv1.LockRequest)
		field, msg string
	}{
		{"update removes submission", func(lr *lockv1.LockRequest) { lr.Status.Submission = nil }, "status", removed},
		{"update changes size", func(lr *lockv1.LockRequest) { lr.Status.Submission.Size++ }, "status.submission", writtenOnce},
		{"update resets status but keeps state", func(lr *lockv1.LockRequest) {
			lr.Status = lockv1.LockRequestStatus{State: schemas.LockHeld}
		}, "status", removed},
	} {
		before := b.get(t, ns, rs.names.Lock)
		refused(c.name, update(c.mutate), c.field, c.msg, before)
	}

	// The main resource ignores status (status subresource): an update there
	// that drops the record is accepted, for its (unchanged) spec, and the
	// record stays.
	lr := b.get(t, ns, rs.names.Lock)
	lr.Status.Submission = nil
	lr.Labels["touched"] = "yes"
	if err := b.env.Client.Update(ctx, lr); err != nil {
		t.Fatalf("update of the main resource: %v", err)
	}
	if got := b.get(t, ns, rs.names.Lock); !sameSubmission(got.Status.Submission, &want) {
		t.Fatalf("an update of the main resource changed the record: %+v", got.Status.Submission)
	}
}

// 4: N recorders (N pods of the Job, or retries) race on one LockRequest:
// exactly one records, every other one is refused with ErrAlreadySubmitted,
// and the record is the winner's. Several rounds, each on a fresh request.
func (b *apiBed) testRace(t *testing.T) {
	ns := b.env.Namespace(t)
	const n, rounds = 10, 3
	for round := range rounds {
		rs := newRestore(ns, fmt.Sprintf("race-%d", round), fmt.Sprintf("uid-race-%d", round))
		b.composeRBAC(t, rs)
		b.lock(t, rs, schemas.LockHeld)
		recs := make([]*KubeAPI, n)
		subs := make([]Submission, n)
		for i := range n {
			recs[i] = b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
			subs[i] = submission(fmt.Sprintf("restore-%d-%d", round, i))
		}
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = recs[i].Record(t.Context(), subs[i])
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both %d and %d recorded", round, winner, i)
				}
				winner = i
			case !errors.Is(err, ErrAlreadySubmitted):
				t.Fatalf("round %d: recorder %d: %v, want ErrAlreadySubmitted", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody recorded: %v", round, errs)
		}
		if got := b.get(t, ns, rs.names.Lock).Status.Submission; !sameSubmission(got, &subs[winner]) {
			t.Fatalf("round %d: record %+v is not the winner's %+v", round, got, subs[winner])
		}
		t.Logf("round %d: recorder %d of %d won", round, winner, n)
	}
}

// 5: a request of another restore, or whose lock is not held, is refused
// before any write.
func (b *apiBed) testRefusals(t *testing.T) {
	ns := b.env.Namespace(t)
	ctx := t.Context()
	cases := []struct {
		name, xr, lockUID, state string
		deleting                 bool
		code                     int
		msg                      string
	}{
		{"another restore's request", "foreign", "uid-someone-else", schemas.LockHeld, false, schemas.ExitConfig, `belongs to restore UID "uid-someone-else"`},
		{"waiting", "waiting", "uid-mine", schemas.LockWaiting, false, schemas.ExitTransient, "not held"},
		{"released", "released", "uid-mine", "Released", false, schemas.ExitTransient, "not held"},
		{"no status yet", "fresh", "uid-mine", "", false, schemas.ExitTransient, "not held"},
		// Held, but being deleted: the reconciler releases the lock
		// before it drops the finalizer, without writing the state.
		{"held but being deleted", "deleting", "uid-mine", schemas.LockHeld, true, schemas.ExitTransient, "being deleted"},
	}
	for _, c := range cases {
		rs := newRestore(ns, c.xr, c.lockUID)
		b.composeRBAC(t, rs)
		before := b.lock(t, rs, c.state)
		if c.deleting {
			before = b.deleting(t, before)
		}
		k := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, "uid-mine")
		for op, err := range map[string]error{"check": k.Check(ctx), "record": k.Record(ctx, submission("restore-x"))} {
			if err == nil || errors.Is(err, ErrAlreadySubmitted) || ExitCode(err) != c.code || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%s: %s: %v (exit %d), want exit %d containing %q", c.name, op, err, ExitCode(err), c.code, c.msg)
			}
		}
		after := b.get(t, ns, rs.names.Lock)
		if after.ResourceVersion != before.ResourceVersion || after.Status.Submission != nil {
			t.Errorf("%s: refused, yet the request changed: rv %s→%s, record %+v", c.name, before.ResourceVersion, after.ResourceVersion, after.Status.Submission)
		}
	}
}

// 6: the composed Role is enough to record, and only on the restore's own
// request; without its lockrequests/status rule the recorder gets a clear
// RBAC refusal (exit 1) and writes nothing.
func (b *apiBed) testRBAC(t *testing.T) {
	ns := b.env.Namespace(t)
	ctx := t.Context()

	// The ServiceAccount, Role and RoleBinding exactly as composed; the
	// token a TokenRequest issues, as in the pod.
	a := newRestore(ns, "rbac-a", "uid-a")
	b.composeRBAC(t, a)
	b.lock(t, a, schemas.LockHeld)
	// Another restore's request in the same namespace, outside a's Role
	// (resourceNames).
	other := newRestore(ns, "rbac-other", "uid-other")
	b.lock(t, other, schemas.LockHeld)

	wantRBAC := func(who string, err error, status int) {
		t.Helper()
		if err == nil || ExitCode(err) != schemas.ExitConfig || !strings.Contains(err.Error(), "check the executor's RBAC") ||
			!strings.Contains(err.Error(), fmt.Sprintf("HTTP %d", status)) {
			t.Errorf("%s: %v (exit %d), want an exit-%d RBAC refusal (HTTP %d)", who, err, ExitCode(err), schemas.ExitConfig, status)
		}
	}

	// A user bound to the composed Role without its lockrequests/status
	// rule: it can read, not record.
	noStatus := fn.Role(a.r, a.spec, a.names)
	noStatus.Name = "executor-without-status"
	noStatus.Rules = withoutResource(noStatus.Rules, schemas.LockRequestResource+"/status")
	if len(noStatus.Rules) != 3 {
		t.Fatalf("the composed Role changed shape: %+v", fn.Role(a.r, a.spec, a.names).Rules)
	}
	cfgNoStatus := b.userBoundTo(t, ns, "executor-without-status", noStatus)
	k := b.userRecorder(t, cfgNoStatus, ns, a.names.Lock, a.r.UID)
	if err := k.Check(ctx); err != nil {
		t.Errorf("without the status rule, check (a get on the request): %v", err)
	}
	wantRBAC("without the status rule, record", k.Record(ctx, submission("restore-a-nostatus")), http.StatusForbidden)
	if s := b.get(t, ns, a.names.Lock).Status.Submission; s != nil {
		t.Fatalf("a refused record wrote: %+v", s)
	}

	// A user bound to the composed Role without its openbaoclusters rule:
	// it cannot read the cluster's lock, so it neither checks nor records.
	noCluster := fn.Role(a.r, a.spec, a.names)
	noCluster.Rules = withoutResource(noCluster.Rules, schemas.ClusterResource)
	if len(noCluster.Rules) != 3 {
		t.Fatalf("the composed Role has no %s rule: %+v", schemas.ClusterResource, fn.Role(a.r, a.spec, a.names).Rules)
	}
	k = b.userRecorder(t, b.userBoundTo(t, ns, "executor-without-cluster", noCluster), ns, a.names.Lock, a.r.UID)
	wantRBAC("without the cluster rule, check", k.Check(ctx), http.StatusForbidden)
	wantRBAC("without the cluster rule, record", k.Record(ctx, submission("restore-a-nocluster")), http.StatusForbidden)
	if s := b.get(t, ns, a.names.Lock).Status.Submission; s != nil {
		t.Fatalf("a refused record wrote: %+v", s)
	}

	// The composed Role reads its own cluster, and nothing else of
	// openbao.org: not another cluster, not the list, and it never writes
	// the lock.
	saName, saGroups := saUser(ns, a.names.ServiceAccount)
	for _, c := range []struct {
		verb, sub, name string
		want            bool
	}{
		{"get", "", a.spec.Cluster, true},
		{"get", "", other.spec.Cluster, false},
		{"list", "", "", false},
		{"patch", "status", a.spec.Cluster, false},
		{"update", "status", a.spec.Cluster, false},
		{"patch", "", a.spec.Cluster, false},
	} {
		got, err := b.allowed(t, saName, saGroups, authorizationv1.ResourceAttributes{Namespace: ns, Verb: c.verb,
			Group: schemas.ClusterGroup, Resource: schemas.ClusterResource, Subresource: c.sub, Name: c.name})
		if err != nil || got != c.want {
			t.Errorf("the composed Role: %s openbaoclusters/%s %q allowed %v (%v), want %v", c.verb, c.sub, c.name, got, err, c.want)
		}
	}

	// A user with no binding at all: refused at the first GET.
	cfgNone, err := b.env.AddUser("executor-unbound")
	if err != nil {
		t.Fatal(err)
	}
	wantRBAC("unbound, record", b.userRecorder(t, cfgNone, ns, a.names.Lock, a.r.UID).Record(ctx, submission("restore-a-none")), http.StatusForbidden)

	// The composed ServiceAccount cannot touch another restore's request.
	sa := b.saRecorder(t, ns, a.names.ServiceAccount, other.names.Lock, other.r.UID)
	wantRBAC("another restore's request, check", sa.Check(ctx), http.StatusForbidden)
	wantRBAC("another restore's request, record", sa.Record(ctx, submission("restore-a-0")), http.StatusForbidden)
	if s := b.get(t, ns, other.names.Lock).Status.Submission; s != nil {
		t.Fatalf("a refused record wrote on another restore's request: %+v", s)
	}

	// An invalid token: 401, also exit 1.
	bad := b.saRecorder(t, ns, a.names.ServiceAccount, a.names.Lock, a.r.UID)
	bad.Token = func() (string, error) { return "not-a-token", nil }
	wantRBAC("invalid token, record", bad.Record(ctx, submission("restore-a-bad")), http.StatusUnauthorized)

	// The composed ServiceAccount records on its own request.
	want := submission("restore-a-1")
	if err := b.saRecorder(t, ns, a.names.ServiceAccount, a.names.Lock, a.r.UID).Record(ctx, want); err != nil {
		t.Fatalf("with the composed Role: %v", err)
	}
	if got := b.get(t, ns, a.names.Lock).Status.Submission; !sameSubmission(got, &want) {
		t.Fatalf("record %+v, want %+v", got, want)
	}

	// The same rules bound to a user (env.AddUser) record too: the Role, not
	// the ServiceAccount, is what grants it.
	u := newRestore(ns, "rbac-user", "uid-user")
	b.lock(t, u, schemas.LockHeld)
	cfgUser := b.userBoundTo(t, ns, "executor-user", fn.Role(u.r, u.spec, u.names))
	wantU := submission("restore-user-1")
	if err := b.userRecorder(t, cfgUser, ns, u.names.Lock, u.r.UID).Record(ctx, wantU); err != nil {
		t.Fatalf("user bound to the composed Role: %v", err)
	}
	if got := b.get(t, ns, u.names.Lock).Status.Submission; !sameSubmission(got, &wantU) {
		t.Fatalf("record %+v, want %+v", got, wantU)
	}
}

func withoutResource(rules []rbacv1.PolicyRule, resource string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		keep := true
		for _, res := range r.Resources {
			if res == resource {
				keep = false
			}
		}
		if keep {
			out = append(out, r)
		}
	}
	return out
}

// userBoundTo creates the Role and binds a new user (env.AddUser) to it.
func (b *apiBed) userBoundTo(t *testing.T, ns, user string, role *rbacv1.Role) *rest.Config {
	t.Helper()
	ctx := t.Context()
	role = role.DeepCopy()
	role.Name = user
	role.ResourceVersion = ""
	if err := b.env.Client.Create(ctx, role); err != nil {
		t.Fatalf("create role: %v", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := b.env.Client.Create(ctx, rb); err != nil {
		t.Fatalf("create rolebinding: %v", err)
	}
	cfg, err := b.env.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	// Every rule bound has get on the request: wait until it applies.
	b.waitAllowed(t, user, nil, ns, "get", "", role.Rules[1].ResourceNames[0])
	return cfg
}

// waitAllowed waits until the authorizer (whose RBAC cache lags a new
// binding) allows the subject this verb on the lock request.
func (b *apiBed) waitAllowed(t testing.TB, user string, groups []string, ns, verb, subresource, name string) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, user+" may "+verb+" "+name+"/"+subresource, func() (bool, error) {
		return b.allowed(t, user, groups, authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: schemas.Group, Resource: schemas.LockRequestResource, Subresource: subresource, Name: name,
		})
	})
}

// allowed asks the authorizer (a SubjectAccessReview) whether the subject
// may do this.
func (b *apiBed) allowed(t testing.TB, user string, groups []string, attrs authorizationv1.ResourceAttributes) (bool, error) {
	r, err := b.cs.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &attrs},
	}, metav1.CreateOptions{})
	return err == nil && r.Status.Allowed, err
}

func saUser(ns, sa string) (string, []string) {
	return "system:serviceaccount:" + ns + ":" + sa, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
}

// testCELWholeStatus: a write that drops status as a whole (which rules on
// status never see) cannot erase the record either: the root rule refuses
// it, even from the executor's own ServiceAccount with the current
// resourceVersion.
func (b *apiBed) testCELWholeStatus(t *testing.T) {
	ns := b.env.Namespace(t)
	ctx := t.Context()
	for i, how := range []string{`merge patch {"status": null}`, "update of /status without status"} {
		rs := newRestore(ns, fmt.Sprintf("gap-%d", i), fmt.Sprintf("uid-gap-%d", i))
		b.composeRBAC(t, rs)
		b.lock(t, rs, schemas.LockHeld)
		first := submission("restore-gap-first")
		if err := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID).Record(ctx, first); err != nil {
			t.Fatal(err)
		}
		// The write, with the executor's own ServiceAccount and the current
		// resourceVersion.
		c := b.saClient(t, ns, rs.names.ServiceAccount)
		lr := b.get(t, ns, rs.names.Lock)
		var err error
		switch i {
		case 0:
			body := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"status":null}`, lr.ResourceVersion)
			err = c.Status().Patch(ctx, lr, client.RawPatch(types.MergePatchType, []byte(body)))
		case 1:
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(lockv1.GroupVersion.WithKind(schemas.LockRequestKind))
			if err := c.Get(ctx, client.ObjectKeyFromObject(lr), u); err != nil {
				t.Fatal(err)
			}
			delete(u.Object, "status")
			err = c.Status().Update(ctx, u)
		}
		got := b.get(t, ns, rs.names.Lock)
		if err == nil || got.Status.Submission == nil || got.Status.Submission.Pod != first.Pod {
			t.Fatalf("%s: %v, record %+v: a write dropping status as a whole erased the record", how, err, got.Status.Submission)
		}
		if !strings.Contains(err.Error(), "never removed") {
			t.Errorf("%s: refusal %q does not say the record is never removed", how, err)
		}
	}
}

// saClient is a client authenticated as the ServiceAccount.
func (b *apiBed) saClient(t *testing.T, ns, sa string) client.Client {
	t.Helper()
	cfg := &rest.Config{Host: b.env.Config.Host, BearerToken: b.saToken(t, ns, sa),
		TLSClientConfig: rest.TLSClientConfig{CAData: b.env.Config.CAData}}
	c, err := client.New(cfg, client.Options{Scheme: b.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *apiBed) saToken(t testing.TB, ns, sa string) string {
	t.Helper()
	tr, err := b.cs.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// testLockTakenBlindly: the request says Held, and then a writer that does
// not compare-and-swap (openbao-operator's January 2026 backup manager: a
// merge patch from its cached copy, with no resourceVersion) replaces the
// restore's lock on the cluster. The executor, with the composed Role,
// re-reads the cluster and refuses (exit 10, naming the holder), and writes
// nothing; likewise after a blind release (operationLock: null). Once the
// restore holds the lock again, it records.
func (b *apiBed) testLockTakenBlindly(t *testing.T) {
	ns := b.env.Namespace(t)
	ctx := t.Context()
	rs := newRestore(ns, "blind", "uid-blind")
	b.composeRBAC(t, rs)
	before := b.lock(t, rs, schemas.LockHeld)
	holder := schemas.Holder(rs.r.RequestName, rs.r.UID)
	k := b.saRecorder(t, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	if err := k.Check(ctx); err != nil {
		t.Fatalf("check while the lock is ours: %v", err)
	}

	// The blind writer's cached copy, stale once the cluster changes
	// again: its patch never notices.
	cached, err := b.cluster(ns, rs.spec.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	touched := cached.DeepCopy()
	touched.SetLabels(map[string]string{"touched": "yes"})
	if err := b.env.Client.Patch(ctx, touched, client.MergeFrom(cached)); err != nil {
		t.Fatal(err)
	}
	if touched.GetResourceVersion() == cached.GetResourceVersion() {
		t.Fatal("the cluster did not change")
	}
	blind := func(lock map[string]any) {
		t.Helper()
		c := cached.DeepCopy()
		if lock == nil {
			_ = unstructured.SetNestedField(c.Object, nil, "status", "operationLock")
		} else {
			_ = unstructured.SetNestedMap(c.Object, lock, "status", "operationLock")
		}
		if err := b.env.Client.Status().Patch(ctx, c, client.MergeFrom(cached)); err != nil {
			t.Fatalf("blind merge patch: %v", err)
		}
	}
	refused := func(what, want string) {
		t.Helper()
		for op, c := range map[string]struct {
			err  error
			tail string
		}{
			"check":  {k.Check(ctx), ": not starting the restore"},
			"record": {k.Record(ctx, submission("restore-blind")), ": not sending the snapshot's tail"},
		} {
			if err := c.err; ExitCode(err) != schemas.ExitTransient || errors.Is(err, ErrAlreadySubmitted) ||
				!strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), c.tail) {
				t.Errorf("%s: %s: %v (exit %d), want exit %d containing %q and ending %q", what, op, err, ExitCode(err), schemas.ExitTransient, want, c.tail)
			} else {
				t.Logf("%s: %s: %v", what, op, err)
			}
		}
		after := b.get(t, ns, rs.names.Lock)
		if after.ResourceVersion != before.ResourceVersion || after.Status.Submission != nil {
			t.Fatalf("%s: refused, yet the request changed: rv %s→%s, record %+v", what, before.ResourceVersion, after.ResourceVersion, after.Status.Submission)
		}
	}

	blind(map[string]any{"operation": "Backup", "holder": "openbaocluster/backup", "message": "backup in progress"})
	c, err := b.cluster(ns, rs.spec.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if op, _, _ := unstructured.NestedString(c.Object, "status", "operationLock", "operation"); op != "Backup" {
		t.Fatalf("the blind patch did not take the lock: %v", c.Object["status"])
	}
	refused("taken by a backup", fmt.Sprintf("the operation lock of OpenBaoCluster %s/%s is held by operation=Backup holder=openbaocluster/backup, not by this restore (%s)", ns, rs.spec.Cluster, holder))

	blind(nil)
	refused("released blindly", fmt.Sprintf("the operation lock of OpenBaoCluster %s/%s is free, not held by this restore (%s)", ns, rs.spec.Cluster, holder))

	// The reconciler takes the lock back: the restore records.
	b.holdCluster(t, rs)
	want := submission("restore-blind")
	if err := k.Record(ctx, want); err != nil {
		t.Fatalf("record once the lock is ours again: %v", err)
	}
	if got := b.get(t, ns, rs.names.Lock).Status.Submission; !sameSubmission(got, &want) {
		t.Fatalf("record %+v, want %+v", got, want)
	}
}
