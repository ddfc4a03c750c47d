package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
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

// ipBases are the fixed addresses of the OpenBao pods, by StatefulSet:
// pod <set>-<i> is at .<10+base+i> of the kubelet's subnet, so that each
// node's configuration can name its peers. Cluster prod's are fixed; the
// stand-in operator adds the clusters it bootstraps.
var ipBases = struct {
	sync.Mutex
	m    map[string]int
	next int
}{m: map[string]int{"prod": 0, "prod-read": 8}, next: 20}

// fixIPs gives a StatefulSet of up to 10 pods its addresses.
func fixIPs(set string) {
	ipBases.Lock()
	defer ipBases.Unlock()
	if _, ok := ipBases.m[set]; !ok {
		ipBases.m[set] = ipBases.next
		ipBases.next += 10
	}
}

// podIP is the fixed address of an OpenBao pod, "" for any other (the
// harness kubelet then picks one).
func podIP(k *kubelet.Kubelet, pod string) string {
	i := strings.LastIndexByte(pod, '-')
	if i < 0 {
		return ""
	}
	n, err := strconv.Atoi(pod[i+1:])
	ipBases.Lock()
	base, ok := ipBases.m[pod[:i]]
	ipBases.Unlock()
	if err != nil || !ok {
		return ""
	}
	ip := k.Subnet().IP.To4()
	return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], 10+base+n)
}

// baoSet is an OpenBao cluster as openbao-operator runs it.
type baoSet struct {
	ns, name      string
	voters, reads int
	// seal is the Secret holding the static seal key under "key".
	seal string
	// init is HCL added to every node's configuration: the
	// self-initialisation, "" for none.
	init string
	// owner, if set, owns the operator's objects (a composed cluster's
	// go with it).
	owner []metav1.OwnerReference
}

// openBaoStatefulSet runs cluster prod's OpenBao as openbao-operator would
// (runBao), with a static seal key of the harness's in Secret <name>-seal,
// and initialises it through the API.
func (s *Stack) openBaoStatefulSet(t testing.TB, k *kubelet.Kubelet, ns, name string, n, reads int) *baotest.Cluster {
	t.Helper()
	c := baoSet{ns: ns, name: name, voters: n, reads: reads, seal: name + "-seal"}
	bao := baotest.Attach(t, c.ips(k))
	key, err := os.ReadFile(bao.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: c.seal, Namespace: ns}, Data: map[string][]byte{"key": key}}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	s.runBao(t, k, c, bao)
	bao.Init(t)
	t.Logf("e2e: %d OpenBao voters and %d read replica(s) Ready, initialised, over verified TLS and healthy in %s", n, reads, time.Since(began).Round(time.Millisecond))
	return bao
}

// ips fixes and returns the addresses of the cluster's pods, voters first.
func (c baoSet) ips(k *kubelet.Kubelet) []string {
	fixIPs(c.name)
	if c.reads > 0 {
		fixIPs(schemas.ReadReplicaStatefulSet(c.name))
	}
	var ips []string
	for _, p := range c.pods() {
		ips = append(ips, podIP(k, p))
	}
	return ips
}

func (c baoSet) pods() []string {
	var names []string
	for i := range c.voters {
		names = append(names, fmt.Sprintf("%s-%d", c.name, i))
	}
	for i := range c.reads {
		names = append(names, fmt.Sprintf("%s-%d", schemas.ReadReplicaStatefulSet(c.name), i))
	}
	return names
}

