package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// fieldOwner is the server-side-apply field manager of objects the harness
// writes, so they never collide with a controller under test.
const fieldOwner = client.FieldOwner("testbed")

// ApplyYAML server-side-applies every object of a multi-document YAML or
// JSON stream.
func (e *Env) ApplyYAML(ctx context.Context, data []byte) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := e.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

// InstallCRDs installs the CRDs found in these directories or files and
// waits until they are Established and served.
func (e *Env) InstallCRDs(t testing.TB, paths ...string) {
	t.Helper()
	_, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{
		Paths:              paths,
		ErrorIfPathMissing: true,
		MaxTime:            time.Minute,
	})
	if err != nil {
		t.Fatalf("install CRDs from %v: %v", paths, err)
	}
}

// JobPodStage makes the pods of one Job end with this exit code and
// termination message, through a kwok Stage deleted when the test ends.
// Exit code 0 makes the pod Succeeded (the default stages already do that,
// but without a message); any other code makes it Failed. The Stage matches
// the Job's name label in its namespace and outweighs the default stages.
func (e *Env) JobPodStage(t testing.TB, namespace, job string, exitCode int32, message string) {
	t.Helper()
	e.PodStage(t, StageName(namespace, job), namespace, "batch.kubernetes.io/job-name", job, exitCode, message)
}

// PodStage makes the running pods of a namespace whose label has this value
// end with this exit code and termination message (see JobPodStage), one
// Stage for any number of pods.
func (e *Env) PodStage(t testing.TB, name, namespace, label, value string, exitCode int32, message string) {
	t.Helper()
	phase, reason := "Failed", "Error"
	if exitCode == 0 {
		phase, reason = "Succeeded", "Completed"
	}
	// The message is quoted by TerminatedStatusTemplate.
	stage := fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: %s
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.namespace', operator: In, values: [%s]}
    - {key: '.metadata.labels["%s"]', operator: In, values: [%s]}
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: ['Running']}
  weight: 10000
  next:
    statusTemplate: |
