package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
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
	// snap is the happy path's snapshot, stored as clusters/prod/e2e.snap.
	snap []byte
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
	r.snap = snap
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

// missingKey is scenario 4: a key that does not exist fails the restore
// quickly and without a retry (one pod: a permanent exit code), with a
// message listing the keys that exist nearby; the lock is released and the
// cluster is untouched (same data, no pod restarted).
func (r *RealBed) missingKey(t testing.TB) {
	s, bao := r.s, r.bao
	want := bao.Get(t, 0, "app/db")
	before := s.podUIDs(t, r.ns)
	claim := r.claim(t, "missing-key", "clusters/prod/e2e-typo.snap", nil)
	claimed := time.Now()
	var msg string
	s.waitClaim(t, claim, "Failed", 2*time.Minute, func(c *unstructured.Unstructured, phase, _ string) bool {
		msg, _, _ = unstructured.NestedString(c.Object, "status", "message")
		return phase == schemas.PhaseFailed
	})
	t.Logf("e2e: claim -> Failed in %s: %s", time.Since(claimed).Round(time.Millisecond), msg)
	if !strings.Contains(msg, "clusters/prod/e2e.snap") || !strings.Contains(msg, "exit code 4") {
		t.Errorf("the message does not give exit code 4 and the nearby key clusters/prod/e2e.snap: %q", msg)
	}
	var jobs batchv1.JobList
	if err := s.Client.List(context.Background(), &jobs, client.InNamespace(r.ns), client.MatchingLabels{"crossplane.io/composite": s.xrOf(t, claim).GetName()}); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 1 || jobs.Items[0].Status.Failed != 1 {
		t.Errorf("want one Job with one failed pod (no retry): %d Jobs", len(jobs.Items))
	}
	s.waitLockFree(t, r.ns, "prod")
	for i := range bao.Nodes {
		if got := bao.Get(t, i, "app/db"); got != want {
			t.Errorf("node %d: app/db = %q, want %q (untouched)", i, got, want)
		}
	}
	if after := s.podUIDs(t, r.ns); !maps.Equal(before, after) {
		t.Errorf("pods restarted by a failed restore: %v -> %v", before, after)
	}
}

// lockContention is scenario 2 with the real executor: a Backup holds the
// lock, so the restore waits with the holder named and nothing runs; once
// the Backup releases it, the restore proceeds and completes.
func (r *RealBed) lockContention(t testing.TB) {
	s := r.s
	const holder = "openbaobackup/nightly-1"
	s.holdBackupLock(t, r.ns, "prod", holder)
	claim := r.claim(t, "contended", "clusters/prod/e2e.snap", nil)
	s.waitClaim(t, claim, "waiting for the lock held by "+holder, 90*time.Second, func(_ *unstructured.Unstructured, _, composed string) bool {
		return strings.Contains(composed, holder)
	})
	time.Sleep(2 * time.Second)
	var jobs batchv1.JobList
	if err := s.Client.List(context.Background(), &jobs, client.InNamespace(r.ns), client.MatchingLabels{"crossplane.io/composite": s.xrOf(t, claim).GetName()}); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 0 {
		t.Fatal("a Job was composed while a Backup held the lock")
	}
	released := time.Now()
	s.releaseLock(t, r.ns, "prod")
	s.waitClaim(t, claim, "Completed and Ready", 3*time.Minute, completed)
	t.Logf("e2e: backup released -> claim Completed (a real restore and restart) in %s", time.Since(released).Round(time.Millisecond))
	s.waitLockFree(t, r.ns, "prod")
}

// breakGlass is scenario 3 with the real executor: with force and
// overrideOperationLock, a stuck Backup lock is overridden with a Warning
// event naming it, and the restore (through snapshot-force) completes.
func (r *RealBed) breakGlass(t testing.TB) {
	s := r.s
	const holder = "openbaobackup/stuck-1"
	s.holdBackupLock(t, r.ns, "prod", holder)
	claim := r.claim(t, "break-glass", "clusters/prod/e2e.snap", func(_, spec map[string]any) {
		spec["force"] = true
		spec["overrideOperationLock"] = true
	})
	s.waitClaim(t, claim, "Completed and Ready", 3*time.Minute, completed)
	testbed.Eventually(t, 10*time.Second, "a Warning event naming the overridden holder", func() (bool, error) {
		var evs eventsv1.EventList
		if err := s.Client.List(context.Background(), &evs, client.InNamespace(r.ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, holder) && strings.Contains(e.Reason, "Override") {
				return true, nil
			}
		}
		return false, nil
	})
	s.waitLockFree(t, r.ns, "prod")
	r.bao.WaitHealthy(t)
	for i := range r.bao.Nodes {
		if got := r.bao.Get(t, i, "app/db"); got != "password-at-snapshot" {
			t.Errorf("node %d: app/db = %q after the forced restore, want the snapshot's", i, got)
		}
	}
}

