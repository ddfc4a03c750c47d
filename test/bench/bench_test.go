// Package bench benchmarks the companion reconciler (reconciler/: the lock
// and the phase reconcilers in one manager, as the binary runs them) on the
// real loopback control plane of internal/testbed, with concurrent restores.
// See README.md for what is measured and how to run it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/reconciler"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/reconciler/phase"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

const (
	// childEnv, when set ("<namespace> <health URL> <probe address>
	// <metrics address>"),
	// makes the test binary run the reconciler instead of the benchmarks.
	childEnv = "OPENBAO_RESTORE_BENCH_CHILD"
	// concurrency is the reconciler's --concurrency (LockRequests, and
	// XRs of each kind, reconciled in parallel): its default, unless
	// concurrencyEnv says otherwise.
	concurrency    = 4
	concurrencyEnv = "OPENBAO_RESTORE_BENCH_CONCURRENCY"
	// workers bounds the benchmark's own concurrent writes (creating
	// clusters, XRs, LockRequests and Jobs, deleting LockRequests).
	workers = 16

	runLabel     = "bench.openbao-restore.io/run"
	outcomeLabel = "bench.openbao-restore.io/outcome"
	clusterLabel = "restore.openbao-restore.io/cluster"

	okMessage   = `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`
	failMessage = `{"submitted":false,"exitCode":4,"message":"not found"}`

	// noHealth is a health URL nothing answers: the lock hand-over never
	// reaches a restart.
	noHealth = "http://127.0.0.1:1"
)

// Jobs must really run: the full test bed (KCM, scheduler, kwok).
func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(runChild(v))
	}
	// The benchmark's own clients log nothing worth reading.
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	testbed.Main(m, testbed.Options{CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs}})
}

// runChild runs the reconciler as the binary does (reconciler.Command),
// with the benchmark's settings, until SIGTERM or SIGKILL.
func runChild(v string) int {
	f := strings.Fields(v)
	if len(f) != 4 {
		fmt.Fprintf(os.Stderr, "%s=%q: want <namespace> <health URL> <probe address> <metrics address>\n", childEnv, v)
		return 2
	}
	c := &reconciler.Command{MetricsBindAddress: f[3], HealthProbeBindAddress: f[2], LeaderElect: false,
		Namespace: []string{f[0]}, Concurrency: concurrency, HealthURL: f[1], HealthTimeout: 2 * time.Second,
		RestartTimeout: 5 * time.Minute, SealedTimeout: time.Minute, RestartPoll: 200 * time.Millisecond}
	if v := os.Getenv(concurrencyEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: %v\n", concurrencyEnv, v, err)
			return 2
		}
		c.Concurrency = n
	}
	if err := c.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// BenchmarkRestores runs N restores at once, one per cluster, each cluster
// a one-replica StatefulSet of kwok pods whose health is one real OpenBao
// node. Restores with an even index succeed, those with an odd index fail
// with exit code 4 before any submission. N=1 runs singleRounds restores
// one after the other (each alone on the control plane), alternately
// successful and failing, so that its percentiles have a few samples.
func BenchmarkRestores(b *testing.B) {
	env := testbed.Shared(b)
	kc := prepare(b, env)
	bao := baotest.Start(b, 1)
	for _, n := range []int{1, 50, 200} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var all result
			b.ResetTimer()
			for range b.N {
				all.add(runRestores(b, env, kc, bao.Nodes[0].Addr, fmt.Sprintf("bench-n%d-", n), waves(n)))
			}
			all.report(b, n)
		})
	}
}

// BenchmarkLockHandover queues handoverQueue restores' LockRequests on one
// cluster and deletes each holder as soon as it is Held, as the function
// does when a restore ends: from the holder's deletion mark to the next
// request Held.
func BenchmarkLockHandover(b *testing.B) {
	env := testbed.Shared(b)
	kc := prepare(b, env)
	var ho []time.Duration
	var cpu, rss float64
	writes := 0
	var l load
	b.ResetTimer()
	for range b.N {
		d, w, st := runHandover(b, env, kc, handoverQueue)
		ho = append(ho, d...)
		writes += w
		cpu += st.cpu
		rss = max(rss, st.rssMiB)
		l.add(st.load)
	}
	b.ReportMetric(ms(pct(ho, 0.50)), "p50-handover-ms")
	b.ReportMetric(ms(pct(ho, 0.99)), "p99-handover-ms")
	b.ReportMetric(cpu/float64(b.N), "cpu-s")
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(float64(writes)/float64(b.N), "status-writes")
	b.ReportMetric(l.total()/float64(b.N), "api-calls")
	b.Logf("lock hand-over: %s", l)
	inOrder := slices.Clone(ho)
	for i := range inOrder {
		inOrder[i] = round(inOrder[i])
	}
	b.Logf("hand-overs in turn order (run after run): %v", inOrder)
	b.Logf("lock hand-over, %d queued on one cluster: %d hand-overs p50 %s p99 %s max %s; %d LockRequest status changes/run; "+
		"reconciler cpu %.2fs/run, peak RSS %.0f MiB",
		handoverQueue, len(ho), round(pct(ho, 0.50)), round(pct(ho, 0.99)), round(pct(ho, 1)), writes/b.N, cpu/float64(b.N), rss)
}

// handoverQueue is how many LockRequests queue on the one cluster.
const handoverQueue = 20

// singleRounds is how many restores N=1 runs, one at a time.
const singleRounds = 10

// TestSmoke runs one successful and one failing restore at once, as the
// benchmarks do, so that `go test` (make test) keeps the benchmark code
// working. It asserts only that both finish.
func TestSmoke(t *testing.T) {
	env := testbed.Shared(t)
	kc := prepare(t, env)
	bao := baotest.Start(t, 1)
	r := runRestores(t, env, kc, bao.Nodes[0].Addr, "bench-smoke-", waves(2))
	if len(r.toRestart) != 1 || len(r.failedToPhase) != 1 || len(r.failedToUnlock) != 1 {
		t.Fatalf("samples %+v", r)
	}
	t.Logf("Job Complete -> first restart %s; Job Failed -> Failed %s, -> lock released %s; reconciler cpu %.2fs, peak RSS %.0f MiB",
		round(r.toRestart[0]), round(r.failedToPhase[0]), round(r.failedToUnlock[0]), r.cpu, r.rssMiB)
}

