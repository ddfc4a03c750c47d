package lock_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/executor"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// wire records, of one executor's calls to the API server, the
// resourceVersion of the last OpenBaoCluster it read and of each
// submission record it wrote: the points of its check and of its
// submission on etcd's one order.
type wire struct {
	base    http.RoundTripper
	mu      sync.Mutex
	checked int64   // the last cluster read
	records []int64 // successful record writes
	checks  []int64 // the cluster read before each successful record
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var obj struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(body, &obj) != nil {
		return resp, nil
	}
	rv, _ := strconv.ParseInt(obj.Metadata.ResourceVersion, 10, 64)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/"+schemas.ClusterResource+"/"):
		w.checked = rv
	case r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/status"):
		w.records = append(w.records, rv)
		w.checks = append(w.checks, w.checked)
	}
	return resp, nil
}

// submitted is one restore's submission, on etcd's order.
type submitted struct {
	request, cluster, holder string
	checks, records          []int64
	refusals                 int // runs that stopped, nothing sent, because the lock was not theirs
}

// runExecutor plays the restore Job for lr with the real executor's
// recorder (executor.KubeAPI): once the request is Held, Check, then
// the time the snapshot takes to download and stream (longer in a real
// Job, whose pod must start first), then Record right before the tail. A
// transient refusal (exit 10: the lock is not ours) is the Job's pod
// failing and being retried, as its podFailurePolicy retries exit 10.
func runExecutor(ctx context.Context, env *testbed.Env, lr *lockv1alpha1.LockRequest, cfg *rest.Config) (submitted, error) {
	s := submitted{request: lr.Name, cluster: lr.Spec.Cluster, holder: lr.Spec.Holder}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return s, err
	}
	w := &wire{base: hc.Transport}
	hc.Transport = w
	base := cfg.Host
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	rec := &executor.KubeAPI{Base: strings.TrimSuffix(base, "/"), Namespace: lr.Namespace, Name: lr.Name,
		RestoreUID: lr.Spec.Restore.UID, Client: hc, Token: func() (string, error) { return "", nil }}
	for {
		if err := waitHeld(ctx, env, lr); err != nil {
			return s, err
		}
		err := rec.Check(ctx)
		if err == nil {
			time.Sleep(200*time.Millisecond + time.Duration(rand.Int64N(int64(200*time.Millisecond))))
			err = rec.Record(ctx, executor.Submission{Pod: "bao-0", PodUID: "uid-bao-0", Target: "https://bao-0.bao:8200",
				Digest: "sha256:" + strings.Repeat("ab", 32), Size: 1, Endpoint: "snapshot", SubmittedAt: metav1.Now()})
		}
		if err == nil {
			break
		}
		if executor.ExitCode(err) != schemas.ExitTransient || errors.Is(err, executor.ErrAlreadySubmitted) {
			return s, fmt.Errorf("%s: %w", lr.Name, err)
		}
		s.refusals++
		time.Sleep(50 * time.Millisecond)
	}
	w.mu.Lock()
	s.checks, s.records = w.checks, w.records
	w.mu.Unlock()
	// The restore ends: the XR's end deletes its request, which releases
	// the lock.
	return s, env.Client.Delete(ctx, lr)
}

