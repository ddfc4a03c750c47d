package executor

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// stepDownWait bounds the wait for another node to become active after
// the leader stepped down.
const stepDownWait = time.Minute

// stepDown is a step-down run (schemas.ModeStepDown), which the function
// composes when the reconciler's restart reaches the leader: it asks the
// pod EnvStepDownPod, if it is still the active node, to step down with
// the restore's own credentials (sys/step-down needs update and sudo), and
// waits until another node is active. The reconciler holds no OpenBao
// credential; this Job is how it gets a step-down without one. It reads
// no snapshot and sends none.
func (r *run) stepDown(ctx context.Context, env func(string) string) error {
	cfg := r.cfg
	res := &schemas.StepDownResult{Pod: cfg.StepDownPod}
	r.tm.StepDown = res
	if err := r.inClusterKube(env); err != nil {
		return err
	}
	addr := cfg.OpenBaoAddr
	if addr == "" {
		if r.kube == nil {
			return fail(schemas.ExitConfig, nil, "a step-down needs the Kubernetes API to find pod %s (or %s)", cfg.StepDownPod, schemas.EnvOpenBaoAddr)
		}
		err := r.retry(ctx, "finding pod "+cfg.StepDownPod, func() (err error) {
			addr, err = r.kube.PodAddress(ctx, cfg.Namespace, cfg.StepDownPod, r.scheme())
			return err
		})
		if err != nil {
			return err
		}
	}
	var h *health
	if err := r.retry(ctx, "reading the health of pod "+cfg.StepDownPod, func() (err error) { h, err = r.bao.health(ctx, addr); return err }); err != nil {
		return err
	}
	if h.Code != http.StatusOK || h.Standby || h.Sealed {
		// Not the active node (any more): nothing to ask.
		res.SteppedDown = true
		r.tm.Message = fmt.Sprintf("pod %s (%s) is not the active node: nothing to step down", cfg.StepDownPod, addr)
		if leader, _, err := r.bao.findLeader(ctx, r.candidates(ctx)); err == nil {
			res.NewLeader = r.podOf(ctx, leader)
			r.tm.Message += "; " + res.NewLeader + " is active"
		}
		return nil
	}
	token := cfg.Token
	if cfg.AuthMethod == "jwt" {
		err := r.retry(ctx, "JWT login", func() (err error) { token, err = r.bao.loginJWT(ctx, addr, cfg.JWTRole, cfg.JWT); return err })
		if err != nil {
			return err
		}
	}
	code, body, err := r.bao.do(ctx, http.MethodPut, addr, "/v1/sys/step-down", token, nil, 30*time.Second)
	switch {
	case err != nil:
		return err
	case code == http.StatusForbidden:
		return fail(schemas.ExitAuth, nil, "PUT %s/v1/sys/step-down refused (HTTP 403 %s): the restore's token needs update and sudo on sys/step-down, on the restored data", addr, baoErrors(body))
	case code != http.StatusNoContent && code != http.StatusOK:
		return fail(schemas.ExitLeader, nil, "PUT %s/v1/sys/step-down: HTTP %d %s", addr, code, baoErrors(body))
	}
	r.logf("pod %s (%s) was asked to step down; waiting for another node to be active", cfg.StepDownPod, addr)
	// The pods do not change while the leader steps down: list them once.
	cands := r.candidates(ctx)
	start := time.Now()
	for {
		if leader, _, err := r.bao.findLeader(ctx, cands); err == nil && leader != addr {
			res.SteppedDown, res.NewLeader = true, r.podOf(ctx, leader)
			r.tm.Message = fmt.Sprintf("pod %s stepped down; %s is active after %s", cfg.StepDownPod, res.NewLeader, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if time.Since(start) > stepDownWait {
			return fail(schemas.ExitLeader, nil, "pod %s stepped down, but no other node was active within %s", cfg.StepDownPod, stepDownWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// scheme is how the cluster's pods answer: https when the Job says the
// cluster has TLS (TLS_CA_PATH or TLS_SERVER_NAME), else http.
func (r *run) scheme() string {
	if r.cfg.TLSCAPath != "" || r.cfg.TLSServerName != "" {
		return "https"
	}
	return "http"
}

// podOf names the pod at an OpenBao address, or returns the address when
// the API cannot tell.
func (r *run) podOf(ctx context.Context, addr string) string {
	if r.kube != nil {
		if name, err := r.kube.PodAt(ctx, r.cfg.Namespace, addr); err == nil && name != "" {
			return name
		}
	}
	return addr
}