// waves are the outcomes (true: fails) of the restores run at once, wave
// after wave.
func waves(n int) [][]bool {
	if n == 1 {
		var ws [][]bool
		for i := range singleRounds {
			ws = append(ws, []bool{i%2 == 1})
		}
		return ws
	}
	w := make([]bool, n)
	for i := range w {
		w[i] = i%2 == 1
	}
	return [][]bool{w}
}

var setup struct {
	once       sync.Once
	kubeconfig string
	err        error
}

// prepare installs the XR CRDs and a user holding exactly the union of the
// lock's and the phase's generated roles (what deploy/install.yaml
// grants), once per control plane, and returns that user's kubeconfig.
func prepare(tb testing.TB, env *testbed.Env) string {
	tb.Helper()
	setup.once.Do(func() {
		setup.err = errors.New("setup failed earlier")
		// Every kind the binary reconciles: restores, and drills with the
		// restore claims of their runs (BenchmarkIdleDrills).
		env.InstallCRDObjects(tb,
			testbed.XRCRD(tb, "package/configuration/xrd.yaml", apiextensionsv1.ClusterScoped),
			testbed.XRCRD(tb, "examples/xrd-namespaced.yaml", apiextensionsv1.NamespaceScoped),
			testbed.ClaimCRD(tb, "package/configuration/xrd.yaml"),
			testbed.XRCRD(tb, "package/configuration/xrd-drill.yaml", apiextensionsv1.ClusterScoped))
		ctx := context.Background()
		const user = "openbao-restore-bench"
		for _, role := range []string{"lock", "phase", "drill"} {
			y, err := os.ReadFile(filepath.Join(testbin.Root(), "reconciler", role, "rbac", "role.yaml"))
			if err != nil {
				setup.err = err
				return
			}
			if err := env.ApplyYAML(ctx, y); err != nil {
				setup.err = err
				return
			}
			if err := env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: user + "-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "openbao-restore-" + role},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
			}); err != nil {
				setup.err = err
				return
			}
		}
		setup.kubeconfig, setup.err = env.UserKubeconfig(user)
	})
	if setup.err != nil {
		tb.Fatal(setup.err)
	}
	return setup.kubeconfig
}

// result is what one or more runs measured.
type result struct {
	toRestart      []time.Duration // Job Complete -> first pod's graceful deletion mark
	okToCompleted  []time.Duration // Job Complete -> phase Completed (after the whole restart)
	failedToPhase  []time.Duration // Job Failed -> phase Failed
	failedToUnlock []time.Duration // Job Failed -> the cluster's lock free
	cpu            float64         // reconciler CPU seconds from ready to the end of the run
	startCPU       float64         // reconciler CPU seconds until ready
	rssMiB         float64         // reconciler peak RSS (VmHWM)
	load           load            // the reconciler's API requests and work queues, from ready to the end
	wall           time.Duration   // first restore created -> every lock released
	restores       int
	watchRestarts  int // the benchmark's own watches the API server closed (their events' times are late)
	runs           int
}

func (r *result) add(o result) {
	r.toRestart = append(r.toRestart, o.toRestart...)
	r.okToCompleted = append(r.okToCompleted, o.okToCompleted...)
	r.failedToPhase = append(r.failedToPhase, o.failedToPhase...)
	r.failedToUnlock = append(r.failedToUnlock, o.failedToUnlock...)
	r.cpu += o.cpu
	r.startCPU += o.startCPU
	r.rssMiB = max(r.rssMiB, o.rssMiB)
	r.load.add(o.load)
	r.wall += o.wall
	r.restores += o.restores
	r.watchRestarts += o.watchRestarts
	r.runs++
}

func (r *result) report(b *testing.B, n int) {
	runs := float64(max(r.runs, 1))
	b.ReportMetric(ms(pct(r.toRestart, 0.50)), "p50-complete-to-restart-ms")
	b.ReportMetric(ms(pct(r.toRestart, 0.99)), "p99-complete-to-restart-ms")
	b.ReportMetric(ms(pct(r.failedToPhase, 0.50)), "p50-failed-to-phase-ms")
	b.ReportMetric(ms(pct(r.failedToPhase, 0.99)), "p99-failed-to-phase-ms")
	b.ReportMetric(ms(pct(r.failedToUnlock, 0.50)), "p50-failed-to-unlock-ms")
	b.ReportMetric(ms(pct(r.failedToUnlock, 0.99)), "p99-failed-to-unlock-ms")
	b.ReportMetric(r.cpu/runs, "cpu-s")
	b.ReportMetric(r.cpu*1000/float64(max(r.restores, 1)), "cpu-ms/restore")
	b.ReportMetric(r.rssMiB, "rss-MiB")
	b.ReportMetric(r.load.total()/float64(max(r.restores, 1)), "api-calls/restore")
	b.Logf("N=%d: %s", n, r.load)
	if r.watchRestarts > 0 {
		b.Logf("N=%d: the API server closed the benchmark's watches %d times (slow reader); events missed meanwhile were timed when the watch resumed", n, r.watchRestarts)
	}
	if neg := negatives(r.toRestart, r.okToCompleted, r.failedToPhase, r.failedToUnlock); neg > 0 {
		b.Logf("%d negative intervals: a watch delivered an effect before its cause", neg)
	}
	b.Logf("N=%d (%d runs, %d restores): Job Complete -> first restart p50 %s p99 %s (n=%d; -> Completed p50 %s p99 %s); "+
		"Job Failed -> Failed p50 %s p99 %s, -> lock released p50 %s p99 %s (n=%d); "+
		"all done in %s/run; reconciler cpu %.2fs/run (+%.2fs to start), peak RSS %.0f MiB",
		n, r.runs, r.restores, round(pct(r.toRestart, 0.50)), round(pct(r.toRestart, 0.99)), len(r.toRestart),
		round(pct(r.okToCompleted, 0.50)), round(pct(r.okToCompleted, 0.99)),
		round(pct(r.failedToPhase, 0.50)), round(pct(r.failedToPhase, 0.99)),
		round(pct(r.failedToUnlock, 0.50)), round(pct(r.failedToUnlock, 0.99)), len(r.failedToPhase),
		round(r.wall/time.Duration(max(r.runs, 1))), r.cpu/runs, r.startCPU/runs, r.rssMiB)
}

