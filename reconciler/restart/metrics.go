package restart

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// restartedPods counts the OpenBao pods deleted by the follow-through,
// served on the manager's metrics endpoint.
var restartedPods = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "openbao_restore_restarted_pods_total",
	Help: "OpenBao pods deleted (with UID preconditions) to restart them after a restore.",
})

func init() { metrics.Registry.MustRegister(restartedPods) }