%s`, name, strconv.Quote(namespace), label, strconv.Quote(value),
		TerminatedStatusTemplate(int(exitCode), reason, message, phase))
	ctx := context.Background()
	if err := e.ApplyYAML(ctx, []byte(stage)); err != nil {
		t.Fatalf("pod stage: %v", err)
	}
	t.Cleanup(func() {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("kwok.x-k8s.io/v1alpha1")
		u.SetKind("Stage")
		u.SetName(name)
		_ = e.Client.Delete(context.Background(), u)
	})
}

// TerminatedStatusTemplate is the body of a kwok Stage's
// next.statusTemplate (indented for it) that ends every container of the
// pod with this exit code, reason and termination message, and the pod in
// this phase. The message goes through the template as a Go string literal,
// which kwok's Quote turns into a JSON (so YAML) string: no content of the
// message can break the template or the YAML.
func TerminatedStatusTemplate(exitCode int, reason, message, phase string) string {
	return fmt.Sprintf(`      {{ $now := Now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: %d
            reason: %s
            message: {{ %s | Quote }}
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: %s
`, exitCode, reason, strconv.Quote(message), phase)
}

// StageName is the name of the Stage JobPodStage creates.
func StageName(namespace, job string) string {
	return dnsLabel("job-"+namespace+"-"+job, 200)
}

// Eventually polls cond every 50 ms until it returns true or the timeout
// passes, then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitJob waits until the Job has the condition (Complete, Failed, ...) and
// returns how long that took.
func (e *Env) WaitJob(t testing.TB, namespace, name string, cond batchv1.JobConditionType, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	Eventually(t, timeout, "job "+namespace+"/"+name+" "+string(cond), func() (bool, error) {
		var j batchv1.Job
		if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &j); err != nil {
			return false, err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == cond && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	return time.Since(start)
}

// ClusterPodLabels are the labels of the stand-in OpenBao pods of a cluster
// and of their StatefulSet, openbao-operator's (openbao.org/cluster is the
// one the reconciler's restart watches by).
func ClusterPodLabels(cluster string) map[string]string {
	return map[string]string{"app.kubernetes.io/name": "openbao", "app.kubernetes.io/instance": cluster,
		"app.kubernetes.io/managed-by": ManagedBy, schemas.LabelOperatorCluster: cluster,
		"openbao.org/component": "openbaocluster", "openbao.org/workload-pool": "voter"}
}

// ReadReplicaPodLabels are the labels of a cluster's read replicas and
// their StatefulSet: ClusterPodLabels in the read-replica pool.
func ReadReplicaPodLabels(cluster string) map[string]string {
	l := ClusterPodLabels(cluster)
	l["openbao.org/workload-pool"] = "read-replica"
	return l
}

// OperatorServerName is the name openbao-operator's own clients verify a
// cluster's certificate under.
func OperatorServerName(cluster string) string { return "openbao-cluster-" + cluster + ".local" }

// OperatorSANs are the names openbao-operator's certificate of a cluster
// carries (ANCHOR): localhost, 127.0.0.1, OperatorServerName, the cluster's
// services and per-pod names, and the namespace's services, in their .svc
// and .svc.cluster.local forms. Never a pod IP.
func OperatorSANs(namespace, cluster string, replicas int) []string {
	sans := []string{"localhost", "127.0.0.1", OperatorServerName(cluster)}
	for _, d := range []string{".svc", ".svc.cluster.local"} {
		sans = append(sans, "*."+cluster+"."+namespace+d, "*."+namespace+d)
		for i := range replicas {
			sans = append(sans, fmt.Sprintf("%s-%d.%s.%s%s", cluster, i, cluster, namespace, d))
		}
	}
	return sans
}

// OpenBaoCluster creates the fixture OpenBaoCluster (the minimal CRD in
// test/crds must be installed) with status.initialized true, and a
// StatefulSet of the same name whose kwok pods stand in for its OpenBao
// pods, and waits until they are all Ready. The pods carry
// ClusterPodLabels; a deleted pod is recreated by the StatefulSet
// controller and becomes Ready again, as after a restart.
func (e *Env) OpenBaoCluster(t testing.TB, namespace, name string, replicas int32) *unstructured.Unstructured {
	t.Helper()
	c := e.OpenBaoClusterObject(t, namespace, name, replicas)
	e.OpenBaoPods(t, namespace, name, replicas)
	return c
}

// OpenBaoClusterObject creates only the fixture OpenBaoCluster
// (CreateClusterObject), or fails the test.
func (e *Env) OpenBaoClusterObject(t testing.TB, namespace, name string, replicas int32) *unstructured.Unstructured {
	t.Helper()
	c, err := e.CreateClusterObject(context.Background(), namespace, name, replicas)
	if err != nil {
		t.Fatalf("OpenBaoCluster: %v", err)
	}
	return c
}

// CreateClusterObject creates the fixture OpenBaoCluster as openbao-operator
// would have it: spec.replicas, TLS on (as the operator always runs it;
// tests whose stand-in pods answer health over plain HTTP name their
// health URL), status.initialized true.
func (e *Env) CreateClusterObject(ctx context.Context, namespace, name string, replicas int32) (*unstructured.Unstructured, error) {
	c := newClusterObject(namespace, name)
	_ = unstructured.SetNestedField(c.Object, int64(replicas), "spec", "replicas")
	_ = unstructured.SetNestedField(c.Object, true, "spec", "tls", "enabled")
	if err := e.Client.Create(ctx, c); err != nil {
		return nil, err
	}
	orig := c.DeepCopy()
	_ = unstructured.SetNestedField(c.Object, true, "status", "initialized")
	return c, e.Client.Status().Patch(ctx, c, client.MergeFrom(orig))
}

// OpenBaoPods creates the StatefulSet that stands in for a cluster's
// OpenBao pods (CreateOpenBaoPods) and waits until they are all Ready.
func (e *Env) OpenBaoPods(t testing.TB, namespace, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	sts, err := e.CreateOpenBaoPods(ctx, namespace, name, replicas)
	if err != nil {
		t.Fatalf("create StatefulSet: %v", err)
	}
	Eventually(t, 60*time.Second, fmt.Sprintf("%d ready pods of %s", replicas, name), func() (bool, error) {
		err := e.Client.Get(ctx, client.ObjectKeyFromObject(sts), sts)
		return err == nil && sts.Status.ReadyReplicas == replicas && sts.Status.ObservedGeneration == sts.Generation, err
	})
}

// CreateOpenBaoPods creates, as the stand-in operator (Operator), what
// openbao-operator makes of a cluster: the StatefulSet whose kwok pods
// stand in for its OpenBao pods (labelled ClusterPodLabels, named
// <name>-<i>), its headless Service <name>, and for three or more voters
// its PodDisruptionBudget <name>-pdb with maxUnavailable 1.
func (e *Env) CreateOpenBaoPods(ctx context.Context, namespace, name string, replicas int32) (*appsv1.StatefulSet, error) {
	op, err := e.Operator()
	if err != nil {
		return nil, err
	}
	labels := ClusterPodLabels(name)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			ServiceName:         name,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "openbao", Image: "openbao/openbao:2.4.0",
					Ports: []corev1.ContainerPort{{Name: "api", ContainerPort: 8200}, {Name: "cluster", ContainerPort: 8201}}}}},
			},
		},
	}
	for _, o := range append(OperatorCompanions(namespace, name, replicas), sts) {
		if err := op.Create(ctx, o); err != nil {
			return nil, err
		}
	}
	return sts, nil
}

// OperatorCompanions are what openbao-operator creates beside a cluster's
// StatefulSet: the headless Service <name> (per-pod DNS
// <sts>-<i>.<name>.<ns>.svc), and for three or more voters the
// PodDisruptionBudget <name>-pdb with maxUnavailable 1. Create them with
// the Operator client.
func OperatorCompanions(namespace, name string, replicas int32) []client.Object {
	labels := ClusterPodLabels(name)
	objs := []client.Object{&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels, PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{{Name: "api", Port: 8200}, {Name: "cluster", Port: 8201}}},
	}}
	if replicas >= 3 {
		objs = append(objs, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-pdb", Namespace: namespace, Labels: labels},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: labels}},
		})
	}
	return objs
}
