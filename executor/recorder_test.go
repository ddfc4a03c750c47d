package executor

import (
	"encoding/json"
	"errors"
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
// concurrency: a merge patch carrying a stale resourceVersion gets 409.
type fakeAPI struct {
	mu       sync.Mutex
	lr       lockv1.LockRequest
	rv       int
	bumpNext int // bump the resourceVersion before the next n patches (a concurrent writer)
	patches  int
	token    string
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

func newFakeAPI(t *testing.T) (*fakeAPI, *KubeRecorder) {
	f := &fakeAPI{rv: 7, token: "kube-token"}
	f.lr.Spec.Restore.UID = "uid-1"
	f.lr.Status.State = schemas.LockHeld
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	k := &KubeRecorder{Base: srv.URL, Namespace: "ns", Name: "lr", RestoreUID: "uid-1", Client: srv.Client(),
		Token: func() (string, error) { return "kube-token", nil }}
	return f, k
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
