package kubelet_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

func TestMain(m *testing.M) {
	testbed.Main(m, testbed.Options{})
}

const helperImage = "harness.test/podhelper:v1"

var helper struct {
	once sync.Once
	path string
	err  error
}

// podHelper builds testdata/podhelper once per test binary.
func podHelper(t *testing.T) string {
	t.Helper()
	helper.once.Do(func() {
		dir, err := os.MkdirTemp("", "podhelper-")
		if err != nil {
			helper.err = err
			return
		}
		helper.path = filepath.Join(dir, "podhelper")
		out, err := exec.Command("go", "build", "-o", helper.path, "./testdata/podhelper").CombinedOutput()
		if err != nil {
			helper.err = fmt.Errorf("go build podhelper: %v\n%s", err, out)
		}
	})
	if helper.err != nil {
		t.Fatal(helper.err)
	}
	return helper.path
}

// start gives the test a harness kubelet of its own on the shared control
// plane (its own node, storage class and subnet), stopped when it ends.
func start(t *testing.T, env *testbed.Env) *kubelet.Kubelet {
	t.Helper()
	return startWith(t, env, map[string]string{"harness.test/podhelper": podHelper(t)})
}

func startWith(t *testing.T, env *testbed.Env, images map[string]string) *kubelet.Kubelet {
	t.Helper()
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	node := "harness-" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(t.Name(), "Test"), "/", "-"))
	k, err := kubelet.Start(context.Background(), env.Config, kubelet.Options{
		Node:   node,
		Images: images,
		Dir:    t.TempDir(),
		Logf: func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			if !done {
				t.Logf(format, args...)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- harness kubelet logs ----\n%s", k.AllLogs())
		}
		k.Stop()
	})
	return k
}

func create(t *testing.T, env *testbed.Env, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func jobPods(t *testing.T, env *testbed.Env, ns, job string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := env.Client.List(context.Background(), &pods, client.InNamespace(ns),
		client.MatchingLabels{"batch.kubernetes.io/job-name": job}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// waitRunning waits until the pod's first container has been started and
// returns how long after since that took.
func waitStarted(t *testing.T, env *testbed.Env, ns string, sel client.MatchingLabels, since time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	testbed.Eventually(t, time.Minute, "a pod started", func() (bool, error) {
		var pods corev1.PodList
		if err := env.Client.List(context.Background(), &pods, client.InNamespace(ns), sel); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].ContainerID != "" {
				took = time.Since(since)
				return true, nil
			}
		}
		return false, nil
	})
	return took
}

// TestJobReadsVolumesAndEnv: a Job's pod reads a Secret and a ConfigMap
// mounted below /etc, its pod IP from the downward API, writes below /etc
// and a termination message, and exits 0; the Job controller completes the
// Job; the host's /etc is untouched.
func TestJobReadsVolumesAndEnv(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	for _, p := range []string{"/etc/harness", "/etc/harness-written"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists on the host before the test", p)
		}
	}
	create(t, env,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns}, StringData: map[string]string{"password": "s3cret"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: ns}, Data: map[string]string{"greeting": "hello"}},
	)
	spec := corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{
			Name: "main", Image: helperImage,
			Args: []string{"job", "/etc/harness/secret/password", "/etc/harness/config/greeting"},
			Env: []corev1.EnvVar{
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "WRITE_DIR", Value: "/etc/harness-written/sub"},
				{Name: "TERMINATION_PATH", Value: "/dev/harness-termination-log"},
			},
			// Not on the host: the kubelet overlays /dev to create it.
			TerminationMessagePath: "/dev/harness-termination-log",
			VolumeMounts: []corev1.VolumeMount{
				{Name: "secret", MountPath: "/etc/harness/secret"},
				{Name: "config", MountPath: "/etc/harness/config"},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr.To[int32](0o400)}}},
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		},
	}
	k.PlaceOnNode(&spec)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "reads", Namespace: ns},
		Spec:       batchv1.JobSpec{BackoffLimit: ptr.To[int32](0), Template: corev1.PodTemplateSpec{Spec: spec}},
	}
	began := time.Now()
	create(t, env, job)
	t.Logf("job created -> process started: %s", waitStarted(t, env, ns, client.MatchingLabels{"batch.kubernetes.io/job-name": "reads"}, began))
	env.WaitJob(t, ns, job.Name, batchv1.JobComplete, time.Minute)
	t.Logf("job created -> Complete: %s", time.Since(began).Round(time.Millisecond))

	pods := jobPods(t, env, ns, job.Name)
	if len(pods) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods))
	}
	p := pods[0]
	if p.Spec.NodeName != k.Node() || p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod on %q in phase %s", p.Spec.NodeName, p.Status.Phase)
	}
	if ip := net.ParseIP(p.Status.PodIP); ip == nil || !k.Subnet().Contains(ip) {
		t.Fatalf("pod IP %q not in %s", p.Status.PodIP, k.Subnet())
	}
	term := p.Status.ContainerStatuses[0].State.Terminated
	want := fmt.Sprintf("password=s3cret greeting=hello podIP=%s hostname=%s", p.Status.PodIP, p.Name)
	if term == nil || term.ExitCode != 0 || term.Reason != "Completed" || term.Message != want {
		t.Fatalf("terminated state %+v, want message %q\nlogs:\n%s", term, want, k.Logs(ns, p.Name))
	}
	for _, path := range []string{"/etc/harness", "/etc/harness-written", "/dev/harness-termination-log"} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s appeared on the host", path)
		}
	}
	if logs := k.Logs(ns, p.Name); !strings.Contains(logs, "/etc/harness/secret/password: s3cret") {
		t.Errorf("logs: %s", logs)
	}
}

