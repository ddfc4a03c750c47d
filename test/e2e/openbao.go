package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/internal/testca"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// readReplicaIP is the offset of the read replicas' addresses after the
// voters': voter prod-<i> is at .<10+i>, read replica prod-read-<j> at
// .<10+readReplicaIP+j>.
const readReplicaIP = 8

// podIP is the fixed address of a pod of cluster prod, "" for any other
// pod (the harness kubelet then picks one).
func podIP(k *kubelet.Kubelet, pod string) string {
	i := -1
	if rest, ok := strings.CutPrefix(pod, "prod-read-"); ok {
		if j, err := strconv.Atoi(rest); err == nil {
			i = readReplicaIP + j
		}
	} else if rest, ok := strings.CutPrefix(pod, "prod-"); ok {
		if j, err := strconv.Atoi(rest); err == nil {
			i = j
		}
	}
	if i < 0 {
		return ""
	}
	ip := k.Subnet().IP.To4()
	return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], 10+i)
}

// openBaoStatefulSet runs an OpenBao cluster as openbao-operator would: n
// voters in StatefulSet <name> and reads read replicas (permanent
// non-voters) in StatefulSet <name>-read, each node's configuration
// (baotest.NodeConfig) in a ConfigMap, the static seal key in a Secret,
// Raft data on a persistent volume per pod. TLS is on, as the operator
// runs it: a CA of its own in Secret <name>-tls-ca, a server certificate
// with the operator's SANs (no pod IP) in <name>-tls-server, peers joined
// by verified TLS, the readiness probe over https. It waits for the pods,
// initialises the cluster and returns a client that verifies TLS under
// the operator's server name.
func (s *Stack) openBaoStatefulSet(t testing.TB, k *kubelet.Kubelet, ns, name string, n, reads int) *baotest.Cluster {
	t.Helper()
	ctx := context.Background()
	pods := func(set string, count int) []string {
		var names []string
		for i := range count {
			names = append(names, fmt.Sprintf("%s-%d", set, i))
		}
		return names
	}
	voters, readers := pods(name, n), pods(schemas.ReadReplicaStatefulSet(name), reads)
	var ips []string
	for _, p := range append(voters, readers...) {
		ips = append(ips, podIP(k, p))
	}
	bao := baotest.Attach(t, ips)
	for _, nd := range bao.Nodes[n:] {
		nd.NonVoter = true
	}
	ca := testca.New(t)
	cert, certKey := ca.Server(t, testbed.OperatorSANs(ns, name, n)...)
	bao.UseTLS(t, ca.PEM, testbed.OperatorServerName(name))
	seal, err := os.ReadFile(bao.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tl := &baotest.NodeTLS{CertFile: "/openbao/tls/tls.crt", KeyFile: "/openbao/tls/tls.key", CAFile: "/openbao/tls/ca.crt",
		ServerName: testbed.OperatorServerName(name)}
	configs := map[string]string{}
	for i, p := range append(voters, readers...) {
		configs[p+".hcl"] = baotest.NodeConfig(i, ips[i], bao.Nodes[0].Addr, "/openbao/data", "/openbao/seal/key",
			baotest.NodeOptions{NonVoter: i >= n, TLS: tl})
	}
	health := "/v1/sys/health?standbyok=true&perfstandbyok=true&uninitcode=200"
	statefulSet := func(set string, replicas int, labels map[string]string) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: set, Namespace: ns, Labels: labels},
			Spec: appsv1.StatefulSetSpec{
				Replicas: ptr.To(int32(replicas)), ServiceName: name, PodManagementPolicy: appsv1.ParallelPodManagement,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "openbao", Image: baoImage,
						Args: []string{"server", "-config=/openbao/config/$(POD_NAME).hcl"},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{{Name: "api", ContainerPort: baotest.APIPort}, {Name: "cluster", ContainerPort: baotest.ClusterPort}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "data", MountPath: "/openbao/data"},
							{Name: "config", MountPath: "/openbao/config", ReadOnly: true},
							{Name: "seal", MountPath: "/openbao/seal", ReadOnly: true},
							{Name: "tls", MountPath: "/openbao/tls", ReadOnly: true},
						},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: health, Port: intstr.FromInt32(baotest.APIPort), Scheme: corev1.URISchemeHTTPS}}},
					}},
					Volumes: []corev1.Volume{
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}}}},
						{Name: "seal", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: name + "-seal", DefaultMode: ptr.To(int32(0o400))}}},
						{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: name + "-tls-server", DefaultMode: ptr.To(int32(0o400))}}},
					},
				}},
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{k.ClaimTemplate("data")},
			},
		}
	}
	for _, o := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-config", Namespace: ns}, Data: configs},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-seal", Namespace: ns}, Data: map[string][]byte{"key": seal}},
	} {
		if err := s.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The StatefulSets, the headless Service, the PodDisruptionBudget and
	// the TLS Secrets are the operator's: its admission policy refuses
	// them from anyone else.
	op, err := s.Operator()
	if err != nil {
		t.Fatal(err)
	}
	labels := testbed.ClusterPodLabels(name)
	sets := []*appsv1.StatefulSet{statefulSet(name, n, labels)}
	if reads > 0 {
		sets = append(sets, statefulSet(schemas.ReadReplicaStatefulSet(name), reads, testbed.ReadReplicaPodLabels(name)))
	}
	objs := testbed.OperatorCompanions(ns, name, int32(n))
	objs = append(objs,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-tls-ca", Namespace: ns, Labels: labels}, Data: map[string][]byte{"ca.crt": ca.PEM}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-tls-server", Namespace: ns, Labels: labels}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": cert, "tls.key": certKey, "ca.crt": ca.PEM}})
	for _, o := range sets {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if err := op.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	for _, sts := range sets {
		want := *sts.Spec.Replicas
		testbed.Eventually(t, 3*time.Minute, fmt.Sprintf("%d OpenBao pods of %s Ready", want, sts.Name), func() (bool, error) {
			err := s.Client.Get(ctx, client.ObjectKeyFromObject(sts), sts)
			return err == nil && sts.Status.ReadyReplicas == want, err
		})
	}
	s.operatorLocked(t, ns, name)
	bao.Init(t)
	t.Logf("e2e: %d OpenBao voters and %d read replica(s) Ready, initialised, over verified TLS and healthy in %s", n, reads, time.Since(began).Round(time.Millisecond))
	return bao
}
