package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// safetySnapshot streams the cluster's current state (GET
// sys/storage/raft/snapshot from the active node) into the object store
// under schemas.SafetySnapshotKey, hashing it on the way, and checks the
// stored object's size; only then may the restore be submitted. Memory is
// one upload part, whatever the cluster's size. Required: a failure ends
// the run before the lock-protected POST, naming the permission to add.
// BestEffort: the run goes on, and the termination message says why there
// is none.
func (r *run) safetySnapshot(ctx context.Context, src Source, addr string, token Secret, clusterID string) error {
	cfg := r.cfg
	at := time.Now().UTC()
	key := schemas.SafetySnapshotKey(cfg.PathPrefix, cfg.Namespace, cfg.ClusterName, cfg.RequestName, at)
	var s *schemas.SafetySnapshot
	err := r.retry(ctx, "the safety snapshot", func() (err error) {
		s, err = r.takeSafety(ctx, src, addr, token, key)
		return err
	})
	if err != nil {
		if cfg.SafetySnapshot == schemas.SafetyBestEffort {
			r.logf("WARNING: no safety snapshot (%s=%s, so the restore goes on without one): %v", schemas.EnvSafetySnapshot, schemas.SafetyBestEffort, err)
			r.tm.Safety = &schemas.SafetySnapshot{Skipped: err.Error()}
			return nil
		}
		return safetyRequired(err)
	}
	took := time.Since(at)
	s.ClusterID, s.TakenAt, s.Duration = clusterID, at.Format(time.RFC3339), took.Round(time.Millisecond).String()
	r.tm.Safety = s
	r.logf("safety snapshot of cluster %s taken in %s: %s (%s, sha256:%s)", clusterID, s.Duration, s.URL, human(s.Size), s.SHA256)
	return nil
}

// safetyRequired says how to go on when a required safety snapshot
// cannot be taken.
func safetyRequired(err error) error {
	return fmt.Errorf("%w (the safety snapshot is required: grant what is missing, or set spec.safetySnapshot: BestEffort or Off to restore without it)", err)
}

// takeSafety is one attempt: GET, upload, check.
func (r *run) takeSafety(ctx context.Context, src Source, addr string, token Secret, key string) (*schemas.SafetySnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/"+snapshotPath, nil)
	if err != nil {
		return nil, fail(schemas.ExitConfig, err, "bad OpenBao address %s", addr)
	}
	req.Header.Set("X-Vault-Token", token.reveal())
	req.Header.Set("X-Vault-No-Request-Forwarding", "true")
	req.Header.Set("X-Vault-Request", "true")
	resp, err := r.bao.hc.Do(req)
	if err != nil {
		return nil, transient(scrubURLError(err), "the safety snapshot: GET %s/v1/sys/storage/raft/snapshot", addr)
	}
	defer func() { _ = resp.Body.Close() }()
	switch c := resp.StatusCode; {
	case c == http.StatusOK:
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return nil, fail(schemas.ExitAuth, nil, "the safety snapshot: OpenBao refused to read sys/storage/raft/snapshot (HTTP %d): the token needs read on it", c)
	case c == http.StatusTooManyRequests || c >= 500:
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, transient(nil, "the safety snapshot: GET sys/storage/raft/snapshot answered HTTP %d %s", c, baoErrors(out))
	default:
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, fail(schemas.ExitSnapshot, nil, "the safety snapshot: GET sys/storage/raft/snapshot answered HTTP %d %s", c, baoErrors(out))
	}
	body := &hashingReader{r: resp.Body, h: sha256.New()}
	stop := progress(r.logf, "safety snapshot", 0, body.n.Load, r.opts.ProgressEvery)
	err = src.Put(ctx, key, body)
	stop()
	if err != nil {
		return nil, safetyStoreFailure(err, src.URL(key))
	}
	info, err := src.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("the safety snapshot was written to %s but cannot be read back: %w", src.URL(key), err)
	}
	n := body.n.Load()
	if info.Size != n || n == 0 {
		return nil, fail(schemas.ExitStorage, nil, "the safety snapshot %s holds %d bytes, but %d were read from OpenBao", src.URL(key), info.Size, n)
	}
	return &schemas.SafetySnapshot{Key: key, URL: src.URL(key), SHA256: hex.EncodeToString(body.h.Sum(nil)), Size: n}, nil
}

// safetyStoreFailure says what a failed upload needs: write access under
// the safety prefix, when the store refused it.
func safetyStoreFailure(err error, url string) error {
	if ExitCode(err) == schemas.ExitStorage && strings.Contains(err.Error(), "access refused") {
		return fail(schemas.ExitStorage, err, "the safety snapshot could not be written to %s: the object store credentials can read but not write there; they need write access under the path prefix's safety/ folder "+
			"(S3: s3:PutObject, with multipart upload; GCS: storage.objects.create; Azure: write on the container)", url)
	}
	return fmt.Errorf("the safety snapshot to %s: %w", url, err)
}

// hashingReader hashes and counts what is read through it. Its read
// errors are marked, so an upload's failure is not blamed on the store.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n atomic.Int64 // read by the progress ticker too
}

func (h *hashingReader) Read(p []byte) (int, error) {
	k, err := h.r.Read(p)
	h.h.Write(p[:k])
	n := h.n.Add(int64(k))
	if err != nil && !errors.Is(err, io.EOF) {
		return k, &bodyError{transient(err, "reading the cluster's snapshot from OpenBao failed after %d bytes", n)}
	}
	return k, err
}

// bodyError is a failure to read the stream being uploaded.
type bodyError struct{ err error }

func (b *bodyError) Error() string { return b.err.Error() }
func (b *bodyError) Unwrap() error { return b.err }

// putFailure is an upload's failure: the stream's own, when reading it
// failed, else the store's (classified), else a transient one.
func putFailure(err, store error) error {
	var be *bodyError
	if errors.As(err, &be) {
		return be.err
	}
	if store != nil {
		return store
	}
	return transient(err, "the upload's stream failed")
}