// TestJobPodFailurePolicy: a shell pod (a host program, no image mapping)
// exits 3; the Job's podFailurePolicy fails the Job on exit code 3; the
// termination message falls back to the log.
func TestJobPodFailurePolicy(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	spec := corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{
			Name: "main", Image: "busybox", Command: []string{"sh", "-c", "echo failing on purpose >&2; exit 3"},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}},
	}
	k.PlaceOnNode(&spec)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "fails", Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](6),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action:      batchv1.PodFailurePolicyActionFailJob,
				OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{3}},
			}}},
			Template: corev1.PodTemplateSpec{Spec: spec},
		},
	}
	began := time.Now()
	create(t, env, job)
	env.WaitJob(t, ns, job.Name, batchv1.JobFailed, time.Minute)
	t.Logf("job created -> Failed: %s", time.Since(began).Round(time.Millisecond))
	var j batchv1.Job
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(job), &j); err != nil {
		t.Fatal(err)
	}
	reason := ""
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed {
			reason = c.Reason
		}
	}
	if reason != batchv1.JobReasonPodFailurePolicy {
		t.Fatalf("Job failed with reason %q, want %q", reason, batchv1.JobReasonPodFailurePolicy)
	}
	pods := jobPods(t, env, ns, job.Name)
	if len(pods) != 1 {
		t.Fatalf("want 1 pod (the policy stops retries), got %d", len(pods))
	}
	term := pods[0].Status.ContainerStatuses[0].State.Terminated
	if pods[0].Status.Phase != corev1.PodFailed || term == nil || term.ExitCode != 3 || term.Reason != "Error" ||
		term.Message != "failing on purpose\n" {
		t.Fatalf("pod phase %s, terminated %+v", pods[0].Status.Phase, term)
	}
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return string(b), err
}

func readyPod(env *testbed.Env, ns, name string) (*corev1.Pod, bool) {
	var p corev1.Pod
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		return nil, false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
			return &p, true
		}
	}
	return &p, false
}

