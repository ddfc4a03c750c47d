// Package e2e runs openbao-restore on real Crossplane core v2.4.0 on the
// loopback control plane of internal/testbed: the packages are built with
// the real `crossplane xpkg build`, pushed to a loopback OCI registry and
// installed with one `crossplane xpkg install configuration`. The harness
// acts as the External package runtime: it runs our binary as the function
// (mTLS from Crossplane's CA) and as the reconciler (under its
// ServiceAccount's identity), and writes the revisions' runtime status.
// Core and its RBAC manager run as their ServiceAccounts with the chart's
// RBAC. See issue 5 for what is still to come.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// TestOnCrossplane starts one stack and runs the scenarios on it, each in a
// namespace of its own.
//
// A real three-voter OpenBao answers the health of every namespace's
// stand-in pods prod-0..2 (pod ordinal i to node i), so that the
// reconciler's restart after a restore passes real health gates and finds
// the real leader.
func TestOnCrossplane(t *testing.T) {
	s := StartStack(t, false)
	bao := baotest.Start(t, 3)
	subnet := bao.Nodes[0].IP[:strings.LastIndexByte(bao.Nodes[0].IP, '.')+1]
	s.startReconciler(t, "http://"+subnet+"{{add .Ordinal 1}}:8200")
	writes := s.xrWrites(t)
	defer func() { t.Logf("XR writes:%s", writes()) }()
	t.Run("ClaimComposesARestore", func(t *testing.T) { claimComposesARestore(t, s) })
	t.Run("InvalidClaims", func(t *testing.T) { invalidClaims(t, s) })
	t.Run("InvalidDrills", func(t *testing.T) { invalidDrills(t, s) })
	t.Run("LockContention", func(t *testing.T) { lockContention(t, s) })
	t.Run("BreakGlass", func(t *testing.T) { breakGlass(t, s) })
	t.Run("DeleteClaimMidRun", func(t *testing.T) { deleteClaimMidRun(t, s) })
	t.Run("MissingSnapshotKey", func(t *testing.T) { missingSnapshotKey(t, s) })
	t.Run("UnconfirmedThenResumeOnClaim", func(t *testing.T) { unconfirmedThenResume(t, s) })
	s.logOpenCircuits(t)
}

