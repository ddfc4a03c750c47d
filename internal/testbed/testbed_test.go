package testbed_test

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

func waitJob(t *testing.T, c client.Client, j *batchv1.Job, want batchv1.JobConditionType) time.Duration {
	t.Helper()
	start := time.Now()
	testbed.Eventually(t, 60*time.Second, "job "+j.Name+" "+string(want), func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(j), j); err != nil {
			return false, err
		}
		for _, cond := range j.Status.Conditions {
			if cond.Type == want && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	return time.Since(start)
}

func TestJobCompletes(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	j := job(ns, "ok")
	if err := env.Client.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	t.Logf("Complete after %s", waitJob(t, env.Client, j, batchv1.JobComplete))
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
	t.Logf("Failed after %s", waitJob(t, env.Client, j, batchv1.JobFailed))

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
	waitJob(t, env.Client, j, batchv1.JobComplete)
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

// The StatefulSet stands in for an OpenBaoCluster's pods, so its pods must
// become Ready on the kwok node.
func TestStatefulSetPodsBecomeReady(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	labels := map[string]string{"app.kubernetes.io/instance": "bao"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "bao", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](3),
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "openbao", Image: "example.invalid/openbao"}}},
			},
		},
	}
	ctx := context.Background()
	if err := env.Client.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 60*time.Second, "3 ready replicas", func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(sts), sts)
		return err == nil && sts.Status.ReadyReplicas == 3, err
	})
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.Spec.NodeName != testbed.NodeName {
			t.Errorf("pod %s: ip %q node %q", p.Name, p.Status.PodIP, p.Spec.NodeName)
		}
	}
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