// TestStatefulSetRestartKeepsData: two pods of a StatefulSet serve HTTP on
// their own pod IPs with a readiness probe and a data directory on a
// volume claim; deleting pod 0 stops its process, the StatefulSet
// controller recreates it, and the new process finds the file the old one
// wrote, at the same IP.
func TestStatefulSetRestartKeepsData(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		Containers: []corev1.Container{{
			Name: "server", Image: helperImage, Args: []string{"serve", "/openbao/data"},
			Env: []corev1.EnvVar{
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			},
			Ports:        []corev1.ContainerPort{{Name: "api", ContainerPort: 8200}},
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/openbao/data"}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("api")}},
				PeriodSeconds: 1,
			},
		}},
	}
	k.PlaceOnNode(&spec)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](2), ServiceName: "web", PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Template:             corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{k.ClaimTemplate("data")},
		},
	}
	began := time.Now()
	create(t, env, sts)
	pods := map[string]*corev1.Pod{}
	testbed.Eventually(t, 90*time.Second, "both pods Ready", func() (bool, error) {
		for _, n := range []string{"web-0", "web-1"} {
			p, ok := readyPod(env, ns, n)
			if !ok {
				return false, nil
			}
			pods[n] = p
		}
		return true, nil
	})
	t.Logf("statefulset created -> 2 pods Ready: %s", time.Since(began).Round(time.Millisecond))
	ip0, ip1 := pods["web-0"].Status.PodIP, pods["web-1"].Status.PodIP
	if ip0 == ip1 || !strings.HasPrefix(ip0, "127.") || !strings.HasPrefix(ip1, "127.") {
		t.Fatalf("pod IPs %s and %s", ip0, ip1)
	}
	for n, p := range pods {
		who, err := get("http://" + net.JoinHostPort(p.Status.PodIP, "8200") + "/whoami")
		if err != nil || !strings.HasPrefix(who, n+" "+p.Status.PodIP) {
			t.Fatalf("%s whoami: %q, %v", n, who, err)
		}
	}
	// Pod DNS names of the StatefulSet resolve through the pods' /etc/hosts.
	peer := "web-0.web." + ns + ".svc.cluster.local"
	if got, err := get("http://" + net.JoinHostPort(ip1, "8200") + "/resolve?name=" + peer); err != nil || got != ip0 {
		t.Fatalf("web-1 resolves %s to %q (%v), want %s", peer, got, err, ip0)
	}
	resp, err := http.Post("http://"+net.JoinHostPort(ip0, "8200")+"/write?name=marker", "text/plain", strings.NewReader("kept"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()

	old := pods["web-0"]
	began = time.Now()
	if err := env.Client.Delete(ctx, old, client.Preconditions{UID: &old.UID}); err != nil {
		t.Fatal(err)
	}
	var fresh *corev1.Pod
	testbed.Eventually(t, 90*time.Second, "web-0 recreated and Ready", func() (bool, error) {
		p, ok := readyPod(env, ns, "web-0")
		if ok && p.UID != old.UID {
			fresh = p
			return true, nil
		}
		return false, nil
	})
	t.Logf("pod web-0 deleted -> replacement Ready: %s", time.Since(began).Round(time.Millisecond))
	if fresh.Status.PodIP != ip0 {
		t.Fatalf("web-0 came back with IP %s, want its old %s (the default allocator keeps it)", fresh.Status.PodIP, ip0)
	}
	got, err := get("http://" + net.JoinHostPort(fresh.Status.PodIP, "8200") + "/read?name=marker")
	if err != nil || got != "kept" {
		t.Fatalf("marker after the restart: %q, %v", got, err)
	}
	logs := k.Logs(ns, "web-0")
	if strings.Count(logs, "listening on") != 2 || !strings.Contains(logs, "SIGTERM: shutting down") {
		t.Fatalf("web-0 logs:\n%s", logs)
	}
}

// TestInClusterClient: the process reads a projected service-account token
// and uses client-go's InClusterConfig (default token mount, the
// apiserver's CA, KUBERNETES_SERVICE_HOST/PORT) to get its own pod.
func TestInClusterClient(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	create(t, env,
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: ns}}},
	)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "incluster", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:      corev1.RestartPolicyNever,
			ServiceAccountName: "default",
			Containers: []corev1.Container{{
				Name: "main", Image: helperImage, Args: []string{"incluster"},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "EXTRA_TOKEN", Value: "/var/run/secrets/extra/token"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "extra", MountPath: "/var/run/secrets/extra"}},
			}},
			Volumes: []corev1.Volume{{Name: "extra", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: "harness-test", ExpirationSeconds: ptr.To[int64](600), Path: "token"}}},
			}}}},
		},
	}
	k.PlaceOnNode(&pod.Spec)
	began := time.Now()
	create(t, env, pod)
	var p corev1.Pod
	testbed.Eventually(t, time.Minute, "the pod finished", func() (bool, error) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	t.Logf("pod created -> Succeeded: %s", time.Since(began).Round(time.Millisecond))
	term := p.Status.ContainerStatuses[0].State.Terminated
	if p.Status.Phase != corev1.PodSucceeded || term == nil || !strings.HasPrefix(term.Message, "uid="+string(p.UID)+" ") {
		t.Fatalf("phase %s, terminated %+v\nlogs:\n%s", p.Status.Phase, term, k.Logs(ns, p.Name))
	}
	if _, err := os.Stat("/var/run/secrets/extra"); err == nil {
		t.Errorf("/var/run/secrets/extra appeared on the host")
	}
}

