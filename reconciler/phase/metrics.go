package phase

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the restores' phases, served with controller-runtime's own
// (reconcile errors and durations among them, per controller) on the
// manager's metrics endpoint.
var (
	// transitions counts restores entering each phase (a restore that
	// skips a phase, say Running when its Job finishes at once, is not
	// counted there).
	transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "openbao_restore_phase_transitions_total",
		Help: "Restores that entered each phase, by XR kind.",
	}, []string{"kind", "phase"})
	// duration is from startTime (the Job observed) to completionTime.
	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "openbao_restore_duration_seconds",
		Help:    "Time from a restore's start (its Job observed) to its terminal phase, by terminal phase.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s .. ~4.5 h
	}, []string{"phase"})
)

func init() {
	metrics.Registry.MustRegister(transitions, duration)
}
