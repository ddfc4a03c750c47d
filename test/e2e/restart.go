package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

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
	lock := s.WatchNamed(t, schemas.ClusterGVK.GroupVersion().WithKind(schemas.ClusterKind+"List"), ns, cluster)
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
