package testbed_test

import (
	"context"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
)

func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{CRDDirs: []string{testbed.TestCRDs, testbed.ReconcilerCRDs}})
}

func job(ns, name string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "executor", Image: "example.invalid/executor"}},
			}},
		},
	}
}

func TestJobCompletes(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	j := job(ns, "ok")
	if err := env.Client.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	t.Logf("Complete after %s", env.WaitJob(t, ns, j.Name, batchv1.JobComplete, time.Minute))
}

func TestJobPodFailsWithExitCodeAndMessage(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	const msg = `{"submitted":false,"exitCode":10,"message":"leader not found {{ yet }}"}`
	env.JobPodStage(t, ns, "fails", 10, msg)
	j := job(ns, "fails")
	ctx := context.Background()
	if err := env.Client.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	t.Logf("Failed after %s", env.WaitJob(t, ns, j.Name, batchv1.JobFailed, time.Minute))

	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"batch.kubernetes.io/job-name": "fails"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods.Items))
	}
	p := pods.Items[0]
	if p.Status.Phase != corev1.PodFailed || len(p.Status.ContainerStatuses) != 1 {
		t.Fatalf("pod status: %+v", p.Status)
	}
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 10 || term.Message != msg {
		t.Fatalf("terminated state: %+v", term)
	}
}

func TestJobPodSucceedsWithMessage(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	const msg = `{"submitted":true,"exitCode":0,"snapshotKey":"a/b.snap","snapshotSize":42}`
	env.JobPodStage(t, ns, "done", 0, msg)
	j := job(ns, "done")
	ctx := context.Background()
	if err := env.Client.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	env.WaitJob(t, ns, j.Name, batchv1.JobComplete, time.Minute)
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"batch.kubernetes.io/job-name": "done"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods.Items))
	}
	term := pods.Items[0].Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 0 || term.Message != msg {
		t.Fatalf("terminated state: %+v", term)
	}
}

// The fixture cluster's StatefulSet stands in for its OpenBao pods: they
// become Ready on the kwok node, and a pod deleted with UID and
// resourceVersion preconditions (as the restart after a restore does) comes
// back Ready as a new pod.
func TestOpenBaoClusterPodsRestart(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	env.OpenBaoCluster(t, ns, "bao", 3)
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(testbed.ClusterPodLabels("bao"))); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("want 3 pods, got %d", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.Spec.NodeName != testbed.NodeName {
			t.Errorf("pod %s: ip %q node %q", p.Name, p.Status.PodIP, p.Spec.NodeName)
		}
	}
	old := pods.Items[0]
	start := time.Now()
	if err := env.Client.Delete(ctx, &old, client.Preconditions{UID: &old.UID, ResourceVersion: &old.ResourceVersion}); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 60*time.Second, "a new Ready "+old.Name, func() (bool, error) {
		var p corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(&old), &p); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if p.UID == old.UID {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("pod %s replaced and Ready after %s", old.Name, time.Since(start))
}

// The fixture CRDs are installed and the OpenBaoCluster status subresource
// holds the lock fields.
func TestFixtureCRDs(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	err := env.ApplyYAML(ctx, []byte(`
apiVersion: openbao.org/v1alpha1
kind: OpenBaoCluster
metadata: {name: c1, namespace: `+ns+`}
spec: {replicas: 3, profile: Development, tls: {enabled: true}, backup: {image: x}, selfInit: {oidc: {enabled: true}}}
`))
	if err != nil {
		t.Fatal(err)
	}
}

// The stand-in operator strips the maintenance annotation from a managed
// pod unless the cluster's spec.maintenance.enabled is true.
func TestStripMaintenance(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	c := env.OpenBaoCluster(t, ns, "prod", 1)
	env.StripMaintenance(t, ns)
	annotate := func() {
		t.Helper()
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+testbed.MaintenanceAnnotation+`":"true"}}}`))
		if err := env.Client.Patch(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prod-0"}}, patch); err != nil {
			t.Fatal(err)
		}
	}
	annotation := func() string {
		var p corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "prod-0"}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Annotations[testbed.MaintenanceAnnotation]
	}

	annotate()
	testbed.Eventually(t, 10*time.Second, "the annotation stripped", func() (bool, error) { return annotation() == "", nil })

	if err := env.Client.Patch(ctx, c, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"maintenance":{"enabled":true}}}`))); err != nil {
		t.Fatal(err)
	}
	annotate()
	time.Sleep(2 * time.Second)
	if annotation() != "true" {
		t.Error("the annotation was stripped although spec.maintenance.enabled is true")
	}
}