// claimComposesARestore claims examples/claim.yaml and checks that
// Crossplane calls the function and composes the LockRequest and the
// executor's RBAC, that the reconciler holds the lock, that the restore Job
// is composed, and, once kwok has completed the Job's pod (no executor runs
// yet), that the claim goes Completed and Ready and the lock is released.
func claimComposesARestore(t *testing.T, s *Stack) {
	ctx := context.Background()
	const ns = "vault"
	s.fixture(t, ns)
	before := s.podUIDs(t, ns)

	claimed := time.Now()
	claim := s.claimExample(t, ns, nil)

	var lr *lockv1alpha1.LockRequest
	testbed.Eventually(t, 60*time.Second, "a LockRequest composed in "+ns, func() (bool, error) {
		l := &lockv1alpha1.LockRequestList{}
		if err := s.Client.List(ctx, l, client.InNamespace(ns)); err != nil {
			return false, err
		}
		if len(l.Items) == 0 {
			return false, nil
		}
		lr = &l.Items[0]
		return true, nil
	})
	t.Logf("e2e: claim -> LockRequest %s in %s", lr.Name, time.Since(claimed).Round(time.Millisecond))

	// The executor's RBAC, composed by Crossplane under the install
	// manifest's role.
	testbed.Eventually(t, 90*time.Second, "executor ServiceAccount, Role and RoleBinding", func() (bool, error) {
		var sas corev1.ServiceAccountList
		var roles rbacv1.RoleList
		var rbs rbacv1.RoleBindingList
		for _, l := range []client.ObjectList{&sas, &roles, &rbs} {
			if err := s.Client.List(ctx, l, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
				return false, err
			}
		}
		return len(sas.Items) == 1 && len(roles.Items) == 1 && len(rbs.Items) == 1, nil
	})
	t.Logf("e2e: claim -> executor RBAC in %s", time.Since(claimed).Round(time.Millisecond))

	// The reconciler takes the lock; the function then composes the Job.
	testbed.Eventually(t, 90*time.Second, "LockRequest "+lr.Name+" Held", func() (bool, error) {
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(lr), lr); err != nil {
			return false, err
		}
		return lr.Status.State == "Held", nil
	})
	t.Logf("e2e: claim -> lock Held in %s", time.Since(claimed).Round(time.Millisecond))
	testbed.Eventually(t, 90*time.Second, "the restore Job composed in "+ns, func() (bool, error) {
		var jobs batchv1.JobList
		if err := s.Client.List(ctx, &jobs, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
			return false, err
		}
		return len(jobs.Items) == 1, nil
	})
	t.Logf("e2e: claim -> Job in %s; total since the stack began %s", time.Since(claimed).Round(time.Millisecond),
		time.Since(s.Began).Round(time.Millisecond))

	// kwok completes the Job's pod without running anything (TestRealRestore
	// runs the executor); the reconciler then follows through: the OpenBao
	// pods restart, the lock is released and the claim is Completed and
	// Ready. The LockRequest, once released, is deleted: a request that is
	// gone counts as released (the cluster's lock is checked below).
	claimKey := client.ObjectKeyFromObject(claim)
	last := ""
	testbed.Eventually(t, 90*time.Second, "the claim Completed and Ready, the lock Released", func() (bool, error) {
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(claim.GroupVersionKind())
		if err := s.Client.Get(ctx, claimKey, c); err != nil {
			return false, err
		}
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(lr), lr); apierrors.IsNotFound(err) {
			lr.Status.State = "Released"
		} else if err != nil {
			return false, err
		}
		phase, _, _ := unstructured.NestedString(c.Object, "status", "phase")
		msg, _, _ := unstructured.NestedString(c.Object, "status", "message")
		if now := phase + " / lock " + lr.Status.State; now != last {
			t.Logf("e2e: %s after %s: claim %s (%s)", now, time.Since(claimed).Round(time.Millisecond), phase, msg)
			last = now
		}
		ready, _ := hasCondition(c, "Ready")
		return phase == "Completed" && ready && lr.Status.State == "Released", nil
	})
	t.Logf("e2e: claim -> Completed, Ready and the lock Released in %s", time.Since(claimed).Round(time.Millisecond))
	s.waitLockFree(t, ns, "prod")
	// The events tell the story: the reconciler's lock events at least
	// (events.k8s.io and core events are two views of the same objects).
	testbed.Eventually(t, 10*time.Second, "lock acquired and released events", func() (bool, error) {
		var evs eventsv1.EventList
		if err := s.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			seen[e.Reason] = true
		}
		return seen[lock.ReasonAcquired] && seen[lock.ReasonReleased], nil
	})
	var evs eventsv1.EventList
	if err := s.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var story strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&story, "\n  %s %s/%s %s: %s", e.Type, e.Regarding.Kind, e.Regarding.Name, e.Reason, e.Note)
	}
	t.Logf("e2e: events in %s:%s", ns, story.String())

	// Every OpenBao pod was restarted once by the follow-through.
	replaced := 0
	after := s.podUIDs(t, ns)
	for name, uid := range before {
		if after[name] != uid {
			replaced++
		}
	}
	t.Logf("e2e: %d of %d OpenBao pods were replaced during the restore", replaced, len(before))
	if replaced != len(before) {
		t.Errorf("%d of %d OpenBao pods replaced, want all", replaced, len(before))
	}
}

// invalidClaims claims each example of examples/invalid (XRs for render,
// turned into claims): each is either refused at admission by the XRD's
// schema or CEL, or accepted and then reported SpecValid=False with a
// message naming the field. Either way no LockRequest, no Job and no
// cluster appear. template-foreign-cluster names the fixture's prod, which
// the function alone can see is not its own.
func invalidClaims(t *testing.T, s *Stack) {
	judgeInvalid(t, s, "vault-invalid", "invalid", schemas.ClaimKind)
}

// invalidDrills does the same with examples/invalid-drill: no run is
// composed either.
func invalidDrills(t *testing.T, s *Stack) {
	judgeInvalid(t, s, "vault-invalid-drill", "invalid-drill", schemas.DrillClaimKind)
}