// foreignSnapshot is scenario 7: with force, a snapshot of another cluster
// (another static seal key) is applied, and the nodes seal themselves. The
// restore is Unknown with the lock held and a message saying how to unseal;
// once the nodes have the source cluster's seal key (the Secret, then a
// restart of every pod) and the Resume annotation is set, the gates pass,
// the pods restart once more, and the restore completes with the source
// cluster's data on every node.
func (r *RealBed) foreignSnapshot(t testing.TB) {
	s, bao := r.s, r.bao
	ctx := context.Background()
	src := baotest.Start(t, 1)
	src.Put(t, "app/db", "from-the-other-cluster")
	const key = "clusters/other/foreign.snap"
	r.store.Put(t, key, src.Snapshot(t))
	claim := r.claim(t, "foreign", key, func(_, spec map[string]any) { spec["force"] = true })
	var msg string
	s.waitClaim(t, claim, "Unknown", 3*time.Minute, func(c *unstructured.Unstructured, phase, _ string) bool {
		msg, _, _ = unstructured.NestedString(c.Object, "status", "message")
		return phase == schemas.PhaseUnknown
	})
	xr := s.xrOf(t, claim)
	ack := string(xr.GetUID()) + "/Resume"
	for _, want := range []string{"sealed itself", "unseal", schemas.AcknowledgeAnnotation + "=" + ack} {
		if !strings.Contains(msg, want) {
			t.Errorf("the Unknown message lacks %q: %q", want, msg)
		}
	}
	for i := range bao.Nodes {
		h, err := bao.Probe(i)
		t.Logf("e2e: after the foreign restore node %d answers %+v %v", i, h, err)
	}
	if s.lockHolder(t, r.ns, "prod") == "" {
		t.Fatal("the lock was released while the restore is Unknown")
	}

	// What the message says: give the nodes the source cluster's key and
	// restart them (here: the seal Secret, then every pod deleted).
	keyBytes, err := os.ReadFile(src.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "prod-seal"}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data["key"] = keyBytes
	if err := s.Client.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	// The pods are the operator's: on an installation with its admission
	// policy only it (its own rolling restart) may delete them.
	op, err := s.Operator()
	if err != nil {
		t.Fatal(err)
	}
	if err := op.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(r.ns), client.MatchingLabels{schemas.LabelOperatorCluster: "prod"}); err != nil {
		t.Fatal(err)
	}
	bao.RootToken = src.RootToken // the source cluster's data, tokens included
	bao.WaitHealthy(t)
	t.Logf("e2e: the pods restarted with the source cluster's key and unsealed")
	before := s.podUIDs(t, r.ns)
	s.acknowledge(t, claim, ack)
	s.waitClaim(t, claim, "Completed and Ready", 3*time.Minute, completed)
	after := s.podUIDs(t, r.ns)
	for name, uid := range before {
		if after[name] == uid {
			t.Errorf("pod %s was not restarted after the Resume", name)
		}
	}
	bao.WaitHealthy(t)
	for i := range bao.Nodes {
		if got := bao.Get(t, i, "app/db"); got != "from-the-other-cluster" {
			t.Errorf("node %d: app/db = %q, want the source cluster's value", i, got)
		}
	}
	s.waitLockFree(t, r.ns, "prod")
}

