package phase_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/phase"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// deletion is one OpenBao pod deleted by the reconciler, as the mirror saw it.
type deletion struct {
	name, uid string
	leader    bool // the node was active when its pod went
	at        time.Time
}

// mirror plays the kubelet's part for the kwok pods that stand in for the
// OpenBao pods: a deleted pod restarts its OpenBao node (SIGKILL, then
// start), so that the reconciler's health gates see real restarts,
// leadership moving, and, when asked, a node that comes back sealed.
type mirror struct {
	mu       sync.Mutex
	dels     []deletion
	sealNext bool
}

func startMirror(t *testing.T, env *testbed.Env, ns string, bao *baotest.Cluster) *mirror {
	t.Helper()
	m := &mirror{}
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &corev1.PodList{}, client.InNamespace(ns), client.MatchingLabels(testbed.ClusterPodLabels("prod")))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		marked := map[string]bool{}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			var i int
			if _, err := fmt.Sscanf(p.Name, "prod-%d", &i); err != nil {
				continue
			}
			// The reconciler deletes gracefully (the pod's grace period),
			// and kwok then removes the pod with grace 0. kwok's
			// pod-delete stage deletes by name, without a UID
			// precondition, and now and then also removes the
			// replacement of a pod it just removed (seen here, with the
			// reconciler's own deletions logged): a deletion with grace
			// 0 is kwok's, never the reconciler's, and is not counted.
			if p.DeletionTimestamp == nil || marked[string(p.UID)] {
				continue
			}
			if g := p.DeletionGracePeriodSeconds; g == nil || *g == 0 {
				if !marked[string(p.UID)] {
					t.Logf("mirror: pod %s (uid %s) removed by kwok's delete by name, not counted", p.Name, p.UID)
					marked[string(p.UID)] = true
				}
				continue
			}
			marked[string(p.UID)] = true
			h, _ := bao.Probe(i)
			m.mu.Lock()
			m.dels = append(m.dels, deletion{name: p.Name, uid: string(p.UID), leader: h.Active(), at: time.Now()})
			seal := m.sealNext
			m.sealNext = false
			m.mu.Unlock()
			bao.Kill(t, i)
			if seal {
				bao.StartSealed(t, i)
			} else {
				bao.Start(t, i)
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return m
}

func (m *mirror) deletions() []deletion {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]deletion(nil), m.dels...)
}

func (m *mirror) sealOnNextRestart() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sealNext = true
}

// checkOrder checks one restore's deletions: each pod once, standbys
// first, the leader last, matching status.restart.
func checkOrder(t *testing.T, dels []deletion, st phase.Status) {
	t.Helper()
	if st.Restart != nil {
		for i, p := range st.Restart.Pods {
			t.Logf("status.restart.pods[%d]: %s uid %s leader %v deleted %v healthy %v", i, p.Name, p.UID, p.Leader, p.DeletedAt, p.HealthyAt)
		}
	}
	for i, d := range dels {
		t.Logf("deletion %d: %s uid %s leader %v at %s", i, d.name, d.uid, d.leader, d.at.Format("15:04:05.000"))
	}
	seen := map[string]bool{}
	for i, d := range dels {
		if seen[d.name] {
			t.Errorf("pod %s deleted twice: %+v", d.name, dels)
		}
		seen[d.name] = true
		if d.leader != (i == len(dels)-1) {
			t.Errorf("deletion %d of %s: leader %v; want standbys first, the leader last: %+v", i, d.name, d.leader, dels)
		}
	}
	if len(dels) != 3 {
		t.Fatalf("%d deletions, want 3: %+v", len(dels), dels)
	}
	if st.Restart == nil || len(st.Restart.Pods) != 3 {
		t.Fatalf("status.restart %+v", st.Restart)
	}
	for i, p := range st.Restart.Pods {
		if p.Name != dels[i].name || p.UID != dels[i].uid || p.HealthyAt == nil || p.Leader != (i == 2) {
			t.Errorf("status.restart.pods[%d] = %+v, deleted %+v", i, p, dels[i])
		}
	}
}

// TestRestartOnRealOpenBao: a three-voter OpenBao 2.4.0 answers the health
// of the cluster's three pods. After the restore Job succeeds, the pods are
// deleted one at a time, standbys first and the leader last, each once and
// only when the cluster is healthy; then Completed. A second restore whose
// first restarted pod comes back sealed goes Unknown with the unseal
// message and stops deleting; once the node is unsealed, Resume re-runs the
// gates and finishes, and no pod is deleted twice.
func TestRestartOnRealOpenBao(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	bao := baotest.Start(t, 3)
	subnet := bao.Nodes[0].IP[:strings.LastIndexByte(bao.Nodes[0].IP, '.')+1]
	w := startWith(t, env, ns, false, "http://"+subnet+"{{add .Ordinal 1}}:8200")
	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 3)
	m := startMirror(t, env, ns, bao)

	// One restore: every pod restarted in order.
	xr := createXRNamed(t, env, ns, ns+"-a", nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld})
	finished := createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)
	st := waitPhaseFor(t, env, xr, schemas.PhaseCompleted, 3*time.Minute)
	dels := m.deletions()
	checkOrder(t, dels, st)
	if !strings.Contains(st.Message, "all 3 OpenBao pods were restarted") || condition(st, "Restored").Status != "True" {
		t.Errorf("status %+v", st)
	}
	done := <-finished
	if len(dels) > 0 {
		t.Logf("Job finished -> first pod deleted: %s; -> Completed: %s", dels[0].at.Sub(done).Round(time.Millisecond),
			observed(t, w, xr, schemas.PhaseCompleted).Sub(done).Round(time.Millisecond))
	}
	bao.WaitHealthy(t)

	// A second restore: the first pod it restarts comes back sealed.
	m.sealOnNextRestart()
	xr2 := createXRNamed(t, env, ns, ns+"-b", nil)
	createLock(t, env, ns, xr2, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld})
	createJob(t, env, ns, xr2, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)
	st = waitPhaseFor(t, env, xr2, schemas.PhaseUnknown, 2*time.Minute)
	for _, s := range []string{"sealed", "bao operator unseal", string(xr2.GetUID()) + "/Resume", "lock stays held"} {
		if !strings.Contains(st.Message, s) {
			t.Errorf("message %q lacks %q", st.Message, s)
		}
	}
	sealed := m.deletions()[len(dels):]
	if len(sealed) != 1 {
		t.Fatalf("deletions after the sealed pod: %+v", sealed)
	}
	var i int
	if _, err := fmt.Sscanf(sealed[0].name, "prod-%d", &i); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := len(m.deletions()) - len(dels); n != 1 {
		t.Fatalf("%d pods deleted while one was sealed", n)
	}
	// Unseal (here: start it with the right key), then Resume.
	bao.Stop(t, i)
	bao.Start(t, i)
	bao.WaitHealthy(t)
	annotate(t, env, xr2, string(xr2.GetUID())+"/Resume")
	st = waitPhaseFor(t, env, xr2, schemas.PhaseCompleted, 3*time.Minute)
	checkOrder(t, m.deletions()[len(dels):], st)
	if st.Restart == nil || st.Restart.Acknowledged != string(xr2.GetUID())+"/Resume" {
		t.Errorf("restart %+v", st.Restart)
	}
}