func waitHeld(ctx context.Context, env *testbed.Env, lr *lockv1alpha1.LockRequest) error {
	for {
		var got lockv1alpha1.LockRequest
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lr), &got); err != nil {
			return err
		}
		if got.Status.State == schemas.LockHeld {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never held the lock: %w", lr.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Fifty restores over five clusters, arriving at random over a few
// seconds, against openbao-operator's January 2026 backup manager, which
// takes the lock with a merge patch from its cache and releases it with a
// blind null, so that it replaces a Restore lock now and then. A watch
// records every version of each cluster's lock; each executor's cluster
// read and submission record are placed on the same etcd order. No
// snapshot is submitted while the lock names another holder: at the
// executor's last read of the lock and at its record the lock is its own,
// and nobody else held it in between. Every restore ends and no lock is
// left. The takeovers and the runs they stopped are reported.
func TestRaceWithBlindBackupWriter(t *testing.T) {
	if takeovers := race(t, testbed.BackupBlind); takeovers == 0 {
		// Not a failure of the product; a run in which the race never
		// happened proves nothing, so say so.
		t.Log("the blind backup never replaced a Restore lock in this run: the race was not exercised")
	}
}

// The same against today's operator, whose backup manager reads afresh and
// writes by compare-and-swap: it never replaces a Restore lock.
func TestRaceWithCASBackupWriter(t *testing.T) {
	if takeovers := race(t, testbed.BackupCAS); takeovers != 0 {
		t.Errorf("the compare-and-swap backup replaced a Restore lock %d times", takeovers)
	}
}

// race runs fifty restores over five clusters beside a backup loop in mode
// and returns how often a backup replaced a live Restore lock.
func race(t *testing.T, mode testbed.BackupMode) (takeovers int) {
	testbin.SkipShort(t, "an API server")
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	const clusters, restores = 5, 50
	var names []string
	watches := map[string]*testbed.HolderWatch{}
	for i := range clusters {
		name := fmt.Sprintf("c%d", i)
		createCluster(t, env, ns, name, nil)
		watches[name] = env.WatchLockHolders(t, ns, name)
		names = append(names, name)
	}
	startReconciler(t, env, ns)
	// Its think time, between reading the lock free and writing its own,
	// stands for its cache's lag too: either way it writes over a lock
	// taken after its read.
	stopBackups := env.BackupLoop(t, ns, names, testbed.Backups{Mode: mode,
		Every: 150 * time.Millisecond, Hold: 60 * time.Millisecond, Think: 40 * time.Millisecond})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make(chan submitted, restores)
	errs := make(chan error, restores)
	for i := range restores {
		wg.Go(func() {
			time.Sleep(time.Duration(rand.Int64N(int64(6 * time.Second))))
			lr := newRequest(ns, fmt.Sprintf("r%02d", i), names[i%clusters], false)
			if err := env.Client.Create(ctx, lr); err != nil {
				errs <- err
				return
			}
			s, err := runExecutor(ctx, env, lr, env.Config)
			if err != nil {
				errs <- err
				return
			}
			results <- s
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	backups := stopBackups()

	// Every request is gone and every lock free; the watches have seen
	// the last version.
	for _, name := range names {
		testbed.Eventually(t, 30*time.Second, name+" free and seen", func() (bool, error) {
			l, rv := clusterLock(t, env, ns, name)
			n, _ := strconv.ParseInt(rv, 10, 64)
			tl := watches[name].Timeline()
			if !l.Free() || len(tl) == 0 || tl[len(tl)-1].RV < n {
				return false, fmt.Errorf("lock %+v at %d; the watch saw %d versions, the last %+v", l, n, len(tl), tl[len(tl)-1:])
			}
			return true, nil
		})
	}
	// Every request goes: its finalizer is dropped just after its release.
	testbed.Eventually(t, 30*time.Second, "every lock request gone", func() (bool, error) {
		var left lockv1alpha1.LockRequestList
		err := env.Client.List(context.Background(), &left, client.InNamespace(ns))
		return err == nil && len(left.Items) == 0, err
	})

	var refusals, submissions, under int
	for s := range results {
		refusals += s.refusals
		if len(s.records) != 1 {
			t.Errorf("%s recorded %d submissions, want 1", s.request, len(s.records))
		}
		tl := watches[s.cluster].Timeline()
		for i, rec := range s.records {
			submissions++
			check := s.checks[i]
			for _, c := range tl {
				inside := c.RV > check && c.RV <= rec
				if (c.RV == testbed.At(tl, check).RV || inside) && (c.Holder != s.holder || c.Operation != schemas.OperationRestore) {
					under++
					t.Errorf("%s submitted (lock read at %d, record at %d) while the lock of %s was operation=%s holder=%s (at %d)",
						s.request, check, rec, s.cluster, c.Operation, c.Holder, c.RV)
				}
			}
		}
	}

	// Every transition: a Restore lock passes to another restore only
	// through a free lock (compare-and-swap); the blind backup is the one
	// writer that replaces a live Restore lock, and each such takeover is
	// counted.
	var retakes int
	for _, name := range names {
		prev := testbed.LockChange{}
		holds := map[string]int{}
		for _, c := range watches[name].Timeline() {
			if c.Holder != prev.Holder {
				switch {
				case prev.Operation == schemas.OperationRestore && c.Operation == schemas.OperationRestore:
					t.Errorf("cluster %s: lock passed from %s to %s without being free (at %d)", name, prev.Holder, c.Holder, c.RV)
				case prev.Operation == schemas.OperationRestore && c.Holder == testbed.BackupHolder:
					takeovers++
				}
				if c.Operation == schemas.OperationRestore {
					if holds[c.Holder]++; holds[c.Holder] > 1 {
						retakes++
					}
				}
			}
			prev = c
		}
	}
	if submissions != restores {
		t.Errorf("%d submissions, want %d", submissions, restores)
	}
	t.Logf("%d restores over %d clusters: %d submitted, each once; the backup took a live Restore lock %d times (%d backups, %d rounds found it held, %d conflicts); "+
		"%d executor runs stopped without sending because the lock was not theirs; %d times a request took its lock back; %d submissions under another holder",
		restores, clusters, submissions, takeovers, backups.Taken, backups.Busy, backups.Conflicts, refusals, retakes, under)
	return takeovers
}
