package executor

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// confirm waits out OpenBao's post-restore pause, then reads the node's
// seal state and cluster_id: what the restore did.
func (r *run) confirm(ctx context.Context, addr string) error {
	r.logf("waiting for %s to answer again (OpenBao pauses about 5 s after a restore)", addr)
	select {
	case <-ctx.Done():
		return fail(schemas.ExitUnconfirmed, ctx.Err(), "interrupted after OpenBao accepted the snapshot, before it answered again")
	case <-time.After(r.opts.SettleDelay):
	}
	deadline := time.Now().Add(r.opts.AfterTimeout)
	var h *health
	for {
		var err error
		h, err = r.bao.health(ctx, addr)
		if err == nil && h.Code != http.StatusTooManyRequests && (h.Code == http.StatusOK || h.Sealed || !h.Initialized) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(schemas.ExitUnconfirmed, nil, "OpenBao accepted the snapshot, but %s did not answer as active or sealed within %s", addr, r.opts.AfterTimeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
	sealed := h.Sealed
	r.tm.Sealed = &sealed
	r.tm.ClusterIDAfter = h.ClusterID
	var notes []string
	if r.cfg.FreshTarget {
		return r.confirmFresh(ctx, addr, h)
	}
	if h.ClusterID != "" && r.tm.ClusterIDBefore != "" && h.ClusterID != r.tm.ClusterIDBefore {
		notes = append(notes, fmt.Sprintf("WARNING: the cluster's identity CHANGED: cluster_id %s before, %s after: the snapshot came from another cluster, whose data, tokens and identity are now in place", r.tm.ClusterIDBefore, h.ClusterID))
	}
	if sealed {
		notes = append(notes, "The node SEALED itself after the restore (a snapshot from a cluster with another seal key): unseal it with the source cluster's keys")
	}
	if r.cfg.ExpectedClusterID != "" && h.ClusterID != "" && h.ClusterID != r.cfg.ExpectedClusterID {
		return fail(schemas.ExitVerification, nil, "restored, but the cluster_id is now %s while %s pins %s. %s", h.ClusterID, schemas.EnvExpectedClusterID, r.cfg.ExpectedClusterID, strings.Join(notes, ". "))
	}
	r.tm.Message = fmt.Sprintf("restored %s (%d bytes, sha256:%s) into %s via %s", r.tm.SnapshotKey, r.tm.SnapshotSize, r.tm.SHA256, addr, r.cfg.RestoreEndpoint())
	if s := r.tm.Safety; s != nil && s.Skipped == "" {
		r.tm.Message += fmt.Sprintf(". Safety snapshot of the state before: %s (%d bytes, sha256:%s)", s.URL, s.Size, s.SHA256)
	} else if s != nil {
		notes = append(notes, "WARNING: no safety snapshot was taken: "+s.Skipped)
	}
	if len(notes) > 0 {
		r.tm.Message += ". " + strings.Join(notes, ". ")
	}
	return nil
}
