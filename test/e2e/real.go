package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

const (
	// baoImage is the image of the OpenBao pods; the harness kubelet runs
	// the pinned OpenBao 2.4.0 binary for it.
	baoImage = "openbao/openbao:2.4.0"
	// e2eComposition is the packaged Composition with an Input that
	// allows the loopback S3 endpoint (plain http on 127.0.0.1), as a
	// platform team would add one for a test bed.
	e2eComposition = "openbao-restore-e2e"
)

// RealBed is the stack of TestRealRestore and of the demo (test/demo):
// one OpenBao cluster "prod" of three voters and a read replica in ns,
// its secrets, and the S3 store.
type RealBed struct {
	// Summary is what the happy path did, once it passed.
	Summary *Summary

	s     *Stack
	k     *kubelet.Kubelet
	store *s3test.Server
	bao   *baotest.Cluster
	ns    string
	// snap is the happy path's snapshot, stored as clusters/prod/e2e.snap,
	// and snapID the cluster_id it was taken from.
	snap   []byte
	snapID string
	// restored is the happy path's claim, once Completed.
	restored *unstructured.Unstructured
}

// Summary is what the happy path did, for the demo's last line.
type Summary struct {
	// ToCompleted is the time from the claim to Completed.
	ToCompleted time.Duration
	// Restarted are the pods restarted, in order.
	Restarted []string
	// Back are the secrets the snapshot brought back, and Gone the later
	// writes it undid.
	Back, Gone []string
}

// StartRealBed brings up the real stack (StartStack without kwok, the
// harness kubelet, SeaweedFS, OpenBao as the operator runs it, the
// reconciler, the e2e Composition) and the secrets the claims name.
func StartRealBed(t testing.TB) *RealBed {
	s := StartStack(t, true)
	k := s.startKubelet(t)
	ctx := context.Background()
	r := &RealBed{s: s, k: k, ns: "vault-real"}
	if err := s.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.ns}}); err != nil {
		t.Fatal(err)
	}
	r.store = s3test.Start(t, "e2e-access-key", "e2e-secret-key", "snaps")
	r.bao = s.openBaoStatefulSet(t, k, r.ns, "prod", 3, 1)
	s.startReconciler(t, "{{.Scheme}}://{{.IP}}:8200") // the flag's default: the pod IP
	s.e2eComposition(t)
	s.OpenBaoClusterObject(t, r.ns, "prod", 3)
	for _, sec := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "restore-token", Namespace: r.ns}, StringData: map[string]string{schemas.KeyToken: r.bao.RootToken}},
		{ObjectMeta: metav1.ObjectMeta{Name: "backup-s3", Namespace: r.ns}, StringData: map[string]string{
			schemas.KeyAccessKeyID: r.store.AccessKey, schemas.KeySecretAccessKey: r.store.SecretKey}},
	} {
		if err := s.Client.Create(ctx, sec); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- harness kubelet logs ----\n%s", k.AllLogs())
		}
	})
	return r
}

// Stack is the bed's stack.
func (r *RealBed) Stack() *Stack { return r.s }

// Scenarios are the scenarios the demo can show, by its --scenario names.
// Each needs the happy path's snapshot, so the others run it first.
var Scenarios = map[string]func(*RealBed, testing.TB){
	"happy":              (*RealBed).happyPath,
	"missing-key":        (*RealBed).missingKey,
	"lock-contention":    (*RealBed).lockContention,
	"foreign-with-force": (*RealBed).foreignSnapshot,
}

// keep leaves the stack running for a person (make demo KEEP=1) until
// Ctrl-C, then lets the test tear it down.
func keep(t testing.TB, s *Stack) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("\nThe stack keeps running. In another shell:\n\n  export KUBECONFIG=%s\n  kubectl get openbaorestores,xopenbaorestores,lockrequests,jobs,pods -A\n\nPress Ctrl-C here to tear it down.\n", s.Kubeconfig)
	<-ctx.Done()
	t.Log("e2e: torn down on request")
}