// restore is one restore of a run: its XR, LockRequest and Job, on a
// cluster of its own.
type restore struct {
	cluster, claim, xr, lock, job string
	fail                          bool
	obj                           *unstructured.Unstructured // the XR as created (UID)
}

// recorder keeps the watch events' timestamps of a run and emulates the
// function: the Job once the LockRequest is Held, the LockRequest deleted
// once the XR's phase is terminal.
type recorder struct {
	tb  testing.TB
	env *testbed.Env
	ns  string

	mu       sync.Mutex
	byLock   map[string]*restore
	byXR     map[string]*restore
	jobDone  map[string]time.Time            // Job name -> Complete or Failed seen
	restart  map[string]time.Time            // cluster -> its pod's first graceful deletion mark
	phases   map[string]map[string]time.Time // XR -> phase -> first seen
	held     map[string]bool                 // cluster -> lock seen taken
	freed    map[string]time.Time            // cluster -> lock seen free after it was taken
	final    map[string]string               // XR -> its terminal phase and message
	jobMade  map[string]bool
	lockGone map[string]bool
	// marks are the benchmark's own steps (as the function), for the
	// timeline: "held" (LockRequest seen Held), "job" (Job created),
	// "deleted" (LockRequest deletion returned), by LockRequest name.
	marks map[string]map[string]time.Time
	errs  []error
	// watchRestarts counts watches the API server closed mid-run.
	watchRestarts int
	acts          sync.WaitGroup
	sem           chan struct{}
}

func newRecorder(tb testing.TB, env *testbed.Env, ns string) *recorder {
	return &recorder{tb: tb, env: env, ns: ns, byLock: map[string]*restore{}, byXR: map[string]*restore{},
		jobDone: map[string]time.Time{}, restart: map[string]time.Time{}, phases: map[string]map[string]time.Time{},
		held: map[string]bool{}, freed: map[string]time.Time{}, final: map[string]string{}, jobMade: map[string]bool{}, lockGone: map[string]bool{},
		marks: map[string]map[string]time.Time{}, sem: make(chan struct{}, workers)}
}

// act runs f in the background, at most workers at a time.
func (r *recorder) act(f func(context.Context) error) {
	r.acts.Add(1)
	go func() {
		defer r.acts.Done()
		r.sem <- struct{}{}
		defer func() { <-r.sem }()
		if err := f(context.Background()); err != nil {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
		}
	}()
}

