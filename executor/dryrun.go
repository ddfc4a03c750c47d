package executor

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// dryRun reads the whole object through the same checks as a restore's
// body (byte count, digest pin, archive) and sends it nowhere. It holds no
// lock and writes no record, so it never blocks a backup or an upgrade;
// the report is the termination message's Checks.
func (r *run) dryRun(ctx context.Context, src Source, info ObjectInfo, addr string) error {
	cfg := r.cfg
	err := r.retry(ctx, "reading the snapshot", func() error {
		body, err := src.Open(ctx, cfg.Key, info)
		if err != nil {
			return err
		}
		defer func() { _ = body.Close() }()
		var hb *holdBack
		hb = newHoldBack(body, info.Size, r.opts.HoldBack, cfg.ExpectedDigest, func(sum string, _ int64) error {
			r.checked(sum, &hb.info)
			return nil
		})
		defer hb.Close()
		stop := progress(r.logf, "dry run: reading", info.Size, hb.n.Load, r.opts.ProgressEvery)
		_, err = io.Copy(io.Discard, hb)
		stop()
		if e := hb.Err(); e != nil {
			return e
		}
		return err
	})
	if err != nil {
		return err
	}
	r.pass(fmt.Sprintf("read whole: %d bytes, sha256:%s%s; %s", info.Size, r.tm.SHA256, digestNote(cfg), describeArchive(*r.tm.Archive)), "")
	r.tm.Message = fmt.Sprintf("dry run: every check passed; a restore would send %s (%d bytes, sha256:%s) to %s via %s", r.tm.SnapshotKey, info.Size, r.tm.SHA256, addr, cfg.RestoreEndpoint())
	return nil
}

// inClusterKube sets up the Kubernetes API client that a dry run or a
// step-down uses to list the cluster's pods, with no lock request: in a
// cluster only.
func (r *run) inClusterKube(env func(string) string) error {
	if env("KUBERNETES_SERVICE_HOST") == "" {
		return nil
	}
	kr, err := NewInClusterRecorder(env, r.opts.Paths.KubeDir, r.cfg.Namespace, "", "")
	if err != nil {
		return err
	}
	r.kube = kr
	return nil
}

func digestNote(cfg *Config) string {
	if cfg.ExpectedDigest != "" {
		return " (equal to the pin)"
	}
	return ""
}

// pinsMessage says what the cluster pins checked.
func pinsMessage(cfg *Config) string {
	var got []string
	if cfg.ExpectedClusterID != "" {
		got = append(got, "cluster_id "+cfg.ExpectedClusterID)
	}
	if cfg.ExpectedVersion != "" {
		got = append(got, "version "+cfg.ExpectedVersion)
	}
	if len(got) == 0 {
		return "no cluster pin is set"
	}
	return "the cluster matches the pins: " + strings.Join(got, ", ")
}

func etag(i ObjectInfo) string {
	if i.ETag == "" {
		return ""
	}
	return ", ETag " + i.ETag
}
