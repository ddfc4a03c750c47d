package executor

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// errNoAnswer cancels the restore's request when OpenBao took the whole
// body and did not answer within Config.AnswerTimeout.
var errNoAnswer = errors.New("no answer")

// stream sends the snapshot in one POST. It reports whether the tail was
// released (from then on the outcome may be unknown and nothing is retried).
func (r *run) stream(ctx context.Context, src Source, info ObjectInfo, addr string, token Secret, rec Recorder) (bool, error) {
	cfg := r.cfg
	body, err := src.Open(ctx, cfg.Key, info)
	if err != nil {
		return false, err
	}
	defer func() { _ = body.Close() }()
	var answered atomic.Bool
	var hb *holdBack
	gate := func(sum string, n int64) error {
		r.checked(sum, &hb.info)
		if answered.Load() {
			// OpenBao answered before taking the whole body (a refusal):
			// never record, never release.
			return fail(schemas.ExitSnapshot, nil, "OpenBao answered before the whole snapshot was sent: not sending its tail")
		}
		if rec != nil {
			s := Submission{
				Pod:         cfg.PodName,
				PodUID:      cfg.PodUID,
				Target:      addr,
				Digest:      "sha256:" + sum,
				Size:        n,
				Endpoint:    cfg.RestoreEndpoint(),
				SubmittedAt: metav1.NewTime(time.Now().UTC()),
			}
			if strings.HasPrefix(addr, "https://") {
				// What this run verified OpenBao with, so that the
				// reconciler's health gates verify the pods the same way.
				s.TLSCA, s.TLSServerName = string(cfg.TLSCAPEM), cfg.TLSServerName
			}
			if s.Pod == "" {
				s.Pod, _ = os.Hostname()
			}
			if err := rec.Record(ctx, s); err != nil {
				if errors.Is(err, ErrAlreadySubmitted) {
					return fail(schemas.ExitUnconfirmed, err, "a submission was recorded before this run could record its own: not sending the snapshot's tail")
				}
				return err
			}
		}
		r.logf("all checks passed (sha256:%s, %d bytes): submission recorded, sending the last %d bytes", sum, n, min(int64(r.opts.HoldBack), n))
		return nil
	}
	hb = newHoldBack(body, info.Size, r.opts.HoldBack, cfg.ExpectedDigest, gate)
	defer hb.Close()
	url := addr + "/v1/sys/storage/raft/" + cfg.RestoreEndpoint()

	// Once the whole body is written, the wait for the answer has a bound
	// of its own (schemas.EnvAnswerTimeout): OpenBao answers when it has applied
	// the snapshot, and a node that never answers must end this run with
	// exit 11 long before the Job's deadline kills it without a word. The
	// request's context is cancelled with errNoAnswer, so the failure
	// below can tell this stall from the Job's own end (SIGTERM).
	postCtx, cancelPost := context.WithCancelCause(ctx)
	defer cancelPost(nil)
	bodySent := make(chan struct{})
	var sentOnce sync.Once
	go func() {
		select {
		case <-bodySent:
		case <-postCtx.Done():
			return
		}
		t := time.NewTimer(cfg.AnswerTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelPost(errNoAnswer)
		case <-postCtx.Done():
		}
	}()
	trace := &httptrace.ClientTrace{
		GotFirstResponseByte: func() { answered.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			// The body ends only after the gate released the tail, so a
			// request written without error carried the whole snapshot.
			if i.Err == nil && hb.released.Load() {
				sentOnce.Do(func() {
					r.logf("the whole snapshot was sent; waiting up to %s for OpenBao's answer (%s)", cfg.AnswerTimeout, schemas.EnvAnswerTimeout)
					close(bodySent)
				})
			}
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(postCtx, trace), http.MethodPost, url, hb)
	if err != nil {
		return false, fail(schemas.ExitConfig, err, "bad OpenBao address %s", addr)
	}
	req.ContentLength = info.Size
	// GetBody stays nil: the transport must never replay this body.
	req.Header.Set("X-Vault-Token", token.reveal())
	req.Header.Set("X-Vault-No-Request-Forwarding", "true")
	req.Header.Set("X-Vault-Request", "true")
	req.Header.Set("Content-Type", "application/octet-stream")

	r.logf("streaming %s to %s (%s)", src.URL(cfg.Key), url, human(info.Size))
	stop := progress(r.logf, "restore", info.Size, hb.sent.Load, r.opts.ProgressEvery)
	t0 := time.Now()
	resp, err := r.bao.hc.Do(req)
	stop()
	if el := time.Since(t0); hb.sent.Load() > 0 {
		r.logf("sent %s of %s in %s (%s/s)", human(hb.sent.Load()), human(info.Size), el.Round(time.Millisecond), human(int64(float64(hb.sent.Load())/max(el.Seconds(), 1e-3))))
	}
	released := hb.released.Load()
	if err != nil {
		// Released first: whatever failed once the tail may have left is
		// final and unconfirmed, never a retried error.
		if released {
			if errors.Is(context.Cause(postCtx), errNoAnswer) {
				return true, fail(schemas.ExitUnconfirmed, nil, "%s took the whole snapshot but did not answer within %s (%s): check the cluster's data to learn whether the restore took effect", addr, cfg.AnswerTimeout, schemas.EnvAnswerTimeout)
			}
			return true, fail(schemas.ExitUnconfirmed, scrubURLError(err), "the connection to %s failed after the whole snapshot was sent", addr)
		}
		if e := hb.Err(); e != nil {
			return false, e
		}
		return false, transient(scrubURLError(err), "the connection to %s failed after %d of %d bytes, before the held-back tail was sent", addr, hb.sent.Load(), info.Size)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := baoErrors(out)
	switch c := resp.StatusCode; {
	case c == http.StatusOK || c == http.StatusNoContent:
		if !released {
			// A success for a body we never finished: impossible with a
			// correct server; the outcome is unknown.
			return true, fail(schemas.ExitUnconfirmed, nil, "%s answered HTTP %d before the whole snapshot was sent, which a correct OpenBao never does", addr, c)
		}
		r.logf("OpenBao accepted the snapshot (HTTP %d)", c)
		return true, nil
	case c >= 300 && c < 400:
		return released, fail(schemas.ExitLeader, nil, "%s answered HTTP %d (%s): it is not the active node", addr, c, resp.Header.Get("Location"))
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return released, fail(schemas.ExitAuth, nil, "%s refused the token for %s (HTTP %d)", addr, cfg.RestoreEndpoint(), c)
	case !released && (c == http.StatusTooManyRequests || c >= 502):
		return false, transient(nil, "%s answered HTTP %d before the snapshot's tail was sent", addr, c)
	case c == http.StatusBadRequest || c == http.StatusInternalServerError:
		hint := ""
		if strings.Contains(msg, "could not verify hash") {
			hint = " The snapshot was made by a cluster with another seal key; restoring it needs force, and the node then seals itself until unsealed with the source cluster's keys."
		}
		return released, fail(schemas.ExitSnapshot, nil, "OpenBao refused the snapshot (HTTP %d: %s).%s", c, msg, hint)
	default:
		if !released {
			return false, fail(schemas.ExitSnapshot, nil, "OpenBao answered HTTP %d (%s) before the snapshot's tail was sent", c, msg)
		}
		return true, fail(schemas.ExitUnconfirmed, nil, "OpenBao answered HTTP %d (%s) after the whole snapshot", c, msg)
	}
}