// watchAll starts the run's watches; stop ends them.
//
// Each watch is read by its own goroutine, which stamps every event with
// the time it arrived and queues it for the handlers: under load the API
// server closes a watch whose reader falls behind ("unresponsive"), so
// reading must never wait on handling. A watch that the server closes is
// started again from the last resourceVersion seen (or afresh, replaying
// every object, if that is too old); the times of events missed meanwhile
// are then late. watchRestarts counts such restarts.
func (r *recorder) watchAll() (stop func()) {
	r.tb.Helper()
	wc, err := client.NewWithWatch(r.env.Config, client.Options{Scheme: r.env.Scheme})
	if err != nil {
		r.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	xrs := &unstructured.UnstructuredList{}
	xrs.SetGroupVersionKind(schemas.LegacyXR.GroupVersion().WithKind(schemas.LegacyXR.Kind + "List"))
	clusters := &unstructured.UnstructuredList{}
	clusters.SetGroupVersionKind(schemas.ClusterGVK.GroupVersion().WithKind(schemas.ClusterGVK.Kind + "List"))
	var done sync.WaitGroup
	for _, x := range []feed{
		{&lockv1alpha1.LockRequestList{}, []client.ListOption{client.InNamespace(r.ns)}, r.onLock},
		{xrs, []client.ListOption{client.MatchingLabels{runLabel: r.ns}}, r.onXR},
		{&batchv1.JobList{}, []client.ListOption{client.InNamespace(r.ns)}, r.onJob},
		{&corev1.PodList{}, []client.ListOption{client.InNamespace(r.ns), client.MatchingLabels{"app.kubernetes.io/name": "openbao"}}, r.onPod},
		{clusters, []client.ListOption{client.InNamespace(r.ns)}, r.onCluster},
	} {
		q := newEventQueue()
		done.Go(func() { r.read(ctx, wc, x, q) })
		done.Go(func() {
			for {
				ev, ok := q.pop()
				if !ok {
					return
				}
				if ev.Type != watch.Deleted {
					x.on(ev.Event, ev.at)
				}
			}
		})
	}
	return func() {
		cancel()
		done.Wait()
	}
}

// feed is one watched kind and its handler.
type feed struct {
	list client.ObjectList
	opts []client.ListOption
	on   func(watch.Event, time.Time)
}

// read follows one watch until ctx ends, restarting it when the server
// closes it, and queues its events; it closes q when it returns.
func (r *recorder) read(ctx context.Context, wc client.WithWatch, x feed, q *eventQueue) {
	defer q.close()
	rv := ""
	for ctx.Err() == nil {
		opts := append(slices.Clone(x.opts), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
		wi, err := wc.Watch(ctx, x.list.DeepCopyObject().(client.ObjectList), opts...)
		if err != nil {
			if ctx.Err() == nil {
				r.fail(fmt.Errorf("watch %T: %w", x.list, err))
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				// Mostly 410 Gone: the resourceVersion is too old.
				rv = ""
				continue
			}
			if o, ok := ev.Object.(client.Object); ok {
				rv = o.GetResourceVersion()
			}
			q.push(stamped{Event: ev, at: time.Now()})
		}
		wi.Stop()
		if ctx.Err() == nil {
			r.mu.Lock()
			r.watchRestarts++
			r.mu.Unlock()
		}
	}
}

// mark records the first time of the benchmark's step what for lock.
func (r *recorder) mark(lock, what string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.marks[lock] == nil {
		r.marks[lock] = map[string]time.Time{}
	}
	if _, seen := r.marks[lock][what]; !seen {
		r.marks[lock][what] = at
	}
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// stamped is a watch event and when it arrived.
type stamped struct {
	watch.Event
	at time.Time
}

// eventQueue is an unbounded FIFO, so that a watch's reader never waits.
type eventQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []stamped
	closed bool
}

func newEventQueue() *eventQueue {
	q := &eventQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *eventQueue) push(e stamped) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// pop waits for the next event; false once the queue is closed and empty.
func (q *eventQueue) pop() (stamped, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return stamped{}, false
	}
	e := q.items[0]
	q.items = q.items[1:]
	return e, true
}

func (r *recorder) onLock(ev watch.Event, now time.Time) {
	lr, ok := ev.Object.(*lockv1alpha1.LockRequest)
	if !ok || lr.Status.State != schemas.LockHeld || lr.Status.HeldBy != lr.Spec.Holder || !lr.DeletionTimestamp.IsZero() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := r.byLock[lr.Name]
	if rs == nil || r.jobMade[rs.job] {
		return
	}
	r.jobMade[rs.job] = true
	if r.marks[lr.Name] == nil {
		r.marks[lr.Name] = map[string]time.Time{}
	}
	r.marks[lr.Name]["held"] = now
	j := newJob(r.ns, rs) // rs.obj is set under r.mu before the LockRequest is created
	r.act(func(ctx context.Context) error {
		if err := r.env.Client.Create(ctx, j); err != nil {
			return err
		}
		r.mark(lr.Name, "job", time.Now())
		return nil
	})
}

func (r *recorder) onXR(ev watch.Event, now time.Time) {
	u, ok := ev.Object.(*unstructured.Unstructured)
	if !ok {
		return
	}
	st, err := phase.ReadStatus(u)
	p := st.Phase
	if err != nil || p == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phases[u.GetName()] == nil {
		r.phases[u.GetName()] = map[string]time.Time{}
	}
	if _, seen := r.phases[u.GetName()][p]; !seen {
		r.phases[u.GetName()][p] = now
	}
	rs := r.byXR[u.GetName()]
	if rs == nil || !schemas.Terminal(p) || r.lockGone[rs.lock] {
		return
	}
	r.final[rs.xr] = p + ": " + st.Message
	r.lockGone[rs.lock] = true
	r.act(func(ctx context.Context) error {
		lr := &lockv1alpha1.LockRequest{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: rs.lock}}
		if err := r.env.Client.Delete(ctx, lr); err != nil {
			return client.IgnoreNotFound(err)
		}
		r.mark(rs.lock, "deleted", time.Now())
		return nil
	})
}

func (r *recorder) onJob(ev watch.Event, now time.Time) {
	j, ok := ev.Object.(*batchv1.Job)
	if !ok {
		return
	}
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			r.mu.Lock()
			if _, seen := r.jobDone[j.Name]; !seen {
				r.jobDone[j.Name] = now
			}
			r.mu.Unlock()
			return
		}
	}
}

// onPod records the first graceful deletion mark of each cluster's pod:
// the reconciler deletes with the pod's grace period, kwok then removes it
// (and now and then a replacement) with grace 0, which does not count.
func (r *recorder) onPod(ev watch.Event, now time.Time) {
	p, ok := ev.Object.(*corev1.Pod)
	if !ok || p.DeletionTimestamp == nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds == 0 {
		return
	}
	c := p.Labels["app.kubernetes.io/instance"]
	r.mu.Lock()
	if _, seen := r.restart[c]; !seen {
		r.restart[c] = now
	}
	r.mu.Unlock()
}

func (r *recorder) onCluster(ev watch.Event, now time.Time) {
	u, ok := ev.Object.(*unstructured.Unstructured)
	if !ok {
		return
	}
	free := lock.ReadLock(u).Free()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !free:
		r.held[u.GetName()] = true
	case r.held[u.GetName()]:
		if _, seen := r.freed[u.GetName()]; !seen {
			r.freed[u.GetName()] = now
		}
	}
}

// done reports whether the restore's phase is terminal and its cluster's
// lock was released.
func (r *recorder) done(rs *restore) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, freed := r.freed[rs.cluster]
	ok := r.phases[rs.xr][schemas.PhaseCompleted]
	if rs.fail {
		ok = r.phases[rs.xr][schemas.PhaseFailed]
	}
	return freed && !ok.IsZero()
}