// TestRestartPolicies: OnFailure restarts a failed container in the same
// pod (an emptyDir survives it) until the Job completes; Always restarts a
// crashing container with back-off and counts the restarts.
func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	ctx := context.Background()
	spec := corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyOnFailure,
		Containers: []corev1.Container{{
			Name: "main", Image: "busybox",
			Command:      []string{"sh", "-c", "if [ -f /scratch/once ]; then echo second; exit 0; fi; touch /scratch/once; echo first; exit 1"},
			VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}},
		}},
		Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
	k.PlaceOnNode(&spec)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "onfailure", Namespace: ns},
		Spec:       batchv1.JobSpec{BackoffLimit: ptr.To[int32](3), Template: corev1.PodTemplateSpec{Spec: spec}},
	}
	crash := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", "echo crashing; exit 7"}}}},
	}
	k.PlaceOnNode(&crash.Spec)
	create(t, env, job, crash)
	env.WaitJob(t, ns, job.Name, batchv1.JobComplete, time.Minute)
	pods := jobPods(t, env, ns, job.Name)
	if len(pods) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods))
	}
	cs := pods[0].Status.ContainerStatuses[0]
	last := cs.LastTerminationState.Terminated
	if cs.RestartCount != 1 || last == nil || last.ExitCode != 1 || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
		t.Fatalf("container status %+v", cs)
	}
	if logs := k.Logs(ns, pods[0].Name); !strings.Contains(logs, "first\nsecond\n") {
		t.Fatalf("logs: %q", logs)
	}
	testbed.Eventually(t, time.Minute, "two restarts of the crashing pod", func() (bool, error) {
		var p corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(crash), &p); err != nil {
			return false, err
		}
		if len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		cs := p.Status.ContainerStatuses[0]
		last := cs.LastTerminationState.Terminated
		return cs.RestartCount >= 2 && p.Status.Phase == corev1.PodRunning && last != nil && last.ExitCode == 7, nil
	})
}

// markerProcesses lists the processes whose environment holds marker.
func markerProcesses(marker string) []string {
	var pids []string
	files, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if kv == marker {
				pids = append(pids, strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/environ"))
			}
		}
	}
	return pids
}

