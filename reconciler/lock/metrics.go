package lock

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the lock, served with controller-runtime's own (reconcile
// errors and durations among them) on the manager's metrics endpoint.
var (
	// lockWait is how long requests waited, from creation to acquisition:
	// the queueing cost of one-restore-at-a-time and of Backup/Upgrade locks.
	lockWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "openbao_restore_lock_wait_seconds",
		Help:    "Time from a LockRequest's creation to its acquisition of the cluster's operation lock.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 14), // 10 ms .. ~1.6 h
	})
	acquisitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "openbao_restore_lock_acquisitions_total",
		Help: "Operation locks taken, by whether a foreign Backup or Upgrade lock was overridden.",
	}, []string{"override"})
	// conflicts counts compare-and-swap losses: each is a re-read and a
	// new decision, never a lost write.
	conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "openbao_restore_lock_cas_conflicts_total",
		Help: "Compare-and-swap writes of status.operationLock refused because the cluster had changed.",
	})
	// taken and retaken count what writers that do not compare-and-swap
	// did to a held lock: how often to expect LockTaken.
	taken = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "openbao_restore_lock_taken_total",
		Help: "Operation locks found taken from a request that held them, by a writer that does not compare-and-swap.",
	})
	retaken = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "openbao_restore_lock_retaken_total",
		Help: "Operation locks taken back by a request they had been taken from, or cleared under.",
	})
)

func init() {
	metrics.Registry.MustRegister(lockWait, acquisitions, conflicts, taken, retaken)
}