// runRestores runs the waves of restores on a fresh namespace with one
// cluster per restore and a reconciler child of its own, and returns the
// measures. The benchmark timer runs only while the restores run.
func runRestores(tb testing.TB, env *testbed.Env, kubeconfig, healthURL, prefix string, waves [][]bool) result {
	tb.Helper()
	timer(tb, false)
	ctx := context.Background()
	total := 0
	for _, w := range waves {
		total += len(w)
	}
	ns := createNamespace(tb, env, prefix)
	defer cleanup(tb, env, ns)

	began := time.Now()
	clusters := make([]string, total)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("c%03d", i)
	}
	if err := parallel(total, func(i int) error { return createCluster(ctx, env, ns, clusters[i]) }); err != nil {
		tb.Fatal(err)
	}
	waitPodsReady(tb, env, ns, total, 2*time.Minute+time.Duration(total)*time.Second)
	for _, fail := range []bool{false, true} {
		applyStage(tb, env, ns, fail)
	}
	tb.Logf("%s: %d clusters with Ready pods in %s", ns, total, round(time.Since(began)))

	rec := newRecorder(tb, env, ns)
	stop := rec.watchAll()
	defer stop()
	ch := startChild(tb, kubeconfig, ns, healthURL)
	var res result
	var err error
	if res.startCPU, _, err = procStats(ch.PID()); err != nil {
		tb.Fatal(err)
	}
	ready := ch.counters(tb)
	server := serverRequests(tb, env)

	spec := exampleSpec(tb)
	var all []*restore
	timer(tb, true)
	start := time.Now()
	next := 0
	for wi, w := range waves {
		rs := make([]*restore, len(w))
		for i, fail := range w {
			claim := fmt.Sprintf("r%03d", next)
			xr := ns + "-" + claim
			rs[i] = &restore{cluster: clusters[next], claim: claim, xr: xr, lock: xr + "-lock", job: xr + "-restore", fail: fail}
			next++
		}
		rec.mu.Lock()
		for _, r := range rs {
			rec.byLock[r.lock], rec.byXR[r.xr] = r, r
		}
		rec.mu.Unlock()
		if err := parallel(len(rs), func(i int) error { return createRestore(ctx, env, rec, spec, rs[i]) }); err != nil {
			tb.Fatal(err)
		}
		waitDone(tb, env, rec, rs, 5*time.Minute+time.Duration(len(rs))*3*time.Second, wi)
		all = append(all, rs...)
	}
	res.wall = time.Since(start)
	rec.mu.Lock()
	res.watchRestarts = rec.watchRestarts
	rec.mu.Unlock()
	timer(tb, false)

	cpu, rss, err := procStats(ch.PID())
	if err != nil {
		tb.Fatal(err)
	}
	res.cpu, res.rssMiB = cpu-res.startCPU, rss
	res.load = loadBetween(ready, ch.counters(tb))
	logServerRequests(tb, server, serverRequests(tb, env))
	// Every LockRequest gone (the reconciler dropped its finalizer) before
	// the reconciler stops, so that the namespace can go.
	testbed.Eventually(tb, 2*time.Minute, "every LockRequest gone", func() (bool, error) {
		var l lockv1alpha1.LockRequestList
		err := env.Client.List(ctx, &l, client.InNamespace(ns))
		return err == nil && len(l.Items) == 0, err
	})
	ch.Kill()
	rec.acts.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errs) > 0 {
		tb.Fatalf("%d errors, first: %v", len(rec.errs), rec.errs[0])
	}
	if path := os.Getenv("OPENBAO_RESTORE_BENCH_TIMELINE"); path != "" {
		writeTimeline(tb, path, rec, all)
	}
	for _, r := range all {
		done, ok := rec.jobDone[r.job]
		if !ok {
			tb.Fatalf("%s: the Job's end was never seen", r.job)
		}
		// The restore ended as its Job said, not for another reason.
		if f := rec.final[r.xr]; r.fail && !strings.HasPrefix(f, schemas.PhaseFailed+": ") || r.fail && !strings.Contains(f, "exit code 4") ||
			!r.fail && !strings.HasPrefix(f, schemas.PhaseCompleted+": ") {
			tb.Fatalf("%s (fail %v) ended %q", r.xr, r.fail, f)
		}
		res.restores++
		if r.fail {
			res.failedToPhase = append(res.failedToPhase, rec.phases[r.xr][schemas.PhaseFailed].Sub(done))
			res.failedToUnlock = append(res.failedToUnlock, rec.freed[r.cluster].Sub(done))
			continue
		}
		at, ok := rec.restart[r.cluster]
		if !ok {
			tb.Fatalf("%s: Completed, but no graceful deletion of a pod of %s was seen", r.xr, r.cluster)
		}
		res.toRestart = append(res.toRestart, at.Sub(done))
		res.okToCompleted = append(res.okToCompleted, rec.phases[r.xr][schemas.PhaseCompleted].Sub(done))
	}
	return res
}