// runBao runs an OpenBao cluster as openbao-operator does: the voters in
// StatefulSet <name> and the read replicas (permanent non-voters) in
// <name>-read, each node's configuration (baotest.NodeConfig, plus the
// self-initialisation) in a ConfigMap, the static seal key from a Secret,
// Raft data on a persistent volume per pod. TLS is on, as the operator
// runs it: a CA of its own in Secret <name>-tls-ca, a server certificate
// with the operator's SANs (no pod IP) in <name>-tls-server, peers joined
// by verified TLS, the readiness probe over https. It waits for the pods
// to be Ready (uninitialised counts) and makes bao, the cluster's client,
// verify TLS under the operator's server name.
func (s *Stack) runBao(t testing.TB, k *kubelet.Kubelet, c baoSet, bao *baotest.Cluster) {
	t.Helper()
	ctx := context.Background()
	ips := c.ips(k)
	for _, nd := range bao.Nodes[c.voters:] {
		nd.NonVoter = true
	}
	ca := testca.New(t)
	cert, certKey := ca.Server(t, testbed.OperatorSANs(c.ns, c.name, c.voters)...)
	bao.UseTLS(t, ca.PEM, testbed.OperatorServerName(c.name))
	tl := &baotest.NodeTLS{CertFile: "/openbao/tls/tls.crt", KeyFile: "/openbao/tls/tls.key", CAFile: "/openbao/tls/ca.crt",
		ServerName: testbed.OperatorServerName(c.name)}
	configs := map[string]string{}
	for i, p := range c.pods() {
		configs[p+".hcl"] = baotest.NodeConfig(i, ips[i], bao.Nodes[0].Addr, "/openbao/data", "/openbao/seal/key",
			baotest.NodeOptions{NonVoter: i >= c.voters, TLS: tl}) + c.init
	}
	health := "/v1/sys/health?standbyok=true&perfstandbyok=true&uninitcode=200"
	meta := func(name string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: c.ns, Labels: labels, OwnerReferences: c.owner}
	}
	statefulSet := func(set string, replicas int, labels map[string]string) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			ObjectMeta: meta(set, labels),
			Spec: appsv1.StatefulSetSpec{
				Replicas: ptr.To(int32(replicas)), ServiceName: c.name, PodManagementPolicy: appsv1.ParallelPodManagement,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				// A composed cluster's volumes go with it.
				PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
					WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
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
							LocalObjectReference: corev1.LocalObjectReference{Name: c.name + "-config"}}}},
						{Name: "seal", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: c.seal, DefaultMode: ptr.To(int32(0o400)), Items: []corev1.KeyToPath{{Key: "key", Path: "key"}}}}},
						{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: c.name + "-tls-server", DefaultMode: ptr.To(int32(0o400))}}},
					},
				}},
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{k.ClaimTemplate("data")},
			},
		}
	}
	if err := s.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: meta(c.name+"-config", nil), Data: configs}); err != nil {
		t.Fatal(err)
	}
	// The StatefulSets, the headless Service, the PodDisruptionBudget and
	// the TLS Secrets are the operator's: its admission policy refuses
	// them from anyone else.
	op, err := s.Operator()
	if err != nil {
		t.Fatal(err)
	}
	labels := testbed.ClusterPodLabels(c.name)
	sets := []*appsv1.StatefulSet{statefulSet(c.name, c.voters, labels)}
	if c.reads > 0 {
		sets = append(sets, statefulSet(schemas.ReadReplicaStatefulSet(c.name), c.reads, testbed.ReadReplicaPodLabels(c.name)))
	}
	objs := testbed.OperatorCompanions(c.ns, c.name, int32(c.voters))
	objs = append(objs,
		&corev1.Secret{ObjectMeta: meta(c.name+"-tls-ca", labels), Data: map[string][]byte{"ca.crt": ca.PEM}},
		&corev1.Secret{ObjectMeta: meta(c.name+"-tls-server", labels), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": cert, "tls.key": certKey, "ca.crt": ca.PEM}})
	for _, o := range sets {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if len(o.GetOwnerReferences()) == 0 {
			o.SetOwnerReferences(c.owner)
		}
		if err := op.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, sts := range sets {
		want := *sts.Spec.Replicas
		testbed.Eventually(t, 3*time.Minute, fmt.Sprintf("%d OpenBao pods of %s Ready", want, sts.Name), func() (bool, error) {
			err := s.Client.Get(ctx, client.ObjectKeyFromObject(sts), sts)
			return err == nil && sts.Status.ReadyReplicas == want, err
		})
	}
	s.operatorLocked(t, c.ns, c.name)
}
