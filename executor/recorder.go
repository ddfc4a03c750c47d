package executor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// Submission is the record written just before the destructive call.
type Submission = lockv1.Submission

// Recorder makes the restore at-most-once. Check is read-only and runs
// before any work, so a second run never even opens a POST. Record writes
// the record with an optimistic-concurrency precondition just before the
// snapshot's tail is released; both return ErrAlreadySubmitted (wrapped)
// when a record exists.
type Recorder interface {
	Check(ctx context.Context) error
	Record(ctx context.Context, s Submission) error
	// Choose returns the snapshot chosen for a restore with no key: the
	// one recorded, or else pick's, recorded first. A retried pod thus
	// restores what the first chose.
	Choose(ctx context.Context, pick func() (Chosen, error)) (Chosen, error)
}

// Chosen is the snapshot chosen for a restore with no key.
type Chosen = lockv1.Chosen

// MemoryRecorder keeps the record in memory: for tests, and for one process
// restoring several times.
type MemoryRecorder struct {
	mu     sync.Mutex
	Rec    *Submission
	Chosen *Chosen
}

func (m *MemoryRecorder) Check(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Rec != nil {
		return ErrAlreadySubmitted
	}
	return nil
}

func (m *MemoryRecorder) Record(_ context.Context, s Submission) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Rec != nil {
		return ErrAlreadySubmitted
	}
	m.Rec = &s
	return nil
}

// KubeAPI is the executor's client of the Kubernetes API: it records the
// submission (LockRequest.status.submission) and lists the cluster's pods
// (PodAddresses, PodAddress, PodAt), through the API server's REST
// interface with the pod's ServiceAccount token. It needs only get on
// its lockrequest and on the OpenBaoCluster it names, and patch on
// lockrequests/status, and no client library: a GET of the request, a GET
// of the cluster (whose status.operationLock must still name this restore),
// and one merge patch whose metadata.resourceVersion makes the API server
// refuse it (409) if anything changed the request since its GET.
type KubeAPI struct {
	Base      string // https://host:port
	Namespace string
	Name      string
	// RestoreUID, when set, must match spec.restore.uid: the executor never
	// writes on another restore's lock request.
	RestoreUID string
	Token      func() (string, error)
	Client     *http.Client
}

