package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// e2eDrillComposition is the packaged drill Composition with an Input that
// allows the loopback S3 endpoint and names the e2e restore Composition
// for the runs.
const e2eDrillComposition = "openbao-restore-drill-e2e"

// drill is issue 12's restore drill on the real stack: prod reports its
// newest backup (the happy path's snapshot, set by NewestSnapshot); a drill
// checks two paths. A manual trigger starts run 1: Crossplane composes its
// restore of a Disposable new cluster, the stand-in operator bootstraps it,
// the executor restores and confirms it, then the read check logs in with
// prod's token and reads both paths: Passed, with a time to recover. Its
// cluster goes at once (cleanupAfterSeconds 0). Run 2 also checks a path
// written after the backup was taken: ReadCheckFailed, naming it, and its
// cluster goes too; prod is untouched throughout.
func (r *RealBed) drill(t *testing.T) {
	s := r.s
	if r.snap == nil {
		t.Skip("the happy path did not run")
	}
	ctx := context.Background()
	s.e2eDrillComposition(t)
	if err := s.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "drill-read-token"},
		StringData: map[string]string{schemas.KeyToken: r.bao.RootToken}}); err != nil {
		t.Fatal(err)
	}
	prodID := r.bao.Health(t, 0).ClusterID
	d := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": schemas.Group + "/" + schemas.Version, "kind": schemas.DrillClaimKind,
		"metadata": map[string]any{"name": "prod-drill", "namespace": r.ns},
		"spec": map[string]any{
			"compositionRef": map[string]any{"name": e2eDrillComposition},
			"source": map[string]any{"cluster": "prod", "target": map[string]any{"provider": "s3", "endpoint": r.store.URL, "bucket": r.store.Bucket,
				"region": "us-east-1", "usePathStyle": true, "credentialsSecretRef": map[string]any{"name": "backup-s3"}}},
			"schedule":        "0 3 * * 0",
			"clusterTemplate": map[string]any{"version": "2.4.0", "tls": map[string]any{"enabled": true}, "unseal": map[string]any{"type": "static"}},
			"readPaths":       []any{"secret/data/app/db", "secret/data/app/api"},
			"tokenSecretRef":  map[string]any{"name": "drill-read-token"},
		},
	}}
	testbed.Eventually(t, time.Minute, "the drill claim created (its XRD served)", func() (bool, error) {
		err := s.Client.Create(ctx, d.DeepCopy())
		return err == nil, err
	})

	run := func(n int64, wantOutcome, wantReason, wantMessage string) map[string]any {
		name := schemas.RunName("prod-drill", n)
		// Each run's new cluster opens prod's snapshot with prod's static
		// seal key, given as openbao-operator reads a static key.
		var seal corev1.Secret
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "prod-seal"}, &seal); err != nil {
			t.Fatal(err)
		}
		if err := s.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: name + "-unseal-key"}, Data: seal.Data}); err != nil {
			t.Fatal(err)
		}
		xr := s.drillXR(t, r.ns, "prod-drill")
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, schemas.AnnotationRunNow, n)
		if err := s.Client.Patch(ctx, xr, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		t.Logf("e2e: drill prod-drill triggered: run %d", n)
		testbed.Eventually(t, time.Minute, fmt.Sprintf("run %d begun", n), func() (bool, error) {
			x := s.drillXR(t, r.ns, "prod-drill")
			a, _, _ := unstructured.NestedMap(x.Object, "status", "active")
			st, _, _ := unstructured.NestedMap(x.Object, "status")
			return fmt.Sprint(a["run"]) == fmt.Sprint(n), fmt.Errorf("status %v, annotations %v", st, x.GetAnnotations())
		})
		s.bootstrapComposed(t, r.k, r.ns, name)
		var got map[string]any
		progress := ""
		testbed.Eventually(t, 5*time.Minute, fmt.Sprintf("run %d recorded", n), func() (bool, error) {
			x := s.drillXR(t, r.ns, "prod-drill")
			runs, _, _ := unstructured.NestedSlice(x.Object, "status", "runs")
			if len(runs) > 0 {
				if m := runs[0].(map[string]any); fmt.Sprint(m["run"]) == fmt.Sprint(n) {
					got = m
					return true, nil
				}
			}
			// Each step of the run as it is seen, with its time: where a
			// slow run spends it.
			a, _, _ := unstructured.NestedMap(x.Object, "status", "active")
			p := r.runProgress(t, a)
			if open := circuit(x); open != "" {
				p += "; Crossplane's watch circuit is open: " + open
			}
			if p != progress {
				progress = p
				t.Logf("e2e: run %d after %s: %s", n, time.Since(began).Round(time.Millisecond), p)
			}
			return false, fmt.Errorf("active %v", a)
		})
		t.Logf("e2e: run %d: %s (%s) in %s: %s", n, got["outcome"], got["reason"], time.Since(began).Round(time.Millisecond), got["message"])
		if took := time.Since(began); took > 30*time.Second {
			// Slow: what the reconciler and Crossplane said of the drill
			// meanwhile (logged, not failed).
			s.logLines(t, "reconciler", began, "drill")
			s.logLines(t, "crossplane-core", began, "prod-drill")
		}
		if got["outcome"] != wantOutcome || got["reason"] != wantReason || !strings.Contains(fmt.Sprint(got["message"]), wantMessage) {
			t.Errorf("run %d: %v", n, got)
		}
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(schemas.ClusterGVK)
		testbed.Eventually(t, 2*time.Minute, fmt.Sprintf("run %d's cluster gone", n), func() (bool, error) {
			err := s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: name}, c)
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if id := r.bao.Health(t, 0).ClusterID; id != prodID {
			t.Errorf("prod's cluster_id changed: %s, was %s", id, prodID)
		}
		return got
	}

	got := run(1, "Passed", schemas.DrillPassed, "read 2 path(s)")
	if ttr := fmt.Sprint(got["timeToRecoverSeconds"]); ttr == "" || ttr == "0" || ttr == "<nil>" {
		t.Errorf("run 1: no time to recover: %v", got)
	}
	t.Logf("e2e: run 1's time to recover %vs: the new cluster up in %vs, restored in %vs, read in %vs",
		got["timeToRecoverSeconds"], got["bootstrapSeconds"], got["restoreSeconds"], got["checksSeconds"])
	x := s.drillXR(t, r.ns, "prod-drill")
	if last, _, _ := unstructured.NestedString(x.Object, "status", "lastSuccessTime"); last == "" {
		t.Error("status.lastSuccessTime not set")
	}
	// The reconciler's metrics say so too.
	m := s.metrics(t, `namespace="`+r.ns+`"`, "openbao_restore_drill_success", "openbao_restore_drill_last_success_timestamp_seconds",
		"openbao_restore_drill_time_to_recover_seconds_count", "openbao_restore_drill_time_to_recover_seconds_sum")
	t.Logf("e2e: the reconciler's metrics after run 1: %v", m)
	if m["openbao_restore_drill_success"] != 1 || m["openbao_restore_drill_last_success_timestamp_seconds"] == 0 ||
		m["openbao_restore_drill_time_to_recover_seconds_count"] != 1 || m["openbao_restore_drill_time_to_recover_seconds_sum"] == 0 {
		t.Errorf("the drill's metrics after run 1: %v", m)
	}

	// A path the backup does not hold: app/new was written after it. The
	// claim's spec is the XR's.
	claim := d.DeepCopy()
	if err := s.Client.Patch(ctx, claim, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"readPaths":["secret/data/app/db","secret/data/app/new"]}}`))); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, time.Minute, "the new paths on the drill's XR", func() (bool, error) {
		paths, _, _ := unstructured.NestedStringSlice(s.drillXR(t, r.ns, "prod-drill").Object, "spec", "readPaths")
		return len(paths) == 2 && paths[1] == "secret/data/app/new", nil
	})
	run(2, "Failed", schemas.DrillReadCheckFailed, "secret/data/app/new (not found")

	// A damaged backup: prod's newest snapshot as its backup manager
	// recorded it, whose stored object had its last byte flipped by bit
	// rot. The executor refuses it (its archive check or the pinned digest,
	// whichever sees it first) before OpenBao commits anything; prod is
	// not touched, not even restarted.
	c, err := s.getCluster(r.ns, "prod")
	if err != nil {
		t.Fatal(err)
	}
	good, _, _ := unstructured.NestedMap(c.Object, "status", "backup", "latestSnapshot")
	damaged := append([]byte(nil), r.snap...)
	damaged[len(damaged)-1] ^= 0xff
	r.store.Put(t, "clusters/prod/e2e-damaged.snap", damaged)
	bad := runtime.DeepCopyJSON(good)
	bad["key"] = "clusters/prod/e2e-damaged.snap"
	r.setLatest(t, bad)
	pods := s.podUIDs(t, r.ns)
	run(3, "Failed", schemas.DrillRestoreFailed, "exit code 6 (verification failed")
	if after := s.podUIDs(t, r.ns); !reflect.DeepEqual(after, pods) {
		t.Errorf("prod's pods changed during the damaged run: %v, were %v", after, pods)
	}
	if h := s.lockHolder(t, r.ns, "prod"); h != "" {
		t.Errorf("prod's operation lock is held by %s", h)
	}
	t.Logf("e2e: run 3 refused the damaged snapshot; prod's pods, identity and lock untouched")
	r.setLatest(t, good)
	r.serves(t, map[string]string{"app/db": "password-at-snapshot"})
}

// setLatest writes prod's status.backup.latestSnapshot, as openbao-operator's
// backup manager does after a backup.
func (r *RealBed) setLatest(t testing.TB, latest map[string]any) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, "prod's latestSnapshot written", func() (bool, error) {
		c, err := r.s.getCluster(r.ns, "prod")
		if err != nil {
			return false, err
		}
		if err := unstructured.SetNestedMap(c.Object, latest, "status", "backup", "latestSnapshot"); err != nil {
			return false, err
		}
		err = r.s.Client.Status().Update(context.Background(), c)
		return err == nil, err
	})
}

// runProgress says where the drill's active run is: its status.active and
// its restore claim's phase, with the read check's Job when there is one.
func (r *RealBed) runProgress(t testing.TB, active map[string]any) string {
	t.Helper()
	if active == nil {
		return "no active run"
	}
	ctx := context.Background()
	var steps []string
	for _, k := range []string{"startedAt", "upAt", "restoredAt", "endedAt"} {
		if v, ok := active[k]; ok {
			steps = append(steps, fmt.Sprintf("%s %v", k, v))
		}
	}
	claim := &unstructured.Unstructured{}
	claim.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.ClaimKind})
	if name, _ := active["restore"].(string); name != "" {
		if err := r.s.Client.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: name}, claim); err == nil {
			ph, _, _ := unstructured.NestedString(claim.Object, "status", "phase")
			steps = append(steps, "restore "+ph)
		}
	}
	var jobs batchv1.JobList
	if err := r.s.Client.List(ctx, &jobs, client.InNamespace(r.ns), client.MatchingLabels{
		schemas.LabelDrillRun: fmt.Sprint(active["run"]), schemas.LabelJobRole: schemas.JobRoleReadCheck}); err == nil {
		for _, j := range jobs.Items {
			state := "running"
			for _, c := range j.Status.Conditions {
				if c.Status == corev1.ConditionTrue {
					state = string(c.Type)
				}
			}
			steps = append(steps, "check Job "+state)
		}
	}
	return strings.Join(steps, ", ")
}

// drillXR reads the drill claim's XR.
func (s *Stack) drillXR(t testing.TB, ns, claim string) *unstructured.Unstructured {
	t.Helper()
	c := &unstructured.Unstructured{}
	c.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.DrillClaimKind})
	var xr *unstructured.Unstructured
	testbed.Eventually(t, time.Minute, "the drill's XR", func() (bool, error) {
		if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: claim}, c); err != nil {
			return false, err
		}
		name, _, _ := unstructured.NestedString(c.Object, "spec", "resourceRef", "name")
		if name == "" {
			return false, nil
		}
		xr = &unstructured.Unstructured{}
		xr.SetGroupVersionKind(schemas.LegacyDrillXR)
		err := s.Client.Get(context.Background(), client.ObjectKey{Name: name}, xr)
		return err == nil, err
	})
	return xr
}

// e2eDrillComposition copies the packaged drill Composition with the test
// bed's Input: insecure endpoints allowed, the runs on the e2e restore
// Composition.
func (s *Stack) e2eDrillComposition(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	c := &unstructured.Unstructured{}
	c.SetAPIVersion("apiextensions.crossplane.io/v1")
	c.SetKind("Composition")
	testbed.Eventually(t, time.Minute, "the drill Composition", func() (bool, error) {
		err := s.Client.Get(ctx, client.ObjectKey{Name: "xopenbaorestoredrills." + schemas.Group}, c)
		return err == nil, client.IgnoreNotFound(err)
	})
	steps, _, _ := unstructured.NestedSlice(c.Object, "spec", "pipeline")
	for _, st := range steps {
		in, _ := st.(map[string]any)["input"].(map[string]any)
		in["allowInsecureEndpoints"] = true
		in["restoreComposition"] = e2eComposition
	}
	cp := &unstructured.Unstructured{Object: map[string]any{"apiVersion": c.GetAPIVersion(), "kind": c.GetKind(),
		"metadata": map[string]any{"name": e2eDrillComposition}, "spec": c.Object["spec"]}}
	_ = unstructured.SetNestedSlice(cp.Object, steps, "spec", "pipeline")
	if err := s.Client.Create(ctx, cp); err != nil {
		t.Fatal(err)
	}
}

// circuit is the message of the XR's Responsive=False condition: Crossplane
// stopped watching it closely.
func circuit(xr *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Responsive" && m["status"] == "False" {
			return fmt.Sprint(m["message"])
		}
	}
	return ""
}

// logLines logs the lines of a stack process's log since a time (by the
// log's own timestamps, when it has them) that mention what.
func (s *Stack) logLines(t testing.TB, process string, since time.Time, what string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, process+".log"))
	if err != nil {
		t.Logf("e2e: %s's log: %v", process, err)
		return
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, what) {
			continue
		}
		if at, ok := logTime(l); ok && at.Before(since.Add(-time.Second)) {
			continue
		}
		out = append(out, l)
	}
	if len(out) > 60 {
		out = out[len(out)-60:]
	}
	t.Logf("e2e: %s's log on %s since %s:\n%s", process, what, since.UTC().Format(time.RFC3339), strings.Join(out, "\n"))
}

// logTime reads the RFC 3339 timestamp a log line starts with, or carries
// as "ts" or "time" in JSON.
func logTime(l string) (time.Time, bool) {
	if i := strings.IndexAny(l, " \t"); i > 0 {
		if at, err := time.Parse(time.RFC3339Nano, l[:i]); err == nil {
			return at, true
		}
	}
	for _, k := range []string{`"ts":"`, `"time":"`} {
		if _, rest, ok := strings.Cut(l, k); ok {
			v, _, _ := strings.Cut(rest, `"`)
			if at, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return at, true
			}
		}
	}
	return time.Time{}, false
}

// metrics sums the reconciler's samples of each named metric over its
// series whose labels include label.
func (s *Stack) metrics(t testing.TB, label string, names ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for series, v := range testbed.Scrape(t, s.Metrics, names...) {
		if name, labels, _ := strings.Cut(series, "{"); strings.Contains(labels, label) {
			out[name] += v
		}
	}
	return out
}
