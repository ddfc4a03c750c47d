// Package xrkinds sets up what concerns the XR kinds (schemas.XRs) once the
// API serves them: the Configuration installs the XRD, and with it the XR
// kinds' CRDs, possibly after the reconciler has started. It also reads
// what Crossplane says of an XR (CircuitOpen).
package xrkinds

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openbao-restore/openbao-restore/schemas"
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

// CircuitOpen reports whether Crossplane says it stopped watching the XR
// closely: its Responsive condition False. Crossplane's watch circuit
// breaker (v2.4: a burst of 100 tokens, two per update, refilled at one a
// second) then drops the XR's watch events for five minutes, letting one
// through every 30 seconds; with realtime compositions it otherwise only
// polls.
func CircuitOpen(xr *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == schemas.CondResponsive && m["status"] == "False" {
			return true
		}
	}
	return false
}
