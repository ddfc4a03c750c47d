package phase_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// childEnv, when set ("<namespace> <health URL>"), makes the test binary
// run the reconciler as the binary does instead of the tests, so that a
// test can SIGKILL it.
const childEnv = "OPENBAO_RESTORE_PHASE_CHILD"

// runChild runs the reconciler if this process is a child, and reports
// whether it was.
func runChild() bool {
	v := os.Getenv(childEnv)
	if v == "" {
		return false
	}
	ns, url, _ := strings.Cut(v, " ")
	if err := command(ns, url).Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// command is the reconciler as the binary runs it, with the tests'
// settings. No leader election: a test kills one process before it starts
// the next, and a lease left by a SIGKILL would only add a wait.
//
// The restart timeout outlasts the disruption controller's two minutes: a
// reconciler killed while the API server handles its eviction can leave
// the budget spent (the eviction counted, the pod not deleted) until the
// controller forgets that disruption, and the restart waits it out.
func command(ns, healthURL string) *reconciler.Command {
	return &reconciler.Command{MetricsBindAddress: "0", HealthProbeBindAddress: "0", LeaderElect: false,
		Namespace: []string{ns}, Concurrency: 4, HealthURL: healthURL, HealthTimeout: 2 * time.Second,
		RestartTimeout: budgetExpiry + time.Minute, SealedTimeout: time.Minute, RestartPoll: 200 * time.Millisecond}
}

// budgetExpiry is how long kube-controller-manager's disruption controller
// counts an eviction whose pod was not deleted (its DeletionTimeout).
const budgetExpiry = 2 * time.Minute

// TestKilledMidRestartConverges: the reconciler (lock and phase, as the
// binary runs them, under exactly the install manifest's grants) is
// SIGKILLed at random moments from the restore Job's success until the
// restart of a real three-voter OpenBao's pods is over, and started again
// each time. It converges: Completed, every pod restarted exactly once,
// standbys first and the leader last, as status.restart records.
func TestKilledMidRestartConverges(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	kc, err := env.UserKubeconfig(unionUser(t, env))
	if err != nil {
		t.Fatal(err)
	}
	bao := baotest.Start(t, 3)
	subnet := bao.Nodes[0].IP[:strings.LastIndexByte(bao.Nodes[0].IP, '.')+1]
	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 3)
	m := startMirror(t, env, ns, bao)
	ch := testbed.StartChild(t, []string{childEnv + "=" + ns + " http://" + subnet + "{{add .Ordinal 1}}:8200", "KUBECONFIG=" + kc})

	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{})
	waitPhase(t, env, xr, schemas.PhaseValidating)
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	deadline := time.Now().Add(2 * time.Minute)
	kills := 0
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		if status(t, get(t, env, xr)).Phase == schemas.PhaseCompleted {
			break
		}
		ch.Kill()
		kills++
		ch.Start()
	}
	st := waitPhaseFor(t, env, xr, schemas.PhaseCompleted, budgetExpiry+2*time.Minute)
	checkOrder(t, m.deletions(), st)
	t.Logf("killed %d times during the restore; %d pods restarted in order %v", kills, len(m.deletions()), names(m.deletions()))
}

func names(ds []deletion) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.name)
	}
	return out
}
