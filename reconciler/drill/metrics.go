package drill

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The drills' metrics, beside openbao-operator's restore-test ones: whether
// the last run passed, when one last passed, and the time to recover.
var (
	success = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "openbao_restore_drill_success",
		Help: "1 if the drill's last run passed, 0 if it failed.",
	}, []string{"namespace", "drill"})
	lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "openbao_restore_drill_last_success_timestamp_seconds",
		Help: "When the drill's last passing run ended (Unix seconds).",
	}, []string{"namespace", "drill"})
	timeToRecover = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "openbao_restore_drill_time_to_recover_seconds",
		Help:    "A passing run's time to recover: from its start to its checks verified (new cluster up, restored, read).",
		Buckets: prometheus.ExponentialBuckets(5, 1.6, 14), // 5 s .. ~33 min
	}, []string{"namespace", "drill"})
)

func init() {
	metrics.Registry.MustRegister(success, lastSuccess, timeToRecover)
}

// observe records a run that just ended.
func observe(ns, drill string, run Run, last *metav1.Time) {
	v := 0.0
	if run.Outcome == OutcomePassed {
		v = 1
		if run.TimeToRecoverSeconds != nil {
			timeToRecover.WithLabelValues(ns, drill).Observe(*run.TimeToRecoverSeconds)
		}
	}
	success.WithLabelValues(ns, drill).Set(v)
	if last != nil {
		lastSuccess.WithLabelValues(ns, drill).Set(float64(last.Time.Truncate(time.Second).Unix()))
	}
}
