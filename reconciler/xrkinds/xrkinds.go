// Package xrkinds sets up what concerns the XR kinds (schemas.XRs) once the
// API serves them: the Configuration installs the XRD, and with it the XR
// kinds' CRDs, possibly after the reconciler has started.
package xrkinds

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Retry is how often Each looks again for kinds not yet served: it waits
// for a CRD to be installed, not for a restore.
const Retry = 15 * time.Second

// Each calls fn once for each of gvks as soon as mapper knows it, and looks
// again every Retry for those it does not know yet. It returns once fn ran
// for every one (nil), when ctx ends (nil), or with fn's first error.
func Each(ctx context.Context, mapper meta.RESTMapper, gvks []schema.GroupVersionKind, fn func(schema.GroupVersionKind) error) error {
	pending := gvks
	for {
		var still []schema.GroupVersionKind
		for _, gvk := range pending {
			if _, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				still = append(still, gvk)
				continue
			}
			if err := fn(gvk); err != nil {
				return err
			}
		}
		if pending = still; len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(Retry):
		}
	}
}
