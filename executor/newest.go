package executor

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A restore with no key, whose cluster reports no newest backup, restores
// the newest object under the target's path prefix (safety snapshots
// aside). It is chosen once and recorded on the lock request before it is
// read, so that a retried pod restores the same object, and the object
// must still have the version it had when chosen.

// maxListed bounds the objects listed under a prefix.
const maxListed = 100000

// chooseNewest sets the key to restore: the recorded choice, or the newest
// object under the path prefix, recorded first (rec may be nil: a dry run
// records nothing).
func (r *run) chooseNewest(ctx context.Context, src Source, rec Recorder) error {
	prefix := strings.Trim(r.cfg.PathPrefix, "/") + "/"
	safety := prefix + "safety/"
	pick := func() (Chosen, error) {
		var es []Entry
		err := r.retry(ctx, "LIST "+src.URL(prefix), func() (err error) { es, err = src.List(ctx, prefix, maxListed); return err })
		if err != nil {
			return Chosen{}, err
		}
		var best *Entry
		for i, e := range es {
			if strings.HasPrefix(e.Key, safety) || strings.HasSuffix(e.Key, "/") {
				continue
			}
			if best == nil || e.Modified.After(best.Modified) || e.Modified.Equal(best.Modified) && e.Key > best.Key {
				best = &es[i]
			}
		}
		if best == nil {
			return Chosen{}, fail(schemas.ExitSnapshot, nil, "nothing to restore under %s (safety snapshots under %s aside): set spec.source.key", src.URL(prefix), safety)
		}
		r.logf("the newest object under %s is %s (%d bytes, modified %s), of %d listed", src.URL(prefix), best.Key, best.Size, best.Modified.UTC().Format(time.RFC3339), len(es))
		return Chosen{Key: best.Key, ETag: best.ETag, Size: best.Size, ChosenAt: metav1.NewTime(time.Now().UTC().Truncate(time.Second))}, nil
	}
	var chosen Chosen
	var err error
	if rec != nil {
		chosen, err = rec.Choose(ctx, pick)
	} else {
		chosen, err = pick()
	}
	if err != nil {
		return err
	}
	r.cfg.Key, r.chosen = chosen.Key, &chosen
	r.tm.SnapshotKey = chosen.Key
	r.logf("restoring %s, chosen at %s as the newest under %s", src.URL(chosen.Key), chosen.ChosenAt.UTC().Format(time.RFC3339), src.URL(prefix))
	return nil
}

// sameAsChosen checks that the object still is the one chosen.
func (r *run) sameAsChosen(url string, info ObjectInfo) error {
	c := r.chosen
	if c == nil || c.ETag == "" || info.ETag == "" || c.ETag == info.ETag {
		return nil
	}
	return fail(schemas.ExitSnapshot, nil, "%s changed since it was chosen as the newest snapshot (version %s then, %s now): not restoring another object than the one chosen; delete this restore and create a new one", url, c.ETag, info.ETag)
}

// Choose keeps the first choice in memory.
func (m *MemoryRecorder) Choose(_ context.Context, pick func() (Chosen, error)) (Chosen, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Chosen != nil {
		return *m.Chosen, nil
	}
	c, err := pick()
	if err == nil {
		m.Chosen = &c
	}
	return c, err
}

// Choose writes the choice on the lock request's status.chosen with the
// request's resourceVersion, unless one is there: on a conflict it reads
// again, and takes a choice another pod wrote meanwhile.
func (k *KubeAPI) Choose(ctx context.Context, pick func() (Chosen, error)) (Chosen, error) {
	var c *Chosen
	for attempt := 0; ; attempt++ {
		lr, err := k.get(ctx)
		if err != nil {
			return Chosen{}, err
		}
		if err := k.verify(lr); err != nil {
			return Chosen{}, err
		}
		if lr.Status.Chosen != nil {
			return *lr.Status.Chosen, nil
		}
		if c == nil {
			p, err := pick()
			if err != nil {
				return Chosen{}, err
			}
			c = &p
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": lr.ResourceVersion},
			"status":   map[string]any{"chosen": c},
		})
		if err != nil {
			return Chosen{}, err
		}
		code, out, err := k.call(ctx, http.MethodPatch, k.url(true), patch, "application/merge-patch+json")
		if err != nil {
			return Chosen{}, err
		}
		if code == http.StatusConflict && attempt < 5 {
			continue
		}
		return *c, kubeStatus(code, out, "record the chosen snapshot on lockrequest "+k.Namespace+"/"+k.Name)
	}
}