func judgeInvalid(t *testing.T, s *Stack, ns, dir, kind string) {
	ctx := context.Background()
	s.fixture(t, ns)
	files, err := filepath.Glob(filepath.Join(testbin.Root(), "examples", dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/%s: %v", dir, err)
	}
	var accepted []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // repository files
		if err != nil {
			t.Fatal(err)
		}
		xr := map[string]any{}
		if err := yaml.Unmarshal(b, &xr); err != nil {
			t.Fatal(err)
		}
		spec, _, _ := unstructured.NestedMap(xr, "spec")
		delete(spec, "claimRef")
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		claim := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": schemas.Group + "/" + schemas.Version, "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec}}
		testbed.Eventually(t, time.Minute, name+" judged at admission", func() (bool, error) {
			err = s.Client.Create(ctx, claim.DeepCopy())
			return !meta.IsNoMatchError(err) && !apierrors.IsNotFound(err), err
		})
		switch {
		case apierrors.IsInvalid(err):
			t.Logf("e2e: %s: refused at admission: %v", name, err)
		case err != nil:
			t.Fatalf("%s: %v", name, err)
		default:
			accepted = append(accepted, claim)
		}
	}
	for _, claim := range accepted {
		var msg string
		testbed.Eventually(t, 90*time.Second, claim.GetName()+" SpecValid=False", func() (bool, error) {
			c := &unstructured.Unstructured{}
			c.SetGroupVersionKind(claim.GroupVersionKind())
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(claim), c); err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(c.Object, "status", "conditions")
			for _, x := range conds {
				if m, _ := x.(map[string]any); m != nil && m["type"] == "SpecValid" && m["status"] == "False" {
					msg, _ = m["message"].(string)
					return true, nil
				}
			}
			return false, nil
		})
		if !strings.Contains(msg, "spec.") {
			t.Errorf("%s: the message names no field: %q", claim.GetName(), msg)
		}
		t.Logf("e2e: %s: accepted, then invalid: %s", claim.GetName(), msg)
	}
	// The claims have been judged; nothing may have been composed: no
	// lock request, no Job, no restore (a drill's run), no cluster but
	// the fixture's.
	var lrs lockv1alpha1.LockRequestList
	var jobs batchv1.JobList
	if err := s.Client.List(ctx, &lrs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.List(ctx, &jobs, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
		t.Fatal(err)
	}
	restores := &unstructured.UnstructuredList{}
	restores.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.ClaimKind + "List"})
	clusters := &unstructured.UnstructuredList{}
	clusters.SetGroupVersionKind(schemas.ClusterGVK.GroupVersion().WithKind(schemas.ClusterKind + "List"))
	for _, l := range []*unstructured.UnstructuredList{restores, clusters} {
		if err := s.Client.List(ctx, l, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
	}
	runs := len(restores.Items)
	if kind == schemas.ClaimKind {
		runs = 0 // the invalid restores themselves
	}
	if len(lrs.Items) != 0 || len(jobs.Items) != 0 || runs != 0 || len(clusters.Items) != 1 {
		t.Errorf("invalid claims composed %d LockRequests, %d Jobs, %d restores and %d clusters besides prod",
			len(lrs.Items), len(jobs.Items), runs, len(clusters.Items)-1)
	}
}

