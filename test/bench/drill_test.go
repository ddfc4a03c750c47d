package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// idleWindowEnv overrides how long BenchmarkIdleDrills watches the idle
// reconciler (a Go duration; default idleWindow).
const (
	idleWindowEnv = "OPENBAO_RESTORE_BENCH_IDLE_WINDOW"
	idleWindow    = time.Minute
	drillCtrl     = "drill-xopenbaorestoredrill"
)

// BenchmarkIdleDrills measures what drills cost while they wait for their
// next run: N drills on a weekly schedule, each with its own source
// cluster, and the reconciler (a fresh child, as in the other benchmarks)
// left alone for a window once every drill shows status.nextRunAt. It
// reports the reconciler's CPU and API requests over the window, per hour;
// N=0 is the reconciler's own idle cost, so the drills' is the difference.
// Then each source cluster's status changes once, as openbao-operator
// writes it (a new backup, say): every drill of the cluster wakes, and the
// benchmark reports the CPU and API requests of one such wake.
func BenchmarkIdleDrills(b *testing.B) {
	env := testbed.Shared(b)
	kc := prepare(b, env)
	window := idleWindow
	if v := os.Getenv(idleWindowEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("%s=%q: %v", idleWindowEnv, v, err)
		}
		window = d
	}
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var idle, wake drillCost
			for range b.N {
				i, w := idleDrills(b, env, kc, n, window)
				idle.add(i)
				wake.add(w)
			}
			perHour := float64(time.Hour) / float64(window) / float64(b.N)
			b.ReportMetric(idle.cpu*perHour*1000, "cpu-ms/h")
			b.ReportMetric(idle.load.total()*perHour, "req/h")
			if n > 0 {
				wakes := wake.load.reconciles[drillCtrl]
				b.ReportMetric(wake.cpu*1000/max(wakes, 1), "cpu-ms/wake")
				b.ReportMetric(wake.load.total()/max(wakes, 1), "req/wake")
			}
			b.Logf("N=%d, idle for %s x %d: reconciler cpu %.3fs, %s", n, window, b.N, idle.cpu, idle.load)
			if n > 0 {
				b.Logf("N=%d, one status change of each source cluster: reconciler cpu %.3fs, %s", n, wake.cpu, wake.load)
			}
		})
	}
}

// drillCost is the reconciler's CPU seconds and counters over a span.
type drillCost struct {
	cpu  float64
	load load
}

func (c *drillCost) add(o drillCost) {
	c.cpu += o.cpu
	c.load.add(o.load)
}

// idleDrills runs one measurement: n drills and their clusters in a new
// namespace, a fresh reconciler, the idle window, then one wake each.
func idleDrills(tb testing.TB, env *testbed.Env, kubeconfig string, n int, window time.Duration) (idle, wake drillCost) {
	tb.Helper()
	timer(tb, false)
	ctx := context.Background()
	ns := createNamespace(tb, env, fmt.Sprintf("bench-idle%d-", n))
	defer cleanup(tb, env, ns)
	spec := testbed.ExampleSpec(tb, "claim-drill.yaml")
	if err := parallel(n, func(i int) error {
		cl := fmt.Sprintf("c%03d", i)
		if _, err := env.CreateClusterObject(ctx, ns, cl, 1); err != nil {
			return err
		}
		s := runtime.DeepCopyJSON(spec)
		_ = unstructured.SetNestedField(s, cl, "source", "cluster")
		s["claimRef"] = map[string]any{"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.DrillClaimKind,
			"name": fmt.Sprintf("d%03d", i), "namespace": ns}
		xr := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
		xr.SetGroupVersionKind(schemas.LegacyDrillXR)
		xr.SetName(fmt.Sprintf("%s-d%03d", ns, i))
		xr.SetLabels(map[string]string{runLabel: ns})
		return env.Client.Create(ctx, xr)
	}); err != nil {
		tb.Fatal(err)
	}
	ch := startChild(tb, kubeconfig, ns, noHealth)
	testbed.Eventually(tb, 2*time.Minute, fmt.Sprintf("%d drills scheduled", n), func() (bool, error) {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(schemas.LegacyDrillXR.GroupVersion().WithKind(schemas.LegacyDrillXR.Kind + "List"))
		if err := env.Client.List(ctx, l); err != nil {
			return false, err
		}
		got := 0
		for _, d := range l.Items {
			if next, _, _ := unstructured.NestedString(d.Object, "status", "nextRunAt"); next != "" && strings.HasPrefix(d.GetName(), ns+"-") {
				got++
			}
		}
		return got == n, fmt.Errorf("%d of %d", got, n)
	})
	// Let the first reconciles' own writes come back through the watch.
	time.Sleep(2 * time.Second)

	measure := func(f func()) drillCost {
		cpu0, _, err := procStats(ch.PID())
		if err != nil {
			tb.Fatal(err)
		}
		c0 := ch.counters(tb)
		f()
		cpu1, _, err := procStats(ch.PID())
		if err != nil {
			tb.Fatal(err)
		}
		return drillCost{cpu: cpu1 - cpu0, load: loadBetween(c0, ch.counters(tb))}
	}
	timer(tb, true)
	idle = measure(func() { time.Sleep(window) })
	if n == 0 {
		timer(tb, false)
		return idle, wake
	}
	wake = measure(func() {
		before := ch.counters(tb)
		// A new backup of each cluster, as openbao-operator's backup
		// manager reports it.
		stamp := time.Now().UTC().Format("20060102-150405")
		if err := parallel(n, func(i int) error {
			c := &unstructured.Unstructured{}
			c.SetGroupVersionKind(schemas.ClusterGVK)
			c.SetNamespace(ns)
			c.SetName(fmt.Sprintf("c%03d", i))
			patch := fmt.Sprintf(`{"status":{"backup":{"latestSnapshot":{"key":"clusters/c%03d/%s.snap","size":1024,"version":"2.4.0"}}}}`, i, stamp)
			return env.Client.Status().Patch(ctx, c, client.RawPatch(types.MergePatchType, []byte(patch)))
		}); err != nil {
			tb.Fatal(err)
		}
		testbed.Eventually(tb, time.Minute, "every drill woken", func() (bool, error) {
			got := loadBetween(before, ch.counters(tb)).reconciles[drillCtrl]
			return got >= float64(n), fmt.Errorf("%.0f of %d reconciles", got, n)
		})
		time.Sleep(time.Second) // the last reconciles' requests counted
	})
	timer(tb, false)
	return idle, wake
}
