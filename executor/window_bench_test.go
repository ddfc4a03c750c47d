package executor

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/fn"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// BenchmarkSubmitWindow measures, against a real kube-apiserver with the
// composed Role and a ServiceAccount token read from its file as in the
// pod, the window of KubeAPI.Record in which a writer that does not
// compare-and-swap can still take the cluster's lock unseen: from the start
// of the OpenBaoCluster GET (the last read of the lock) to the end of the
// record PATCH, after which the gate releases the snapshot's tail. The
// window is timed on the wire (windowClock), so the request's own GET and
// the setup of each iteration (a fresh LockRequest: a record is written
// once) are outside it. Metrics: window-ns/op (mean), window-p50-ns,
// window-p99-ns, window-max-ns.
//
//	go test -run '^$' -bench SubmitWindow -benchtime 200x ./executor/
func BenchmarkSubmitWindow(b *testing.B) {
	bed := startAPIBed(b)
	ns := bed.env.Namespace(b)
	ctx := context.Background()
	rs := newRestore(ns, "window", "uid-window")
	bed.composeRBAC(b, rs)
	bed.lock(b, rs, schemas.LockHeld)
	k := bed.saRecorder(b, ns, rs.names.ServiceAccount, rs.names.Lock, rs.r.UID)
	clock := &windowClock{next: k.Client.Transport}
	k.Client.Transport = clock

	var windows []time.Duration
	for b.Loop() {
		if err := k.Record(ctx, submission("restore-window")); err != nil {
			b.Fatal(err)
		}
		w, ok := clock.take()
		if !ok {
			b.Fatal("the record's cluster GET or PATCH was not seen")
		}
		windows = append(windows, w)
		b.StopTimer()
		bed.renewLock(b, rs)
		b.StartTimer()
	}

	slices.Sort(windows)
	var sum time.Duration
	for _, w := range windows {
		sum += w
	}
	n := len(windows)
	b.ReportMetric(float64(sum.Nanoseconds())/float64(n), "window-ns/op")
	b.ReportMetric(float64(windows[n/2].Nanoseconds()), "window-p50-ns")
	b.ReportMetric(float64(windows[min(n-1, n*99/100)].Nanoseconds()), "window-p99-ns")
	b.ReportMetric(float64(windows[n-1].Nanoseconds()), "window-max-ns")
}

// renewLock replaces the restore's LockRequest by a fresh Held one of the
// same name (the Role names it), its record unwritten. The cluster's lock
// stays the restore's.
func (b *apiBed) renewLock(t testing.TB, rs restore) {
	t.Helper()
	lr := fn.LockRequest(rs.r, rs.spec, rs.names)
	if err := b.env.Client.Delete(context.Background(), lr); client.IgnoreNotFound(err) != nil {
		t.Fatalf("delete lockrequest: %v", err)
	}
	b.lock(t, rs, schemas.LockHeld)
}

// windowClock times, on the wire, from the start of a GET of an
// OpenBaoCluster to the end of the next PATCH's response body (closed once
// read).
type windowClock struct {
	next       http.RoundTripper
	mu         sync.Mutex
	start, end time.Time
}

func (c *windowClock) RoundTrip(req *http.Request) (*http.Response, error) {
	cluster := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/"+schemas.ClusterResource+"/")
	if cluster {
		c.mu.Lock()
		c.start, c.end = time.Now(), time.Time{}
		c.mu.Unlock()
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPatch {
		return resp, err
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, done: func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.end.IsZero() {
			c.end = time.Now()
		}
	}}
	return resp, nil
}

// take returns the last window and forgets it.
func (c *windowClock) take() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := !c.start.IsZero() && !c.end.IsZero()
	w := c.end.Sub(c.start)
	c.start, c.end = time.Time{}, time.Time{}
	return w, ok
}

type timedBody struct {
	io.ReadCloser
	done func()
}

func (t *timedBody) Close() error {
	err := t.ReadCloser.Close()
	t.done()
	return err
}
