package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// readCheck is a drill's read check (schemas.ModeReadCheck): after a
// drill's restore, it logs in to the restored cluster with the drill's
// token (one of the source cluster's, valid on the restored data) and
// reads each path named; each must exist and hold data. It restores
// nothing. Exit 6 names every path that failed.
func (r *run) readCheck(ctx context.Context, env func(string) string) error {
	cfg := r.cfg
	if err := r.inClusterKube(env); err != nil {
		return err
	}
	var addr string
	err := r.retry(ctx, "finding the active OpenBao node", func() (err error) {
		addr, _, err = r.bao.findLeader(ctx, r.candidates(ctx))
		return err
	}, schemas.ExitLeader)
	if err != nil {
		return err
	}
	token := cfg.Token
	if cfg.AuthMethod == "jwt" {
		if err := r.retry(ctx, "JWT login", func() (err error) { token, err = r.bao.loginJWT(ctx, addr, cfg.JWTRole, cfg.JWT); return err }); err != nil {
			return err
		}
	}
	var failed []string
	for _, p := range cfg.ReadPaths {
		c := schemas.PathCheck{Path: p}
		var code int
		var body []byte
		err := r.retry(ctx, "GET "+p, func() (err error) {
			code, body, err = r.bao.do(ctx, http.MethodGet, addr, "/v1/"+p, token, nil, 10*time.Second)
			return err
		})
		switch {
		case err != nil:
			c.Message = err.Error()
		case code == http.StatusNotFound:
			c.Message = "not found: the snapshot does not hold it"
		case code == http.StatusForbidden:
			c.Message = "permission denied: the drill's token may not read it on the restored data (" + baoErrors(body) + ")"
		case code != http.StatusOK:
			c.Message = fmt.Sprintf("HTTP %d %s", code, baoErrors(body))
		default:
			c.OK, c.Message = hasData(body)
		}
		r.tm.ReadCheck = append(r.tm.ReadCheck, c)
		r.logf("read %s: %t, %s", p, c.OK, c.Message)
		if !c.OK {
			failed = append(failed, p+" ("+c.Message+")")
		}
	}
	if len(failed) > 0 {
		return fail(schemas.ExitVerification, nil, "the read check failed at %d of %d path(s) on %s: %s", len(failed), len(cfg.ReadPaths), addr, strings.Join(failed, "; "))
	}
	r.tm.Message = fmt.Sprintf("read %d path(s) on %s, each with data: %s", len(cfg.ReadPaths), addr, strings.Join(cfg.ReadPaths, ", "))
	return nil
}

// hasData reports whether a read's answer holds data: KV v2's data.data,
// else the data itself, non-empty.
func hasData(body []byte) (bool, string) {
	var resp struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return false, "the answer is not JSON: " + err.Error()
	}
	data := resp.Data
	if inner, ok := data["data"].(map[string]any); ok && data["metadata"] != nil {
		data = inner
	}
	if len(data) == 0 {
		return false, "it exists but holds no data"
	}
	return true, fmt.Sprintf("%d key(s)", len(data))
}
