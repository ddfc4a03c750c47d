package executor

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A fresh target (schemas.EnvFreshTarget) is a cluster created for this
// restore: before it, its identity is its own, never the snapshot's; after
// it, every voter must show the snapshot's identity, the expected version
// and one active node, with no person to look.

// pinCluster checks the cluster pin before the snapshot is sent: the
// cluster's identity must be the snapshot's, or for a fresh target must
// be set and not yet the snapshot's.
func (r *run) pinCluster(addr, id string) error {
	pin := r.cfg.ExpectedClusterID
	switch {
	case r.cfg.FreshTarget && id == "":
		return fail(schemas.ExitVerification, nil, "the new cluster at %s reports no cluster_id: it is not initialised; refusing to restore", addr)
	case r.cfg.FreshTarget && pin != "" && id == pin:
		return fail(schemas.ExitVerification, nil, "the new cluster at %s already has cluster_id %s, the snapshot's (%s): a fresh target starts with an identity of its own, so this one is not fresh; refusing to restore", addr, id, schemas.EnvExpectedClusterID)
	case !r.cfg.FreshTarget && pin != "" && id != pin:
		return fail(schemas.ExitVerification, nil, "the cluster at %s has cluster_id %s, but %s pins %s: refusing to restore", addr, id, schemas.EnvExpectedClusterID, pin)
	}
	return nil
}

// confirmFresh confirms a restore into a new cluster: the node that took it
// has the snapshot's identity (the pin, or else not the bootstrap one),
// then every voter reports that identity, the expected version, and
// exactly one is active.
func (r *run) confirmFresh(ctx context.Context, addr string, h *health) error {
	boot := r.tm.ClusterIDBefore
	if h.Sealed {
		return fail(schemas.ExitVerification, nil, "restored into the new cluster, but %s SEALED itself: the template's seal cannot open the snapshot's keys; give the new cluster the source's seal", addr)
	}
	want := r.cfg.ExpectedClusterID
	switch {
	case want != "" && h.ClusterID != want:
		return fail(schemas.ExitVerification, nil, "restored into the new cluster, but its cluster_id is %s while %s pins %s", h.ClusterID, schemas.EnvExpectedClusterID, want)
	case want == "" && (h.ClusterID == "" || h.ClusterID == boot):
		return fail(schemas.ExitVerification, nil, "restored into the new cluster, but its cluster_id is still its own (%s): the snapshot's identity did not take", boot)
	}
	want = h.ClusterID
	deadline := time.Now().Add(r.opts.AfterTimeout)
	var last string
	for {
		var ok bool
		if ok, last = r.votersAgree(ctx, want); ok {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(schemas.ExitUnconfirmed, nil, "restored into the new cluster (cluster_id %s), but its voters did not all agree within %s: %s", want, r.opts.AfterTimeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.tm.Message = fmt.Sprintf("restored %s (%d bytes, sha256:%s) into the new cluster via %s: it took the snapshot's identity (cluster_id %s, was %s); %s",
		r.tm.SnapshotKey, r.tm.SnapshotSize, r.tm.SHA256, r.cfg.RestoreEndpoint(), want, boot, last)
	return nil
}

// votersAgree reads every voter's sys/health: each must answer with the
// cluster_id want and the expected version, and exactly one be active.
func (r *run) votersAgree(ctx context.Context, want string) (bool, string) {
	var active, problems []string
	addrs := r.candidates(ctx)
	for _, a := range addrs {
		h, err := r.bao.health(ctx, a)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", a, err))
			continue
		case h.Sealed || !h.Initialized:
			problems = append(problems, fmt.Sprintf("%s: sealed %t, initialized %t", a, h.Sealed, h.Initialized))
			continue
		case h.ClusterID != want:
			problems = append(problems, fmt.Sprintf("%s: cluster_id %s", a, h.ClusterID))
		case r.cfg.ExpectedVersion != "" && strings.TrimPrefix(h.Version, "v") != strings.TrimPrefix(r.cfg.ExpectedVersion, "v"):
			problems = append(problems, fmt.Sprintf("%s: version %s, want %s", a, h.Version, r.cfg.ExpectedVersion))
		}
		if h.Code == http.StatusOK && !h.Standby {
			active = append(active, a)
		}
	}
	if len(active) != 1 {
		problems = append(problems, fmt.Sprintf("%d active nodes (%s), want one", len(active), strings.Join(active, ", ")))
	}
	if len(problems) > 0 {
		return false, strings.Join(problems, "; ")
	}
	return true, fmt.Sprintf("all %d voter(s) report it, version %s, one active", len(addrs), r.cfg.ExpectedVersion)
}