// TestExecProbeGraceAndStop: an exec readiness probe runs inside the
// container's root; a process that ignores SIGTERM (PID 1 of its namespace
// without a handler) and its background child are killed after the grace
// period when the pod is deleted, and the pod object goes away; Stop kills
// what still runs. No process carrying the test's marker survives.
func TestExecProbeGraceAndStop(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	ctx := context.Background()
	marker := "HARNESS_TEST_MARKER=" + ns
	pod := func(name string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{
					Name: "main", Image: "busybox",
					Command: []string{"sh", "-c", "sleep 600 & sleep 0.2; touch /probe-ready; exec sleep 600"},
					Env:     []corev1.EnvVar{{Name: "HARNESS_TEST_MARKER", Value: ns}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
						Command: []string{"test", "-f", "/probe-ready"}}}},
				}},
			},
		}
		k.PlaceOnNode(&p.Spec)
		return p
	}
	a, b := pod("a"), pod("b")
	began := time.Now()
	create(t, env, a, b)
	for _, p := range []*corev1.Pod{a, b} {
		testbed.Eventually(t, time.Minute, p.Name+" Ready", func() (bool, error) {
			_, ok := readyPod(env, ns, p.Name)
			return ok, nil
		})
	}
	t.Logf("pods created -> Ready (exec probe): %s", time.Since(began).Round(time.Millisecond))
	if _, err := os.Stat("/probe-ready"); err == nil {
		t.Fatal("/probe-ready appeared on the host")
	}
	if n := len(markerProcesses(marker)); n != 4 {
		t.Fatalf("want 4 processes (2 per pod), found %d", n)
	}
	began = time.Now()
	if err := env.Client.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 30*time.Second, "pod a gone", func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(a), &corev1.Pod{})
		return err != nil && client.IgnoreNotFound(err) == nil, nil
	})
	took := time.Since(began)
	t.Logf("pod deleted -> object gone (SIGTERM ignored, SIGKILL after 1 s): %s", took.Round(time.Millisecond))
	if took < time.Second {
		t.Fatalf("pod gone after %s, before its grace period", took)
	}
	if n := len(markerProcesses(marker)); n != 2 {
		t.Fatalf("want 2 processes (pod b), found %d", n)
	}
	began = time.Now()
	k.Stop()
	t.Logf("Stop with a pod ignoring SIGTERM: %s", time.Since(began).Round(time.Millisecond))
	if pids := markerProcesses(marker); len(pids) != 0 {
		t.Fatalf("processes left after Stop: %v", pids)
	}
}

// TestOpenBaoPod: the real OpenBao 2.4.0 server runs as a StatefulSet pod
// (raft storage on a volume claim, listening on its pod IP), and an exec
// readiness probe that runs `bao status` (the image's binary) makes it Ready.
func TestOpenBaoPod(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	bao := testbin.Path(t, "openbao")
	ns := env.Namespace(t)
	k := startWith(t, env, map[string]string{"openbao/openbao": bao})
	create(t, env, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "openbao-config", Namespace: ns}, Data: map[string]string{
		"raft.hcl": "storage \"raft\" {\n  path = \"/openbao/data\"\n  node_id = \"openbao-0\"\n  performance_multiplier = 1\n}\n",
	}})
	labels := map[string]string{"app.kubernetes.io/name": "openbao"}
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "openbao", Image: "openbao/openbao:2.4.0",
			Args: []string{"server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=$(POD_IP):8200",
				"-dev-no-store-token", "-config=/openbao/config/raft.hcl"},
			Env: []corev1.EnvVar{
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "BAO_ADDR", Value: "http://$(POD_IP):8200"},
				{Name: "BAO_API_ADDR", Value: "http://$(POD_IP):8200"},
				{Name: "BAO_CLUSTER_ADDR", Value: "http://$(POD_IP):8201"},
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "data", MountPath: "/openbao/data"},
				{Name: "config", MountPath: "/openbao/config"},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"bao", "status"}}}},
		}},
		Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "openbao-config"}}}}},
	}
	k.PlaceOnNode(&spec)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "openbao", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1), ServiceName: "openbao-internal",
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Template:             corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{k.ClaimTemplate("data")},
		},
	}
	began := time.Now()
	create(t, env, sts)
	var p *corev1.Pod
	testbed.Eventually(t, 2*time.Minute, "openbao-0 Ready", func() (bool, error) {
		var ok bool
		p, ok = readyPod(env, ns, "openbao-0")
		return ok, nil
	})
	t.Logf("statefulset created -> OpenBao pod Ready: %s", time.Since(began).Round(time.Millisecond))
	health, err := get("http://" + net.JoinHostPort(p.Status.PodIP, "8200") + "/v1/sys/health")
	if err != nil || !strings.Contains(health, `"sealed":false`) {
		t.Fatalf("health: %s, %v", health, err)
	}
	var pvc corev1.PersistentVolumeClaim
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "data-openbao-0"}, &pvc); err != nil {
		t.Fatal(err)
	}
	var pv corev1.PersistentVolume
	if err := env.Client.Get(context.Background(), types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pv.Spec.Local.Path, "raft", "raft.db")); err != nil {
		t.Fatalf("raft data not in the claim's directory: %v", err)
	}
}