// writeTimeline writes each restore's steps as seen by the benchmark, in
// milliseconds since the first of them, one restore a line (tab-separated,
// with a header), to study where the time of a run goes.
func writeTimeline(tb testing.TB, path string, rec *recorder, all []*restore) {
	cols := []string{"held", "job", "jobDone", "Running", "restart", "Failed", "Completed", "deleted", "freed"}
	at := func(r *restore, c string) time.Time {
		switch c {
		case "jobDone":
			return rec.jobDone[r.job]
		case "restart":
			return rec.restart[r.cluster]
		case "freed":
			return rec.freed[r.cluster]
		case "Running", "Failed", "Completed":
			return rec.phases[r.xr][c]
		}
		return rec.marks[r.lock][c]
	}
	var t0 time.Time
	for _, r := range all {
		for _, c := range cols {
			if t := at(r, c); !t.IsZero() && (t0.IsZero() || t.Before(t0)) {
				t0 = t
			}
		}
	}
	var b strings.Builder
	// The first column's name carries the origin (Unix milliseconds), to
	// line the timeline up with logs.
	fmt.Fprintf(&b, "restore@%d\tfail\t%s\n", t0.UnixMilli(), strings.Join(cols, "\t"))
	for _, r := range all {
		fmt.Fprintf(&b, "%s\t%v", r.xr, r.fail)
		for _, c := range cols {
			if t := at(r, c); t.IsZero() {
				b.WriteString("\t")
			} else {
				fmt.Fprintf(&b, "\t%d", t.Sub(t0).Milliseconds())
			}
		}
		b.WriteString("\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.Error(err)
	}
}

// waitDone waits until every restore of the wave is terminal and its lock
// released, and on timeout says where each straggler is.
func waitDone(tb testing.TB, env *testbed.Env, rec *recorder, rs []*restore, timeout time.Duration, wave int) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, r := range rs {
			if !rec.done(r) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			n := 0
			for _, r := range rs {
				if rec.done(r) || n >= 10 {
					continue
				}
				n++
				xr := &unstructured.Unstructured{}
				xr.SetGroupVersionKind(schemas.LegacyXR)
				if err := env.Client.Get(context.Background(), client.ObjectKey{Name: r.xr}, xr); err != nil {
					tb.Logf("%s: %v", r.xr, err)
					continue
				}
				st, err := phase.ReadStatus(xr)
				tb.Logf("%s (fail %v): phase %s: %s (%v)", r.xr, r.fail, st.Phase, st.Message, err)
			}
			tb.Fatalf("wave %d: %d of %d restores not done after %s", wave, left, len(rs), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runHandover queues n LockRequests on one cluster, deletes each holder as
// soon as a watch sees it Held, and returns each hand-over (the holder's
// deletion mark seen -> the next request Held seen).
func runHandover(tb testing.TB, env *testbed.Env, kubeconfig string, n int) ([]time.Duration, int, result) {
	tb.Helper()
	timer(tb, false)
	ctx := context.Background()
	ns := createNamespace(tb, env, "bench-handover-")
	defer cleanup(tb, env, ns)
	if _, err := env.CreateClusterObject(ctx, ns, "c", 1); err != nil {
		tb.Fatal(err)
	}
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		tb.Fatal(err)
	}
	w, err := wc.Watch(ctx, &lockv1alpha1.LockRequestList{}, client.InNamespace(ns))
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	heldAt, deletedAt := map[string]time.Time{}, map[string]time.Time{}
	// Status changes of the requests, as the watch saw them: each one a
	// write by the lock reconciler.
	last := map[string]lockv1alpha1.LockRequestStatus{}
	statusWrites := 0
	var errs []error
	var acts, watching sync.WaitGroup
	watching.Go(func() {
		for ev := range w.ResultChan() {
			lr, ok := ev.Object.(*lockv1alpha1.LockRequest)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			now := time.Now()
			mu.Lock()
			if p := last[lr.Name]; p.State != lr.Status.State || p.HeldBy != lr.Status.HeldBy || p.Message != lr.Status.Message {
				statusWrites++
				last[lr.Name] = lr.Status
			}
			if !lr.DeletionTimestamp.IsZero() {
				if _, seen := deletedAt[lr.Name]; !seen {
					deletedAt[lr.Name] = now
				}
			} else if _, seen := heldAt[lr.Name]; !seen && lr.Status.State == schemas.LockHeld && lr.Status.HeldBy == lr.Spec.Holder {
				heldAt[lr.Name] = now
				acts.Go(func() {
					if err := client.IgnoreNotFound(env.Client.Delete(ctx, lr.DeepCopy())); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				})
			}
			mu.Unlock()
		}
	})
	defer func() { w.Stop(); watching.Wait() }()

	ch := startChild(tb, kubeconfig, ns, noHealth)
	var res result
	if res.startCPU, _, err = procStats(ch.PID()); err != nil {
		tb.Fatal(err)
	}
	ready := ch.counters(tb)
	timer(tb, true)
	if err := parallel(n, func(i int) error { return env.Client.Create(ctx, handoverRequest(ns, fmt.Sprintf("q%02d", i))) }); err != nil {
		tb.Fatal(err)
	}
	testbed.Eventually(tb, time.Duration(n)*30*time.Second, fmt.Sprintf("%d requests held in turn and gone", n), func() (bool, error) {
		var l lockv1alpha1.LockRequestList
		if err := env.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return false, err
		}
		mu.Lock()
		defer mu.Unlock()
		return len(l.Items) == 0 && len(heldAt) == n, fmt.Errorf("%d left, %d held so far", len(l.Items), len(heldAt))
	})
	timer(tb, false)
	cpu, rss, err := procStats(ch.PID())
	if err != nil {
		tb.Fatal(err)
	}
	res.cpu, res.rssMiB = cpu-res.startCPU, rss
	res.load = loadBetween(ready, ch.counters(tb))
	ch.Kill()
	acts.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		tb.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	type turn struct {
		name string
		at   time.Time
	}
	var turns []turn
	for name, at := range heldAt {
		turns = append(turns, turn{name, at})
	}
	slices.SortFunc(turns, func(a, b turn) int { return a.at.Compare(b.at) })
	var ho []time.Duration
	for k := 1; k < len(turns); k++ {
		del, ok := deletedAt[turns[k-1].name]
		if !ok {
			tb.Fatalf("%s: its deletion mark was never seen", turns[k-1].name)
		}
		ho = append(ho, turns[k].at.Sub(del))
	}
	return ho, statusWrites, res
}

func handoverRequest(ns, name string) *lockv1alpha1.LockRequest {
	uid := "uid-" + name
	return &lockv1alpha1.LockRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lockv1alpha1.LockRequestSpec{
			Cluster: "c", Operation: schemas.OperationRestore, Holder: schemas.Holder(name, uid),
			Restore: lockv1alpha1.RestoreRef{APIVersion: schemas.Group + "/" + schemas.Version, Kind: schemas.ClaimKind,
				Name: name, Namespace: ns, UID: uid},
		},
	}
}

// timer stops or starts the benchmark timer (tests have none).
func timer(tb testing.TB, on bool) {
	b, ok := tb.(*testing.B)
	if !ok {
		return
	}
	if on {
		b.StartTimer()
	} else {
		b.StopTimer()
	}
}

// startChild starts the reconciler as a child process (the test binary
// again, see runChild), as the union user, following ns, and waits until
// its caches have synced (/readyz).
func startChild(tb testing.TB, kubeconfig, ns, healthURL string) *child {
	tb.Helper()
	port := testbin.FreePorts(tb, 1)
	probe, metrics := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port+1)
	ch := &child{Child: testbed.StartChild(tb, []string{childEnv + "=" + ns + " " + healthURL + " " + probe + " " + metrics, "KUBECONFIG=" + kubeconfig}),
		metrics: "http://" + metrics + "/metrics"}
	hc := &http.Client{Timeout: time.Second}
	testbed.Eventually(tb, 2*time.Minute, "the reconciler ready", func() (bool, error) {
		resp, err := hc.Get("http://" + probe + "/readyz")
		if err != nil {
			return false, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("readyz %s", resp.Status)
	})
	return ch
}

