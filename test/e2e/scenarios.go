package e2e

import (
	"context"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

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