// claim claims a restore of key into prod, through the e2e Composition.
func (r *RealBed) claim(t testing.TB, name, key string, edit func(src, spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	return r.s.claimNamed(t, r.ns, name, func(spec map[string]any) {
		spec["compositionRef"] = map[string]any{"name": e2eComposition}
		src := spec["source"].(map[string]any)
		src["key"] = key
		delete(src, "expectedDigest")
		delete(src, "expectedSize")
		src["target"] = map[string]any{"provider": "s3", "endpoint": r.store.URL, "bucket": r.store.Bucket, "region": "us-east-1",
			"usePathStyle": true, "credentialsSecretRef": map[string]any{"name": "backup-s3"}}
		if edit != nil {
			edit(src, spec)
		}
	})
}

// happyPath is scenario 1: write secrets, snapshot, upload, change them;
// the claim restores the snapshot (with its digest and size pinned). The
// phases go Pending, Validating, Running, Completed; the pods restart one
// by one, standbys first and the leader last; every node then serves the
// snapshot's data and none of the later writes; the lock was held during
// the run and is released; the events tell the story.
func (r *RealBed) happyPath(t testing.TB) {
	s, bao := r.s, r.bao
	bao.Put(t, "app/db", "password-at-snapshot")
	bao.Put(t, "app/api", "key-at-snapshot")
	snap := bao.Snapshot(t)
	const key = "clusters/prod/e2e.snap"
	r.store.Put(t, key, snap)
	r.snap, r.snapID = snap, bao.Health(t, 0).ClusterID
	sum := sha256.Sum256(snap)
	t.Logf("e2e: secrets app/db and app/api written; snapshot of %d bytes taken and uploaded to s3://%s/%s", len(snap), r.store.Bucket, key)
	bao.Put(t, "app/db", "password-after-snapshot")
	bao.Put(t, "app/new", "written-after-snapshot")
	t.Logf("e2e: the data changed since: app/db rewritten, app/new written")

	before := s.podUIDs(t, r.ns)
	claim := r.claim(t, "", key, func(src, _ map[string]any) {
		src["expectedDigest"] = "sha256:" + hex.EncodeToString(sum[:])
		src["expectedSize"] = int64(len(snap))
	})
	claimed := time.Now()
	t.Logf("e2e: claim %s/%s created: restore %s into OpenBaoCluster prod, its digest and size pinned", r.ns, claim.GetName(), key)
	tl := s.watchTimeline(t, r.ns, "prod")
	var completedAt time.Time
	// The submission record lives on the LockRequest, which goes once the
	// lock is released: read it while the restore runs.
	var sub *lockv1alpha1.Submission
	s.waitClaim(t, claim, "Completed and Ready", 5*time.Minute, func(c *unstructured.Unstructured, phase, composed string) bool {
		if phase == schemas.PhaseCompleted && completedAt.IsZero() {
			completedAt = time.Now()
		}
		var lrs lockv1alpha1.LockRequestList
		if sub == nil && s.Client.List(context.Background(), &lrs, client.InNamespace(r.ns)) == nil {
			for _, lr := range lrs.Items {
				if lr.Status.Submission != nil {
					sub = lr.Status.Submission
				}
			}
		}
		return completed(c, phase, composed)
	})
	t.Logf("e2e: claim -> Completed and Ready in %s", time.Since(claimed).Round(time.Millisecond))
	r.restored = claim

	xr := s.xrOf(t, claim)
	st, _, _ := unstructured.NestedMap(xr.Object, "status")
	r.executorLog(t, st)
	if size, _, _ := unstructured.NestedInt64(st, "snapshotSize"); size != int64(len(snap)) {
		t.Errorf("status.snapshotSize %d, want %d", size, len(snap))
	}
	for _, f := range []string{"startTime", "completionTime"} {
		if v, _ := st[f].(string); v == "" {
			t.Errorf("status.%s not set", f)
		}
	}
	// TLS was verified end to end: the executor spoke https to the pod IPs
	// under the service name the operator's certificate carries, and the
	// health gates took the same CA and name from its record.
	switch {
	case sub == nil:
		t.Error("no submission record was seen on the LockRequest")
	case sub.TLSServerName != "prod."+r.ns+".svc" || !strings.Contains(sub.TLSCA, "BEGIN CERTIFICATE"):
		t.Errorf("submission record: server name %q, CA %q; want prod.%s.svc and the cluster's CA", sub.TLSServerName, sub.TLSCA, r.ns)
	}
	// The restart: every pod once, the standby voters first, then the
	// read replica, the leader last.
	pods, _, _ := unstructured.NestedSlice(st, "restart", "pods")
	var order []string
	for i, p := range pods {
		m := p.(map[string]any)
		order = append(order, fmt.Sprintf("%v(leader=%v)", m["name"], m["leader"]))
		if leader, _ := m["leader"].(bool); leader != (i == len(pods)-1) {
			t.Errorf("restart order %v: want standbys first and the leader last", pods)
		}
		if read := strings.HasPrefix(m["name"].(string), "prod-read-"); read != (i == len(pods)-2) {
			t.Errorf("restart order %v: want the read replica after the standby voters, before the leader", pods)
		}
	}
	if len(pods) != 4 {
		t.Fatalf("status.restart.pods %v: want the three voters and the read replica", pods)
	}
	// The leader stepped down first, by the step-down Job, with the
	// restore's own token: another node was active before its pod went.
	sd, _, _ := unstructured.NestedStringMap(st, "restart", "stepDown")
	leader, _ := pods[len(pods)-1].(map[string]any)["name"].(string)
	if sd["outcome"] != "SteppedDown" || sd["pod"] != leader || sd["newLeader"] == "" || sd["newLeader"] == leader {
		t.Errorf("status.restart.stepDown %v: want the leader %s SteppedDown before its restart", sd, leader)
	}
	t.Logf("e2e: the leader %s stepped down; %s took over: %s", sd["pod"], sd["newLeader"], sd["message"])
	after := s.podUIDs(t, r.ns)
	for name, uid := range before {
		if after[name] == uid {
			t.Errorf("pod %s was not restarted", name)
		}
	}
	t.Logf("e2e: pods restarted in order %v", order)

	// Every node serves the snapshot's data and none of the later writes.
	r.serves(t, map[string]string{"app/db": "password-at-snapshot", "app/api": "key-at-snapshot", "app/new": ""})
	t.Logf("e2e: data checked on all %d nodes: app/db and app/api hold their values at the snapshot; app/new, written after it, is gone", len(bao.Nodes))
	var restarted []string
	for _, p := range pods {
		restarted = append(restarted, p.(map[string]any)["name"].(string))
	}
	r.Summary = &Summary{ToCompleted: completedAt.Sub(claimed), Restarted: restarted,
		Back: []string{"app/db", "app/api"}, Gone: []string{"app/new"}}
	// The lock was held by this restore during the run, and is free now.
	s.waitLockFree(t, r.ns, "prod")
	tl.mu.Lock()
	held := slices.Clone(tl.holders)
	tl.mu.Unlock()
	if !slices.ContainsFunc(held, func(h string) bool { return strings.HasPrefix(h, "openbaorestore/") }) {
		t.Errorf("the restore never held the cluster's lock (holders seen: %v)", held)
	}
	tl.report(t, claimed, completedAt)
	s.story(t, r.ns, xr.GetName())
}

// executorLog logs what the restore Job's executor said, line by line.
func (r *RealBed) executorLog(t testing.TB, st map[string]any) {
	job, _, _ := unstructured.NestedString(st, "plan", "job")
	var pods corev1.PodList
	if err := r.s.Client.List(context.Background(), &pods, client.InNamespace(r.ns), client.MatchingLabels{"batch.kubernetes.io/job-name": job}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		for line := range strings.Lines(strings.TrimSpace(r.k.Logs(r.ns, p.Name))) {
			t.Logf("e2e: executor: %s", strings.TrimRight(line, "\n"))
		}
	}
}

// serves checks that every node, once healthy, serves these values ("" for
// none).
func (r *RealBed) serves(t testing.TB, data map[string]string) {
	t.Helper()
	r.bao.WaitHealthy(t)
	for i := range r.bao.Nodes {
		for k, want := range data {
			if got := r.bao.Get(t, i, k); got != want {
				t.Errorf("node %d: %s = %q, want %q", i, k, got, want)
			}
		}
	}
}