// load is what the reconciler asked of the API server and how long work
// waited in its queues, between two reads of its counters.
type load struct {
	calls      map[string]float64 // API requests by HTTP method
	conflicts  float64            // of which answered 409 Conflict
	reconciles map[string]float64 // by controller
	waitSum    map[string]float64 // seconds items waited in each controller's queue
	busySum    map[string]float64 // seconds each controller's workers spent reconciling
}

var (
	methods     = []string{"GET", "POST", "PATCH", "PUT", "DELETE"}
	controllers = []string{"lockrequest", "phase-xopenbaorestore", "phase-openbaorestore-ns", drillCtrl}
)

func loadBetween(before, after map[string]float64) load {
	l := load{calls: map[string]float64{}, reconciles: map[string]float64{}, waitSum: map[string]float64{}, busySum: map[string]float64{}}
	for _, m := range methods {
		l.calls[m] = calls(before, after, "rest_client_requests_total{", `method="`+m+`"`)
	}
	l.conflicts = calls(before, after, "rest_client_requests_total{", `code="409"`)
	for _, c := range controllers {
		l.reconciles[c] = calls(before, after, "controller_runtime_reconcile_total{", `controller="`+c+`"`)
		l.waitSum[c] = calls(before, after, "workqueue_queue_duration_seconds_sum{", `controller="`+c+`"`)
		l.busySum[c] = calls(before, after, "controller_runtime_reconcile_time_seconds_sum{", `controller="`+c+`"`)
	}
	return l
}

func (l *load) add(o load) {
	for _, m := range []*map[string]float64{&l.calls, &l.reconciles, &l.waitSum, &l.busySum} {
		if *m == nil {
			*m = map[string]float64{}
		}
	}
	for k, v := range o.calls {
		l.calls[k] += v
	}
	l.conflicts += o.conflicts
	for k, v := range o.reconciles {
		l.reconciles[k] += v
	}
	for k, v := range o.waitSum {
		l.waitSum[k] += v
	}
	for k, v := range o.busySum {
		l.busySum[k] += v
	}
}

func (l load) total() float64 {
	var n float64
	for _, v := range l.calls {
		n += v
	}
	return n
}

func (l load) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "API requests %.0f (", l.total())
	for i, m := range methods {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.0f", m, l.calls[m])
	}
	fmt.Fprintf(&b, "; %.0f conflicts)", l.conflicts)
	for _, c := range controllers {
		if n := l.reconciles[c]; n > 0 {
			mean := func(sum float64) time.Duration { return round(time.Duration(sum / n * float64(time.Second))) }
			fmt.Fprintf(&b, "; %s: %.0f reconciles, mean queue wait %s, mean reconcile %s", c, n, mean(l.waitSum[c]), mean(l.busySum[c]))
		}
	}
	return b.String()
}

// serverRequests reads the API server's request counters
// (apiserver_request_total), every client's, by resource, verb and code.
func serverRequests(tb testing.TB, env *testbed.Env) map[string]float64 {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	label := func(line, name string) string {
		_, v, ok := strings.Cut(line, name+`="`)
		if !ok {
			return ""
		}
		v, _, _ = strings.Cut(v, `"`)
		return v
	}
	for line, v := range testbed.Samples(tb, raw, "apiserver_request_total") {
		res := label(line, "resource")
		if sub := label(line, "subresource"); sub != "" {
			res += "/" + sub
		}
		out[label(line, "verb")+" "+res+" "+label(line, "code")] += v
	}
	return out
}

// logServerRequests logs the busiest kinds of requests the API server
// answered between two reads, whoever sent them.
func logServerRequests(tb testing.TB, before, after map[string]float64) {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	var total float64
	for k, v := range after {
		if d := v - before[k]; d > 0 && !strings.HasPrefix(k, "WATCH") {
			all = append(all, kv{k, d})
			total += d
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return int(b.v - a.v) })
	var b strings.Builder
	for i, e := range all {
		if i == 16 {
			break
		}
		fmt.Fprintf(&b, "; %s %.0f", e.k, e.v)
	}
	tb.Logf("API server, every client: %.0f requests%s", total, b.String())
}

// child is the reconciler's process and its metrics endpoint.
type child struct {
	*testbed.Child
	metrics string
}

// counters reads the child's Prometheus counters this benchmark reports:
// API requests by method, reconciles and work-queue wait per controller.
// Each key is a series as the endpoint names it, labels included.
func (c *child) counters(tb testing.TB) map[string]float64 {
	tb.Helper()
	return testbed.Scrape(tb, c.metrics, series...)
}

// series are the counters counters reads.
var series = []string{"rest_client_requests_total", "controller_runtime_reconcile_total",
	"workqueue_queue_duration_seconds_sum", "controller_runtime_reconcile_time_seconds_sum"}

// calls sums the differences of the series that start with prefix and
// carry label (e.g. `method="GET"`), between two reads of counters.
func calls(before, after map[string]float64, prefix, label string) float64 {
	var n float64
	for k, v := range after {
		if strings.HasPrefix(k, prefix) && strings.Contains(k, label) {
			n += v - before[k]
		}
	}
	return n
}

// procStats reads a process's CPU time (user + system, every thread) and
// peak resident set size (VmHWM) from /proc.
func procStats(pid int) (cpuSeconds, rssMiB float64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The fields after the command name, which is in parentheses: state is
	// field 3, utime 14 and stime 15 (proc(5)), in clock ticks.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	cpuSeconds = (utime + stime) / 100
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, 0, err
			}
			return cpuSeconds, kb / 1024, nil
		}
	}
	return 0, 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

func createNamespace(tb testing.TB, env *testbed.Env, prefix string) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		tb.Fatal(err)
	}
	return ns.Name
}