const openBaoConfigTemplate = `disable_mlock = true
ui = false
listener "tcp" {
  address = "POD_IP:8200"
  cluster_address = "POD_IP:8201"
  tls_disable = true
}
api_addr = "http://POD_IP:8200"
cluster_addr = "http://POD_IP:8201"
seal "static" {
  current_key_id = "1"
  current_key = "file:///openbao/seal/key"
}
storage "raft" {
  path = "/openbao/data"
  node_id = "POD_NAME"
  performance_multiplier = 1
  retry_join { leader_api_addr = "http://openbao-0.openbao-internal.NAMESPACE.svc.cluster.local:8200" }
  retry_join { leader_api_addr = "http://openbao-1.openbao-internal.NAMESPACE.svc.cluster.local:8200" }
  retry_join { leader_api_addr = "http://openbao-2.openbao-internal.NAMESPACE.svc.cluster.local:8200" }
}
`

func baoRequest(method, url, token, body string) (int, string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestOpenBaoThreeVoters: three OpenBao 2.4.0 nodes as a StatefulSet, as
// the e2e runs them: an init container renders the config with the pod's IP
// and name, the static seal key comes from a Secret, raft data lives on
// volume claims, the nodes find each other by their pod DNS names
// (retry_join), and a deleted standby comes back unsealed, as a voter, at
// the same IP.
func TestOpenBaoThreeVoters(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	bao := testbin.Path(t, "openbao")
	k := startWith(t, env, map[string]string{"openbao/openbao": bao})
	ns := env.Namespace(t)
	ctx := context.Background()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	create(t, env,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "openbao-seal", Namespace: ns}, Data: map[string][]byte{"key": key}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "openbao-config", Namespace: ns}, Data: map[string]string{"config.hcl": openBaoConfigTemplate}},
	)
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	labels := map[string]string{"app.kubernetes.io/name": "openbao"}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](10),
		InitContainers: []corev1.Container{{
			Name: "config", Image: "busybox",
			Command: []string{"sh", "-c", `sed -e "s/POD_IP/$POD_IP/g" -e "s/POD_NAME/$POD_NAME/g" -e "s/NAMESPACE/$NAMESPACE/g" /openbao/template/config.hcl > /openbao/config/config.hcl`},
			Env:     []corev1.EnvVar{fieldEnv("POD_IP", "status.podIP"), fieldEnv("POD_NAME", "metadata.name"), fieldEnv("NAMESPACE", "metadata.namespace")},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "template", MountPath: "/openbao/template"},
				{Name: "config", MountPath: "/openbao/config"},
			},
		}},
		Containers: []corev1.Container{{
			Name: "openbao", Image: "openbao/openbao:2.4.0",
			Args:  []string{"server", "-config=/openbao/config/config.hcl"},
			Env:   []corev1.EnvVar{fieldEnv("POD_IP", "status.podIP")},
			Ports: []corev1.ContainerPort{{Name: "api", ContainerPort: 8200}},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "data", MountPath: "/openbao/data"},
				{Name: "config", MountPath: "/openbao/config"},
				{Name: "seal", MountPath: "/openbao/seal"},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/v1/sys/health?standbyok=true&uninitcode=200", Port: intstr.FromString("api")}}},
		}},
		Volumes: []corev1.Volume{
			{Name: "template", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "openbao-config"}}}},
			{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "seal", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "openbao-seal", DefaultMode: ptr.To[int32](0o400)}}},
		},
	}
	k.PlaceOnNode(&spec)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "openbao", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](3), ServiceName: "openbao-internal", PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Template:             corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{k.ClaimTemplate("data")},
		},
	}
	began := time.Now()
	create(t, env, sts)
	ips := map[string]string{}
	testbed.Eventually(t, 2*time.Minute, "three OpenBao pods Ready (uninitialised)", func() (bool, error) {
		for i := range 3 {
			n := fmt.Sprintf("openbao-%d", i)
			p, ok := readyPod(env, ns, n)
			if !ok {
				return false, nil
			}
			ips[n] = p.Status.PodIP
		}
		return true, nil
	})
	t.Logf("statefulset created -> 3 OpenBao pods Ready: %s", time.Since(began).Round(time.Millisecond))
	addr := func(n string) string { return "http://" + net.JoinHostPort(ips[n], "8200") }
	code, body, err := baoRequest(http.MethodPost, addr("openbao-0")+"/v1/sys/init", "", `{"recovery_shares":1,"recovery_threshold":1}`)
	if err != nil || code != http.StatusOK {
		t.Fatalf("init: %d %s %v", code, body, err)
	}
	var initResp struct {
		RootToken string `json:"root_token"`
	}
	if err := json.Unmarshal([]byte(body), &initResp); err != nil || initResp.RootToken == "" {
		t.Fatalf("init answer %s: %v", body, err)
	}
	token := initResp.RootToken
	voters := func() (bool, error) {
		code, body, err := baoRequest(http.MethodGet, addr("openbao-0")+"/v1/sys/storage/raft/autopilot/state", token, "")
		if err != nil || code != http.StatusOK {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		var st struct {
			Data struct {
				Healthy bool `json:"healthy"`
				Servers map[string]struct {
					Status  string `json:"status"`
					Healthy bool   `json:"healthy"`
				} `json:"servers"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return false, err
		}
		if len(st.Data.Servers) != 3 || !st.Data.Healthy {
			return false, fmt.Errorf("autopilot: %s", body)
		}
		for _, s := range st.Data.Servers {
			if s.Status != "voter" && s.Status != "leader" || !s.Healthy {
				return false, fmt.Errorf("autopilot: %s", body)
			}
		}
		return true, nil
	}
	began = time.Now()
	testbed.Eventually(t, 2*time.Minute, "three healthy voters", voters)
	t.Logf("init -> three healthy voters: %s", time.Since(began).Round(time.Millisecond))

	// A standby restarts: the StatefulSet recreates it with the same IP and
	// data; the static seal unseals it, and it is a voter again.
	var old corev1.Pod
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "openbao-1"}, &old); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := env.Client.Delete(ctx, &old, client.Preconditions{UID: &old.UID}); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, time.Minute, "openbao-1 back and Ready", func() (bool, error) {
		p, ok := readyPod(env, ns, "openbao-1")
		return ok && p.UID != old.UID && p.Status.PodIP == ips["openbao-1"], nil
	})
	t.Logf("standby deleted -> replacement Ready: %s", time.Since(began).Round(time.Millisecond))
	code, body, err = baoRequest(http.MethodGet, addr("openbao-1")+"/v1/sys/health", "", "")
	if err != nil || code != http.StatusTooManyRequests || !strings.Contains(body, `"sealed":false`) {
		t.Fatalf("openbao-1 health after restart: %d %s %v", code, body, err)
	}
	testbed.Eventually(t, time.Minute, "three healthy voters after the restart", voters)
	t.Logf("standby deleted -> three healthy voters again: %s", time.Since(began).Round(time.Millisecond))
}

// TestAdoptNamespaces: a Job whose template says nothing about placement
// runs on the harness node once its namespace is adopted, while a pod in
// another namespace stays on kwok's node.
func TestAdoptNamespaces(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns, other := env.Namespace(t), env.Namespace(t)
	ctx := context.Background()
	began := time.Now()
	undo, err := k.AdoptNamespaces(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = undo(context.Background()) })
	t.Logf("adoption policy effective after %s", time.Since(began).Round(time.Millisecond))
	spec := corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Tolerations:   []corev1.Toleration{{Key: "unrelated", Operator: corev1.TolerationOpExists}},
		Containers:    []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", "echo adopted > /dev/termination-log"}}},
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "adopted", Namespace: ns},
		Spec:       batchv1.JobSpec{BackoffLimit: ptr.To[int32](0), Template: corev1.PodTemplateSpec{Spec: spec}},
	}
	kwokPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: other}, Spec: *spec.DeepCopy()}
	create(t, env, job, kwokPod)
	env.WaitJob(t, ns, job.Name, batchv1.JobComplete, time.Minute)
	pods := jobPods(t, env, ns, job.Name)
	if len(pods) != 1 || pods[0].Spec.NodeName != k.Node() {
		t.Fatalf("job pods: %d, on %q", len(pods), pods[0].Spec.NodeName)
	}
	if term := pods[0].Status.ContainerStatuses[0].State.Terminated; term == nil || term.Message != "adopted\n" {
		t.Fatalf("terminated: %+v", term)
	}
	testbed.Eventually(t, time.Minute, "the other namespace's pod scheduled", func() (bool, error) {
		var p corev1.Pod
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(kwokPod), &p)
		return err == nil && p.Spec.NodeName != "", err
	})
	var p corev1.Pod
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(kwokPod), &p); err != nil || p.Spec.NodeName != testbed.NodeName {
		t.Fatalf("pod in the other namespace on %q (%v), want kwok's %s", p.Spec.NodeName, err, testbed.NodeName)
	}
	k.Stop()
	var policies admissionregistrationv1.MutatingAdmissionPolicyList
	if err := env.Client.List(ctx, &policies); err != nil {
		t.Fatal(err)
	}
	for _, p := range policies.Items {
		if strings.HasSuffix(p.Name, k.Node()) {
			t.Fatalf("policy %s left after Stop", p.Name)
		}
	}
}

// TestWaitingReasons: a pod whose Secret does not exist yet waits with
// CreateContainerConfigError and starts once the Secret appears; a pod whose
// image maps to no binary waits with ErrImagePull.
func TestWaitingReasons(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	k := start(t, env)
	ns := env.Namespace(t)
	ctx := context.Background()
	late := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", "cat /s/v > /dev/termination-log"},
				VolumeMounts: []corev1.VolumeMount{{Name: "s", MountPath: "/s"}}}},
			Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "late"}}}},
		},
	}
	unmapped := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unmapped", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "example.invalid/nothing:v1"}}},
	}
	k.PlaceOnNode(&late.Spec)
	k.PlaceOnNode(&unmapped.Spec)
	create(t, env, late, unmapped)
	waiting := func(p *corev1.Pod, reason string) {
		testbed.Eventually(t, time.Minute, p.Name+" waiting with "+reason, func() (bool, error) {
			var got corev1.Pod
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
				return false, err
			}
			cs := got.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == reason &&
				got.Status.Phase == corev1.PodPending, nil
		})
	}
	waiting(late, "CreateContainerConfigError")
	waiting(unmapped, "ErrImagePull")
	create(t, env, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns}, StringData: map[string]string{"v": "arrived"}})
	testbed.Eventually(t, time.Minute, "late Succeeded", func() (bool, error) {
		var got corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(late), &got); err != nil {
			return false, err
		}
		cs := got.Status.ContainerStatuses
		return got.Status.Phase == corev1.PodSucceeded && cs[0].State.Terminated.Message == "arrived", nil
	})
}
