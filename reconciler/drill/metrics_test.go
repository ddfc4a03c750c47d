package drill

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestObserve: a passing run sets success to 1, the last success time and
// one time to recover; a failing one sets success to 0 and keeps the last
// success time.
func TestObserve(t *testing.T) {
	ttr := 17.0
	at := metav1.NewTime(time.Date(2026, 12, 6, 3, 0, 17, 0, time.UTC))
	observe("vault", "metrics-test", Run{Outcome: OutcomePassed, TimeToRecoverSeconds: &ttr}, &at)
	if got := testutil.ToFloat64(success.WithLabelValues("vault", "metrics-test")); got != 1 {
		t.Errorf("success %v", got)
	}
	if got := testutil.ToFloat64(lastSuccess.WithLabelValues("vault", "metrics-test")); got != float64(at.Unix()) {
		t.Errorf("last success %v", got)
	}
	if n := testutil.CollectAndCount(timeToRecover); n < 1 {
		t.Errorf("time to recover: %d series", n)
	}
	observe("vault", "metrics-test", Run{Outcome: OutcomeFailed}, &at)
	if got := testutil.ToFloat64(success.WithLabelValues("vault", "metrics-test")); got != 0 {
		t.Errorf("success after a failure %v", got)
	}
}