// startKubelet starts the harness kubelet as the only node (kwok is off in
// this stack), without its taint, so that the Jobs the function composes
// land on it. It runs our binary for the executor's image and OpenBao
// 2.4.0 for baoImage; the pods of cluster prod get fixed addresses
// (podIP), so that the OpenBao configuration can name its peers.
func (s *Stack) startKubelet(t testing.TB) *kubelet.Kubelet {
	t.Helper()
	var k *kubelet.Kubelet
	ips := func(p *corev1.Pod) string {
		if k == nil {
			return ""
		}
		return podIP(k, p.Name)
	}
	// The kubelet's state (pod roots, volumes) lives outside /tmp: the
	// executor's pod mounts an emptyDir on /tmp, which would hide it.
	dir, err := os.MkdirTemp("/var/tmp", "openbao-restore-e2e-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// Our binaries too (the product and the executor beside it, as in
	// the image): the stack built them under /tmp.
	exe := filepath.Join(dir, "openbao-restore")
	for _, name := range []string{"openbao-restore", "openbao-restore-executor"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(s.Bin), name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil { //nolint:gosec // an executable
			t.Fatal(err)
		}
	}
	// A kubelet's identity, which the operator's admission policy lets
	// delete the pods of its node once they have terminated.
	kcfg, err := s.AddUser("system:node:"+kubelet.DefaultNode, "system:nodes", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	k, err = kubelet.Start(context.Background(), kcfg, kubelet.Options{
		Node: kubelet.DefaultNode,
		Dir:  dir,
		IPs:  ips,
		Logf: t.Logf,
		Images: map[string]string{
			upstreamPrefix + "openbao-restore": exe,
			baoImage:                           testbin.Path(t, "openbao"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	var node corev1.Node
	if err := s.Client.Get(context.Background(), client.ObjectKey{Name: k.Node()}, &node); err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = nil
	if err := s.Client.Update(context.Background(), &node); err != nil {
		t.Fatal(err)
	}
	return k
}

// e2eComposition copies the installed Composition under another name with
// an Input that allows insecure endpoints (the loopback S3 server).
func (s *Stack) e2eComposition(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	c := &unstructured.Unstructured{}
	c.SetAPIVersion("apiextensions.crossplane.io/v1")
	c.SetKind("Composition")
	if err := s.Client.Get(ctx, client.ObjectKey{Name: xrdName}, c); err != nil {
		t.Fatal(err)
	}
	steps, _, _ := unstructured.NestedSlice(c.Object, "spec", "pipeline")
	for _, st := range steps {
		in, _ := st.(map[string]any)["input"].(map[string]any)
		in["allowInsecureEndpoints"] = true
	}
	cp := &unstructured.Unstructured{Object: map[string]any{"apiVersion": c.GetAPIVersion(), "kind": c.GetKind(),
		"metadata": map[string]any{"name": e2eComposition}, "spec": c.Object["spec"]}}
	_ = unstructured.SetNestedSlice(cp.Object, steps, "spec", "pipeline")
	if err := s.Client.Create(ctx, cp); err != nil {
		t.Fatal(err)
	}
}

// xrOf reads the claim's XR.
func (s *Stack) xrOf(t testing.TB, claim *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	c := &unstructured.Unstructured{}
	c.SetGroupVersionKind(claim.GroupVersionKind())
	if err := s.Client.Get(ctx, client.ObjectKeyFromObject(claim), c); err != nil {
		t.Fatal(err)
	}
	name, _, _ := unstructured.NestedString(c.Object, "spec", "resourceRef", "name")
	xr := &unstructured.Unstructured{}
	xr.SetAPIVersion(schemas.Group + "/" + schemas.Version)
	xr.SetKind(schemas.XRKind)
	if err := s.Client.Get(ctx, client.ObjectKey{Name: name}, xr); err != nil {
		t.Fatal(err)
	}
	return xr
}

// timeline records, from watches in the restore's namespace, the holders
// of the cluster's lock and the moments the README's figures need: the
// Job complete, each OpenBao pod's deletion and Ready, the lock released.
type timeline struct {
	mu         sync.Mutex
	holders    []string
	jobDone    time.Time
	deleted    []time.Time // graceful deletion marks of the OpenBao pods
	ready      time.Time   // the last time an OpenBao pod became Ready
	lockFreeAt time.Time   // the last release of the lock
}

func (s *Stack) watchTimeline(t testing.TB, ns, cluster string) *timeline {
	t.Helper()
	tl := &timeline{}
	wc, err := client.NewWithWatch(s.Config, client.Options{Scheme: s.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lock := s.WatchNamed(t, schema.GroupVersionKind{Group: schemas.ClusterGroup, Version: schemas.ClusterVersion, Kind: schemas.ClusterKind + "List"}, ns, cluster)
	pods, err := wc.Watch(ctx, &corev1.PodList{}, client.InNamespace(ns), client.MatchingLabels(testbed.ClusterPodLabels(cluster)))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := wc.Watch(ctx, &batchv1.JobList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pods.Stop(); jobs.Stop() })
	go func() {
		held := false
		for ev := range lock.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			h, _, _ := unstructured.NestedString(u.Object, "status", "operationLock", "holder")
			tl.mu.Lock()
			switch {
			case h != "":
				tl.holders = append(tl.holders, h)
				held = true
			case held:
				tl.lockFreeAt, held = time.Now(), false
			}
			tl.mu.Unlock()
		}
	}()
	go func() {
		marked := map[string]bool{}
		for ev := range pods.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			tl.mu.Lock()
			if p.DeletionTimestamp != nil && p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds > 0 && !marked[string(p.UID)] {
				marked[string(p.UID)] = true
				tl.deleted = append(tl.deleted, time.Now())
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil && !marked[string(p.UID)+"/ready"] {
					marked[string(p.UID)+"/ready"] = true
					tl.ready = time.Now()
				}
			}
			tl.mu.Unlock()
		}
	}()
	go func() {
		for ev := range jobs.ResultChan() {
			j, ok := ev.Object.(*batchv1.Job)
			if !ok {
				continue
			}
			for _, c := range j.Status.Conditions {
				if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
					tl.mu.Lock()
					if tl.jobDone.IsZero() {
						tl.jobDone = time.Now()
					}
					tl.mu.Unlock()
				}
			}
		}
	}()
	return tl
}

// report logs the figures of one restore.
func (tl *timeline) report(t testing.TB, claimed, completed time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	msg := fmt.Sprintf("e2e: figures: claim -> Completed %s", completed.Sub(claimed).Round(time.Millisecond))
	if len(tl.deleted) > 0 && !tl.jobDone.IsZero() {
		msg += fmt.Sprintf("; Job complete -> first pod restart %s", tl.deleted[0].Sub(tl.jobDone).Round(time.Millisecond))
	}
	if !tl.ready.IsZero() && !tl.lockFreeAt.IsZero() {
		msg += fmt.Sprintf("; last pod Ready -> lock released %s", tl.lockFreeAt.Sub(tl.ready).Round(time.Millisecond))
	}
	t.Log(msg)
}

// story logs the events of the restore in time order: those of the
// namespace (the lock request, the Job, the pods) and those of the XR
// (cluster-scoped, so its events are in "default"); the phases and the
// restart must be told.
func (s *Stack) story(t testing.TB, ns, xr string) {
	t.Helper()
	var all []eventsv1.Event
	testbed.Eventually(t, 30*time.Second, "the restore's events", func() (bool, error) {
		all = nil
		for _, n := range []string{ns, "default"} {
			var evs eventsv1.EventList
			if err := s.Client.List(context.Background(), &evs, client.InNamespace(n)); err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if n == ns || e.Regarding.Name == xr {
					all = append(all, e)
				}
			}
		}
		seen := map[string]bool{}
		for _, e := range all {
			seen[e.Reason] = true
		}
		for _, r := range []string{"RestorePending", "RestoreValidating", "RestoreRunning", "RestartingPod", "PodRestarted", "RestoreCompleted",
			"OperationLockAcquired", "OperationLockReleased"} {
			if !seen[r] {
				return false, fmt.Errorf("no %s event yet", r)
			}
		}
		return true, nil
	})
	sort.SliceStable(all, func(i, j int) bool { return all[i].CreationTimestamp.Before(&all[j].CreationTimestamp) })
	var b strings.Builder
	for _, e := range all {
		fmt.Fprintf(&b, "\n  %s %s %s/%s %s: %s", e.CreationTimestamp.Format("15:04:05"), e.Type, e.Regarding.Kind, e.Regarding.Name, e.Reason, e.Note)
	}
	t.Logf("e2e: the story:%s", b.String())
}
