package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// fakeAPI serves one LockRequest with the API server's optimistic
// concurrency: a merge patch carrying a stale resourceVersion gets 409. It
// also serves the OpenBaoCluster the request names (spec.cluster), whose
// status.operationLock is the request's own Restore lock unless lock is set.
type fakeAPI struct {
	mu       sync.Mutex
	lr       lockv1.LockRequest
	rv       int
	bumpNext int // bump the resourceVersion before the next n patches (a concurrent writer)
	patches  int
	token    string
	// lock, when set, is served as the cluster's status.operationLock
	// (JSON; "null" for a free lock).
	lock        string
	noCluster   bool
	clusterGets int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	base := "/apis/restore.openbao-restore.io/v1alpha1/namespaces/ns/lockrequests/lr"
	f.lr.ResourceVersion = strconv.Itoa(f.rv)
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base:
		_ = json.NewEncoder(w).Encode(f.lr)
	case r.Method == http.MethodGet && r.URL.Path == "/apis/openbao.org/v1alpha1/namespaces/ns/openbaoclusters/"+f.lr.Spec.Cluster && !f.noCluster:
		f.clusterGets++
		lock := f.lock
		if lock == "" {
			lock = fmt.Sprintf(`{"operation":"Restore","holder":%q,"acquiredAt":"2026-01-02T03:04:05Z"}`, f.lr.Spec.Holder)
		}
		_, _ = fmt.Fprintf(w, `{"apiVersion":"openbao.org/v1alpha1","kind":"OpenBaoCluster","metadata":{"name":%q,"namespace":"ns"},"spec":{"replicas":3},"status":{"initialized":true,"operationLock":%s}}`, f.lr.Spec.Cluster, lock)
	case r.Method == http.MethodPatch && r.URL.Path == base+"/status":
		f.patches++
		if r.Header.Get("Content-Type") != "application/merge-patch+json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		if f.bumpNext > 0 {
			f.bumpNext--
			f.rv++
		}
		b, _ := io.ReadAll(r.Body)
		var p struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
			Status struct {
				Submission *lockv1.Submission `json:"submission"`
			} `json:"status"`
		}
		if err := json.Unmarshal(b, &p); err != nil || p.Status.Submission == nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if p.Metadata.ResourceVersion != strconv.Itoa(f.rv) {
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"message":"the object has been modified"}`))
			return
		}
		f.lr.Status.Submission = p.Status.Submission
		f.rv++
		_ = json.NewEncoder(w).Encode(f.lr)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func newFakeAPI(t *testing.T) (*fakeAPI, *KubeAPI) {
	f := &fakeAPI{rv: 7, token: "kube-token"}
	f.lr.Spec = heldSpec()
	f.lr.Status.State = schemas.LockHeld
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	k := &KubeAPI{Base: srv.URL, Namespace: "ns", Name: "lr", RestoreUID: "uid-1", Client: srv.Client(),
		Token: func() (string, error) { return "kube-token", nil }}
	return f, k
}

// heldSpec is the fake request's spec: restore uid-1 on cluster bao.
func heldSpec() lockv1.LockRequestSpec {
	return lockv1.LockRequestSpec{Cluster: "bao", Operation: schemas.OperationRestore,
		Holder: schemas.Holder("r", "uid-1"), Restore: lockv1.RestoreRef{UID: "uid-1"}}
}

func sub() Submission {
	return Submission{Pod: "p", Target: "https://x:8200", Digest: "sha256:00", Size: 5, Endpoint: "snapshot", SubmittedAt: metav1.NewTime(time.Now())}
}

func TestKubeRecorderRecordsOnce(t *testing.T) {
	f, k := newFakeAPI(t)
	ctx := t.Context()
	if err := k.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Record(ctx, sub()); err != nil {
		t.Fatal(err)
	}
	if f.lr.Status.Submission == nil || f.lr.Status.Submission.Target != "https://x:8200" {
		t.Fatalf("not recorded: %+v", f.lr.Status)
	}
	// Check and Record each read the cluster's lock once.
	if f.clusterGets != 2 {
		t.Fatalf("the cluster was read %d times, want 2", f.clusterGets)
	}
	if err := k.Check(ctx); !errors.Is(err, ErrAlreadySubmitted) {
		t.Fatalf("check after record: %v", err)
	}
	if err := k.Record(ctx, sub()); !errors.Is(err, ErrAlreadySubmitted) {
		t.Fatalf("second record: %v", err)
	}
}

func TestKubeRecorderConflictRetries(t *testing.T) {
	f, k := newFakeAPI(t)
	f.bumpNext = 2
	if err := k.Record(t.Context(), sub()); err != nil {
		t.Fatal(err)
	}
	if f.patches != 3 || f.lr.Status.Submission == nil {
		t.Fatalf("patches %d", f.patches)
	}
}

func TestKubeRecorderConflictWithRecordStops(t *testing.T) {
	f, k := newFakeAPI(t)
	// Another pod records between our GET and our PATCH.
	f.bumpNext = 1
	other := sub()
	other.Pod = "other"
	done := false
	k.Token = func() (string, error) {
		if !done && f.patches == 1 {
			done = true
			f.lr.Status.Submission = &other
		}
		return "kube-token", nil
	}
	err := k.Record(t.Context(), sub())
	if !errors.Is(err, ErrAlreadySubmitted) || f.lr.Status.Submission.Pod != "other" {
		t.Fatalf("err %v, record %+v", err, f.lr.Status.Submission)
	}
}

func TestKubeRecorderRefusals(t *testing.T) {
	f, k := newFakeAPI(t)
	f.lr.Status.State = schemas.LockWaiting
	if err := k.Check(t.Context()); ExitCode(err) != schemas.ExitTransient || !strings.Contains(err.Error(), "not held") {
		t.Fatalf("waiting lock: %v", err)
	}
	f.lr.Status.State = schemas.LockHeld
	f.lr.Spec.Restore.UID = "someone-else"
	if err := k.Record(t.Context(), sub()); ExitCode(err) != schemas.ExitConfig || f.lr.Status.Submission != nil {
		t.Fatalf("foreign request: %v", err)
	}
	k.Token = func() (string, error) { return "wrong", nil }
	if err := k.Check(t.Context()); ExitCode(err) != schemas.ExitConfig || !strings.Contains(err.Error(), "RBAC") {
		t.Fatalf("bad token: %v", err)
	}
}

// The request says Held, but the cluster's lock no longer names this
// restore (a blind writer replaced it, or cleared it): Check and Record
// refuse as transient failures naming what holds the lock, and no patch is
// sent. A cluster gone is a permanent failure.
func TestKubeRecorderLockNotOurs(t *testing.T) {
	holder := schemas.Holder("r", "uid-1")
	for _, c := range []struct {
		name, lock, msg string
	}{
		{"held by a backup", `{"operation":"Backup","holder":"openbaocluster/backup","acquiredAt":"2026-01-02T03:04:05Z"}`,
			"the operation lock of OpenBaoCluster ns/bao is held by operation=Backup holder=openbaocluster/backup, not by this restore (" + holder + ")"},
		{"held by another restore", `{"operation":"Restore","holder":"openbaorestore/r/uid-0"}`,
			"is held by operation=Restore holder=openbaorestore/r/uid-0, not by this restore"},
		{"our holder, another operation", fmt.Sprintf(`{"operation":"Upgrade","holder":%q}`, holder),
			"is held by operation=Upgrade holder=" + holder + ", not by this restore"},
		{"free (null)", `null`, "the operation lock of OpenBaoCluster ns/bao is free, not held by this restore (" + holder + ")"},
		{"free (empty)", `{}`, "is free, not held by this restore"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, k := newFakeAPI(t)
			f.lock = c.lock
			for op, tc := range map[string]struct {
				err  error
				tail string
			}{
				"check":  {k.Check(t.Context()), "not starting the restore"},
				"record": {k.Record(t.Context(), sub()), "not sending the snapshot's tail"},
			} {
				err := tc.err
				if ExitCode(err) != schemas.ExitTransient || errors.Is(err, ErrAlreadySubmitted) ||
					!strings.Contains(err.Error(), c.msg) || !strings.HasSuffix(err.Error(), ": "+tc.tail) {
					t.Errorf("%s: %v (exit %d), want a transient refusal containing %q and ending %q", op, err, ExitCode(err), c.msg, tc.tail)
				}
			}
			if f.patches != 0 || f.lr.Status.Submission != nil {
				t.Fatalf("refused, yet %d patches were sent: %+v", f.patches, f.lr.Status.Submission)
			}
		})
	}

	t.Run("cluster not found", func(t *testing.T) {
		f, k := newFakeAPI(t)
		f.noCluster = true
		for op, err := range map[string]error{"check": k.Check(t.Context()), "record": k.Record(t.Context(), sub())} {
			if ExitCode(err) != schemas.ExitConfig || !strings.Contains(err.Error(), "get OpenBaoCluster ns/bao: not found") {
				t.Errorf("%s: %v (exit %d), want exit %d: not found", op, err, ExitCode(err), schemas.ExitConfig)
			}
		}
		if f.patches != 0 {
			t.Fatalf("%d patches sent", f.patches)
		}
	})

	// The lock is taken between the request's GET and the cluster's: the
	// cluster read is the last before the write.
	t.Run("taken after the request was read", func(t *testing.T) {
		f, k := newFakeAPI(t)
		gets := 0
		k.Token = func() (string, error) {
			if gets++; gets == 2 { // the call after the request's GET: the cluster's
				f.mu.Lock()
				f.lock = `{"operation":"Backup","holder":"openbaocluster/backup"}`
				f.mu.Unlock()
			}
			return "kube-token", nil
		}
		if err := k.Record(t.Context(), sub()); ExitCode(err) != schemas.ExitTransient || !strings.Contains(err.Error(), "holder=openbaocluster/backup") {
			t.Fatalf("record: %v", err)
		}
		if f.patches != 0 || f.lr.Status.Submission != nil {
			t.Fatalf("%d patches sent", f.patches)
		}
	})
}