// NewInClusterRecorder builds a KubeAPI from the pod's environment and
// the mounted ServiceAccount token (dir holds token, ca.crt, namespace). The
// token is re-read for each call, because projected tokens rotate.
func NewInClusterRecorder(env func(string) string, dir, namespace, name, restoreUID string) (*KubeAPI, error) {
	host, port := env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fail(schemas.ExitConfig, nil, "%s is set but KUBERNETES_SERVICE_HOST/PORT are not: not running in a cluster", schemas.EnvLockRequestName)
	}
	if namespace == "" {
		b, err := os.ReadFile(filepath.Join(dir, "namespace"))
		if err != nil {
			return nil, fail(schemas.ExitConfig, nil, "%s is not set and %s cannot be read", schemas.EnvClusterNamespace, filepath.Join(dir, "namespace"))
		}
		namespace = strings.TrimSpace(string(b))
	}
	pool, _, err := loadCA(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fail(schemas.ExitConfig, err, "Kubernetes API CA")
	}
	tokenFile := filepath.Join(dir, "token")
	if _, err := readSecretFile(tokenFile); err != nil {
		return nil, fail(schemas.ExitConfig, nil, "Kubernetes API token %s: %v", tokenFile, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return &KubeAPI{
		Base:       "https://" + net.JoinHostPort(host, port),
		Namespace:  namespace,
		Name:       name,
		RestoreUID: restoreUID,
		Token: func() (string, error) {
			s, err := readSecretFile(tokenFile)
			return s.reveal(), err
		},
		Client: &http.Client{Transport: tr, Timeout: 15 * time.Second},
	}, nil
}

// SetCA replaces the client's trusted CA pool (tests against a local API).
func (k *KubeAPI) SetCA(pool *x509.CertPool) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	k.Client = &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

func (k *KubeAPI) url(status bool) string {
	u := k.objectURL(lockv1.GroupVersion.Group, lockv1.GroupVersion.Version, schemas.LockRequestResource, k.Name)
	if status {
		u += "/status"
	}
	return u
}

// objectURL is the REST path of a namespaced object in k.Namespace.
func (k *KubeAPI) objectURL(group, version, resource, name string) string {
	return fmt.Sprintf("%s/apis/%s/%s/namespaces/%s/%s/%s", k.Base, group, version, k.Namespace, resource, name)
}

func (k *KubeAPI) call(ctx context.Context, method, u string, body []byte, ctype string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	tok, err := k.Token()
	if err != nil {
		return 0, nil, fail(schemas.ExitConfig, nil, "Kubernetes API token: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		return 0, nil, transient(scrubURLError(err), "%s %s", method, strings.TrimPrefix(u, k.Base))
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, transient(err, "reading %s", strings.TrimPrefix(u, k.Base))
	}
	return resp.StatusCode, out, nil
}

func (k *KubeAPI) get(ctx context.Context) (*lockv1.LockRequest, error) {
	code, out, err := k.call(ctx, http.MethodGet, k.url(false), nil, "")
	if err != nil {
		return nil, err
	}
	if err := kubeStatus(code, out, "get lockrequest "+k.Namespace+"/"+k.Name); err != nil {
		return nil, err
	}
	lr := &lockv1.LockRequest{}
	if err := json.Unmarshal(out, lr); err != nil {
		return nil, transient(err, "decoding lockrequest %s/%s", k.Namespace, k.Name)
	}
	return lr, nil
}

// verify refuses a request that is not this restore's, has a record, or
// whose lock is not held: a restore is only sent while the lock is ours.
func (k *KubeAPI) verify(lr *lockv1.LockRequest) error {
	if k.RestoreUID != "" && lr.Spec.Restore.UID != k.RestoreUID {
		return fail(schemas.ExitConfig, nil, "lockrequest %s/%s belongs to restore UID %q, not %q", k.Namespace, k.Name, lr.Spec.Restore.UID, k.RestoreUID)
	}
	if s := lr.Status.Submission; s != nil {
		return fmt.Errorf("lockrequest %s/%s: pod %s sent the snapshot to %s at %s: %w", k.Namespace, k.Name, s.Pod, s.Target, s.SubmittedAt.UTC().Format(time.RFC3339), ErrAlreadySubmitted)
	}
	if lr.DeletionTimestamp != nil {
		// Its restore was deleted, or ended and the function dropped it:
		// the reconciler is releasing the lock, or has released it.
		return transient(nil, "lockrequest %s/%s is being deleted: the cluster's operation lock is being released", k.Namespace, k.Name)
	}
	if lr.Status.State != schemas.LockHeld {
		return transient(nil, "lockrequest %s/%s: the cluster's operation lock is not held (state %q)", k.Namespace, k.Name, lr.Status.State)
	}
	return nil
}

// clusterLock is what the executor reads of an OpenBaoCluster.
type clusterLock struct {
	Status struct {
		OperationLock *struct {
			Operation string `json:"operation"`
			Holder    string `json:"holder"`
		} `json:"operationLock"`
	} `json:"status"`
}

// lockOurs reads the OpenBaoCluster the request names and refuses, as a
// transient failure, unless its status.operationLock is this request's
// Restore lock. The request's Held is the reconciler's last view; a writer
// that does not compare-and-swap (openbao-operator's January 2026 backup
// manager, a merge patch with no resourceVersion) may have replaced the
// lock since. stopping says what the refusal stops.
func (k *KubeAPI) lockOurs(ctx context.Context, lr *lockv1.LockRequest, stopping string) error {
	if lr.Spec.Cluster == "" {
		return fail(schemas.ExitConfig, nil, "lockrequest %s/%s names no OpenBaoCluster (spec.cluster)", k.Namespace, k.Name)
	}
	what := "OpenBaoCluster " + k.Namespace + "/" + lr.Spec.Cluster
	code, out, err := k.call(ctx, http.MethodGet, k.objectURL(schemas.ClusterGroup, schemas.ClusterVersion, schemas.ClusterResource, lr.Spec.Cluster), nil, "")
	if err != nil {
		return err
	}
	if err := kubeStatus(code, out, "get "+what); err != nil {
		return err
	}
	var c clusterLock
	if err := json.Unmarshal(out, &c); err != nil {
		return transient(err, "decoding %s", what)
	}
	l := c.Status.OperationLock
	switch {
	case l != nil && l.Operation == schemas.OperationRestore && l.Holder == lr.Spec.Holder:
		return nil
	case l == nil || (l.Operation == "" && l.Holder == ""):
		return transient(nil, "the operation lock of %s is free, not held by this restore (%s): %s", what, lr.Spec.Holder, stopping)
	default:
		return transient(nil, "the operation lock of %s is held by operation=%s holder=%s, not by this restore (%s): %s", what, l.Operation, l.Holder, lr.Spec.Holder, stopping)
	}
}

func (k *KubeAPI) Check(ctx context.Context) error {
	lr, err := k.get(ctx)
	if err != nil {
		return err
	}
	if err := k.verify(lr); err != nil {
		return err
	}
	return k.lockOurs(ctx, lr, "not starting the restore")
}

// Record writes the submission. On a conflict (someone else changed the
// object, the reconciler usually) it re-reads and tries again, a few times;
// a record found on re-read means another pod won and we must not send.
// Right before the write it reads the cluster's lock (lockOurs); a lock
// taken blindly after that read goes unseen here, so nothing else runs
// between the two (BenchmarkSubmitWindow measures that window).
func (k *KubeAPI) Record(ctx context.Context, s Submission) error {
	for attempt := 0; ; attempt++ {
		lr, err := k.get(ctx)
		if err != nil {
			return err
		}
		if err := k.verify(lr); err != nil {
			return err
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": lr.ResourceVersion},
			"status":   map[string]any{"submission": s},
		})
		if err != nil {
			return err
		}
		// Nothing between this read and the write below.
		if err := k.lockOurs(ctx, lr, "not sending the snapshot's tail"); err != nil {
			return err
		}
		code, out, err := k.call(ctx, http.MethodPatch, k.url(true), patch, "application/merge-patch+json")
		if err != nil {
			return err
		}
		if code == http.StatusConflict && attempt < 5 {
			continue
		}
		return kubeStatus(code, out, "record the submission on lockrequest "+k.Namespace+"/"+k.Name)
	}
}

func kubeStatus(code int, body []byte, what string) error {
	if code >= 200 && code < 300 {
		return nil
	}
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &st)
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fail(schemas.ExitConfig, nil, "%s: HTTP %d %s (check the executor's RBAC)", what, code, st.Message)
	case http.StatusNotFound:
		return fail(schemas.ExitConfig, nil, "%s: not found", what)
	case http.StatusUnprocessableEntity:
		// Invalid for the CRD's schema or CEL rules: permanent. (A second
		// record is caught earlier, by the resourceVersion precondition.)
		return fail(schemas.ExitConfig, nil, "%s: HTTP %d %s", what, code, st.Message)
	default:
		return transient(errors.New(st.Message), "%s: HTTP %d", what, code)
	}
}