// lockContention: a Backup holds the cluster's lock, so the restore waits
// and names the holder; once the backup releases it, the restore proceeds.
func lockContention(t *testing.T, s *Stack) {
	const ns, holder = "vault-contention", "openbaobackup/nightly-1"
	s.fixture(t, ns)
	s.holdBackupLock(t, ns, "prod", holder)
	claim := s.claimExample(t, ns, nil)
	s.waitClaim(t, claim, "waiting for the lock held by "+holder, 90*time.Second, func(_ *unstructured.Unstructured, _, composed string) bool {
		return strings.Contains(composed, holder)
	})
	// It keeps waiting: no Job while the backup holds the lock.
	time.Sleep(2 * time.Second)
	var jobs batchv1.JobList
	if err := s.Client.List(context.Background(), &jobs, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 0 {
		t.Fatalf("a Job was composed while a Backup held the lock")
	}
	released := time.Now()
	s.releaseLock(t, ns, "prod")
	s.waitClaim(t, claim, "Completed and Ready", 60*time.Second, completed)
	t.Logf("e2e: backup released -> claim Completed in %s", time.Since(released).Round(time.Millisecond))
}

// breakGlass: with force and overrideOperationLock, a stuck Backup lock is
// overridden with a Warning event, and the restore completes.
func breakGlass(t *testing.T, s *Stack) {
	const ns, holder = "vault-breakglass", "openbaobackup/stuck-1"
	s.fixture(t, ns)
	s.holdBackupLock(t, ns, "prod", holder)
	claim := s.claimExample(t, ns, func(spec map[string]any) {
		spec["force"] = true
		spec["overrideOperationLock"] = true
	})
	s.waitClaim(t, claim, "Completed and Ready", 60*time.Second, completed)
	testbed.Eventually(t, 10*time.Second, "a Warning event naming the overridden holder", func() (bool, error) {
		var evs eventsv1.EventList
		if err := s.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, holder) && strings.Contains(e.Reason, "Override") {
				return true, nil
			}
		}
		return false, nil
	})
}

// deleteClaimMidRun: the claim is deleted while its Job runs; everything
// composed is cleaned up and the cluster's lock is released.
func deleteClaimMidRun(t *testing.T, s *Stack) {
	ctx := context.Background()
	const ns = "vault-delete"
	s.fixture(t, ns)
	s.holdJobPods(t, ns)
	claim := s.claimExample(t, ns, nil)
	s.waitClaim(t, claim, "Running", 90*time.Second, func(_ *unstructured.Unstructured, phase, _ string) bool {
		return phase == "Running"
	})
	if err := s.Client.Delete(ctx, claim); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	testbed.Eventually(t, 60*time.Second, "the claim, its XR and everything composed gone, the lock released", func() (bool, error) {
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(claim.GroupVersionKind())
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(claim), c); !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("claim still there (%v)", err)
		}
		xrs := &unstructured.UnstructuredList{}
		xrs.SetAPIVersion("restore.openbao-restore.io/v1alpha1")
		xrs.SetKind("XOpenBaoRestoreList")
		if err := s.Client.List(ctx, xrs, client.MatchingLabels{"crossplane.io/claim-namespace": ns}); err != nil || len(xrs.Items) > 0 {
			return false, fmt.Errorf("XRs left: %d (%v)", len(xrs.Items), err)
		}
		var lrs lockv1alpha1.LockRequestList
		var jobs batchv1.JobList
		var sas corev1.ServiceAccountList
		var roles rbacv1.RoleList
		var rbs rbacv1.RoleBindingList
		for _, l := range []client.ObjectList{&lrs} {
			if err := s.Client.List(ctx, l, client.InNamespace(ns)); err != nil {
				return false, err
			}
		}
		for _, l := range []client.ObjectList{&jobs, &sas, &roles, &rbs} {
			if err := s.Client.List(ctx, l, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
				return false, err
			}
		}
		if n := len(lrs.Items) + len(jobs.Items) + len(sas.Items) + len(roles.Items) + len(rbs.Items); n > 0 {
			return false, fmt.Errorf("left: %d LockRequests, %d Jobs, %d ServiceAccounts, %d Roles, %d RoleBindings",
				len(lrs.Items), len(jobs.Items), len(sas.Items), len(roles.Items), len(rbs.Items))
		}
		cl, err := s.getCluster(ns, "prod")
		if err != nil {
			return false, err
		}
		if l, found, _ := unstructured.NestedMap(cl.Object, "status", "operationLock"); found && len(l) > 0 {
			return false, fmt.Errorf("the cluster's lock is still %v", l)
		}
		return true, nil
	})
	t.Logf("e2e: claim deleted mid-run -> all cleaned up and the lock released in %s", time.Since(deleted).Round(time.Millisecond))
}

