package testbed

import (
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The controllers, caches and clients the test bed starts log through
// controller-runtime's logger. Unset, controller-runtime prints a stack
// trace ("log.SetLogger(...) was never called") into the test's output
// and the demo's; the test bed has nowhere better for those logs (each
// test says what it waits for), so they are dropped.
func init() { ctrl.SetLogger(logr.Discard()) }

// Manager is a controller-runtime manager for one namespace, as cfg's
// user, with the test bed's scheme and no metrics or probe endpoints. The
// caller registers its reconcilers and starts it.
func (e *Env) Manager(t testing.TB, cfg *rest.Config, ns string) ctrl.Manager {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 e.Scheme,
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}