// cleanup deletes the run's XRs (cluster-scoped), its Stages and its
// namespace, and in a benchmark waits until the namespace is gone, so that
// the next run starts on a quiet control plane.
func cleanup(tb testing.TB, env *testbed.Env, ns string) {
	tb.Helper()
	ctx := context.Background()
	for _, gvk := range []schema.GroupVersionKind{schemas.LegacyXR, schemas.LegacyDrillXR} {
		xr := &unstructured.Unstructured{}
		xr.SetGroupVersionKind(gvk)
		if err := env.Client.DeleteAllOf(ctx, xr, client.MatchingLabels{runLabel: ns}); err != nil {
			tb.Logf("delete the %ss of %s: %v", gvk.Kind, ns, err)
		}
	}
	for _, fail := range []bool{false, true} {
		st := &unstructured.Unstructured{}
		st.SetAPIVersion("kwok.x-k8s.io/v1alpha1")
		st.SetKind("Stage")
		st.SetName(stageName(ns, fail))
		_ = env.Client.Delete(ctx, st)
	}
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if err := env.Client.Delete(ctx, obj); err != nil {
		tb.Logf("delete namespace %s: %v", ns, err)
		return
	}
	if _, ok := tb.(*testing.B); !ok {
		return // a test: the control plane stops with it
	}
	began := time.Now()
	for time.Since(began) < 5*time.Minute {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); apierrors.IsNotFound(err) {
			tb.Logf("%s deleted in %s", ns, round(time.Since(began)))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	tb.Logf("namespace %s still there after 5m; going on", ns)
}

// parallel runs f(0..n-1), at most workers at a time, and returns the
// errors.
func parallel(n int, f func(i int) error) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// createCluster creates the cluster and the one-replica StatefulSet of
// kwok pods that stands in for its OpenBao pods (without waiting).
func createCluster(ctx context.Context, env *testbed.Env, ns, name string) error {
	if _, err := env.CreateClusterObject(ctx, ns, name, 1); err != nil {
		return err
	}
	_, err := env.CreateOpenBaoPods(ctx, ns, name, 1)
	return err
}

// waitPodsReady waits until the n StatefulSets of ns have their pod Ready.
func waitPodsReady(tb testing.TB, env *testbed.Env, ns string, n int, timeout time.Duration) {
	tb.Helper()
	testbed.Eventually(tb, timeout, fmt.Sprintf("%d StatefulSets with a Ready pod", n), func() (bool, error) {
		var l appsv1.StatefulSetList
		if err := env.Client.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return false, err
		}
		ready := 0
		for _, s := range l.Items {
			if s.Status.ReadyReplicas == 1 && s.Status.ObservedGeneration == s.Generation {
				ready++
			}
		}
		return ready == n, fmt.Errorf("%d of %d ready", ready, n)
	})
}

func stageName(ns string, fail bool) string {
	if fail {
		return "bench-" + ns + "-fail"
	}
	return "bench-" + ns + "-ok"
}

// applyStage makes the restore Jobs' pods of ns that carry the outcome
// label end as the executor would: exit 0 with a submission, or exit 4
// before any submission. One Stage per outcome, not per Job.
func applyStage(tb testing.TB, env *testbed.Env, ns string, fail bool) {
	tb.Helper()
	exit, msg := int32(0), okMessage
	if fail {
		exit, msg = 4, failMessage
	}
	env.PodStage(tb, stageName(ns, fail), ns, outcomeLabel, outcome(fail), exit, msg)
}

func outcome(fail bool) string {
	if fail {
		return "fail"
	}
	return "ok"
}

// exampleSpec is the spec of examples/xr.yaml.
func exampleSpec(tb testing.TB) map[string]any {
	tb.Helper()
	return testbed.ExampleSpec(tb, "xr.yaml")
}

// createRestore creates the restore's legacy XR, claimed from ns and naming
// its cluster, and its LockRequest as the function composes it, with an
// empty status: the reconciler's lock answers.
func createRestore(ctx context.Context, env *testbed.Env, rec *recorder, spec map[string]any, rs *restore) error {
	ns := rec.ns
	s := runtimeDeepCopy(spec)
	s["cluster"] = rs.cluster
	s["claimRef"] = map[string]any{"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.ClaimKind, "name": rs.claim, "namespace": ns}
	xr := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	xr.SetGroupVersionKind(schemas.LegacyXR)
	xr.SetName(rs.xr)
	xr.SetLabels(map[string]string{runLabel: ns})
	if err := env.Client.Create(ctx, xr); err != nil {
		return err
	}
	rec.mu.Lock()
	rs.obj = xr
	rec.mu.Unlock()
	lr := &lockv1alpha1.LockRequest{
		ObjectMeta: metav1.ObjectMeta{Name: rs.lock, Namespace: ns, Labels: restoreLabels(rs), OwnerReferences: owner(xr)},
		Spec: lockv1alpha1.LockRequestSpec{Cluster: rs.cluster, Operation: schemas.OperationRestore, Holder: schemas.Holder(rs.claim, string(xr.GetUID())),
			Restore: lockv1alpha1.RestoreRef{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(), Namespace: xr.GetNamespace(),
				UID: string(xr.GetUID()), ClaimName: rs.claim}},
	}
	return env.Client.Create(ctx, lr)
}

func runtimeDeepCopy(m map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: m}).DeepCopy().Object
}

func owner(xr *unstructured.Unstructured) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(), UID: xr.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
}

func restoreLabels(rs *restore) map[string]string {
	return map[string]string{schemas.LabelComposite: rs.xr, schemas.LabelRestore: rs.claim, clusterLabel: rs.cluster}
}

// newJob is the restore's Job as the function composes it (labels,
// controller reference), its pod labelled with the outcome the Stages
// give it.
func newJob(ns string, rs *restore) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: rs.job, Namespace: ns, Labels: restoreLabels(rs), OwnerReferences: owner(rs.obj)},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{schemas.LabelRestore: rs.claim, outcomeLabel: outcome(rs.fail)}},
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "restore", Image: "example.invalid/executor"}}},
			},
		},
	}
}

// pct is the q-quantile (nearest rank) of ds; 0 when empty.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func negatives(dss ...[]time.Duration) int {
	n := 0
	for _, ds := range dss {
		for _, d := range ds {
			if d < 0 {
				n++
			}
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