// missingSnapshotKey: the executor exits with the snapshot exit code (faked
// by kwok: no executor runs yet) and a termination message listing nearby
// keys; the Job fails at once under its podFailurePolicy (one pod, no
// retry), the claim is Failed with that message, and the lock is released.
func missingSnapshotKey(t *testing.T, s *Stack) {
	ctx := context.Background()
	const ns = "vault-missing-key"
	s.fixture(t, ns)
	tm, err := json.Marshal(schemas.TerminationMessage{ExitCode: schemas.ExitSnapshot, SnapshotKey: "clusters/prod/missing.snap",
		Message: "snapshot clusters/prod/missing.snap does not exist; nearby keys: clusters/prod/2025-10-14-120000.snap"})
	if err != nil {
		t.Fatal(err)
	}
	s.failJobPods(t, ns, schemas.ExitSnapshot, string(tm))
	claim := s.claimExample(t, ns, func(spec map[string]any) {
		_ = unstructured.SetNestedField(spec, "clusters/prod/missing.snap", "source", "key")
	})
	claimed := time.Now()
	s.waitClaim(t, claim, "Failed", 60*time.Second, func(_ *unstructured.Unstructured, phase, _ string) bool {
		return phase == "Failed"
	})
	t.Logf("e2e: claim -> Failed in %s", time.Since(claimed).Round(time.Millisecond))
	c := &unstructured.Unstructured{}
	c.SetGroupVersionKind(claim.GroupVersionKind())
	if err := s.Client.Get(ctx, client.ObjectKeyFromObject(claim), c); err != nil {
		t.Fatal(err)
	}
	if msg, _, _ := unstructured.NestedString(c.Object, "status", "message"); !strings.Contains(msg, "nearby keys") {
		t.Errorf("the claim's message does not list the nearby keys: %q", msg)
	}
	var jobs batchv1.JobList
	if err := s.Client.List(ctx, &jobs, client.InNamespace(ns), client.HasLabels{schemas.LabelComposite}); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 1 || jobs.Items[0].Status.Failed != 1 {
		t.Errorf("want one Job with exactly one failed pod (no retry), got %d Jobs %+v", len(jobs.Items), jobs.Items)
	}
	s.waitLockFree(t, ns, "prod")
}

// unconfirmedThenResume: the executor exits 11 (submitted, outcome
// unconfirmed; faked by kwok), so the claim is Unknown with the lock held and
// a message naming the acknowledgement. The user annotates the CLAIM (not
// the XR) with Resume; Crossplane carries the annotation to the XR, the
// reconciler re-runs the health gates and restarts every OpenBao pod, and
// the claim is Completed and Ready with the lock released.
func unconfirmedThenResume(t *testing.T, s *Stack) {
	const ns = "vault-unconfirmed"
	s.fixture(t, ns)
	tm, err := json.Marshal(schemas.TerminationMessage{ExitCode: schemas.ExitUnconfirmed, Submitted: true,
		Message: "the connection broke after the snapshot was sent"})
	if err != nil {
		t.Fatal(err)
	}
	s.failJobPods(t, ns, schemas.ExitUnconfirmed, string(tm))
	before := s.podUIDs(t, ns)
	claim := s.claimExample(t, ns, nil)
	var msg string
	s.waitClaim(t, claim, "Unknown", 90*time.Second, func(c *unstructured.Unstructured, phase, _ string) bool {
		msg, _, _ = unstructured.NestedString(c.Object, "status", "message")
		return phase == "Unknown"
	})
	xr := s.xrOf(t, claim)
	ack := string(xr.GetUID()) + "/Resume"
	if !strings.Contains(msg, schemas.AcknowledgeAnnotation+"="+ack) {
		t.Fatalf("the claim's message does not name the acknowledgement %s: %q", ack, msg)
	}
	if s.lockHolder(t, ns, "prod") == "" {
		t.Fatal("the lock was released while the restore is Unknown")
	}
	s.acknowledge(t, claim, ack)
	resumed := time.Now()
	s.waitClaim(t, claim, "Completed and Ready", 90*time.Second, completed)
	t.Logf("e2e: Resume on the claim -> Completed in %s", time.Since(resumed).Round(time.Millisecond))
	after := s.podUIDs(t, ns)
	for name, uid := range before {
		if after[name] == uid {
			t.Errorf("pod %s was not restarted after the Resume", name)
		}
	}
	s.waitLockFree(t, ns, "prod")
}
