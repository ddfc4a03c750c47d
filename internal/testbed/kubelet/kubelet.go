// Package kubelet is a "harness kubelet" for the loopback test bed: it
// registers one node of its own and really runs the pods bound to it, each
// container as a local process, so that the real Job and StatefulSet
// controllers decide outcomes from real exit codes, readiness and
// termination messages. kwok keeps faking every other pod (it only manages
// nodes annotated kwok.x-k8s.io/node=fake; this node is not).
//
// What a pod gets:
//   - an IP of its own from a loopback subnet (127.0.0.0/8 is routed to lo,
//     so a process can listen on 127.x.y.z:port with no setup), written to
//     status.podIP and to $(POD_IP)-style fieldRef env;
//   - its containers run as processes (see Options.Images for how an image
//     becomes a binary), each in private mount, UTS and PID namespaces in
//     which its volumes are bound at their mount paths; nothing is written
//     to the host's /etc or /var (package nsinit explains how);
//   - emptyDir, secret, configMap, downwardAPI, projected (service-account
//     token through the TokenRequest API, secrets, config maps, downward
//     API), persistentVolumeClaim (a directory per claim that survives the
//     pod) and hostPath volumes, plus the default service-account token
//     mount at /var/run/secrets/kubernetes.io/serviceaccount, with the
//     apiserver's CA and KUBERNETES_SERVICE_HOST/PORT pointing at the test
//     apiserver, so client-go's InClusterConfig works in the process;
//   - status as the kubelet writes it: phase, podIP, conditions, readiness
//     (none, exec, httpGet or tcpSocket readiness probes), container states
//     with exit codes, restart counts and termination messages;
//   - restarts per restartPolicy, with a short back-off;
//   - on deletion: SIGTERM, SIGKILL after the grace period (capped), then
//     the pod object deleted with grace period 0, as the kubelet does.
//
// It also binds PersistentVolumeClaims of its storage class (Options.
// StorageClass) to PersistentVolumes pinned to its node, standing in for
// the PV controller, which the test bed does not run; the scheduler then
// places the claim's pod on this node. Pods reach the node by tolerating its
// taint and selecting it (PlaceOnNode), or, for templates a test does not
// write, through AdoptNamespaces. Each pod's /etc/hosts lists the DNS names
// of the kubelet's StatefulSet pods. README.md has the details, the
// measurements and the recipe for OpenBao and the executor Job.
//
// Linux only. As root, or as another user where the kernel allows
// unprivileged user namespaces (nsinit then adds one). The test binary is
// re-executed to set up each container, so a binary that imports this
// package runs nsinit's init first.
//
// Not done (documented gaps): liveness and startup probes, image pulls,
// resource limits, securityContext (processes run as the test's user,
// root), volume content updates after start, token refresh (tokens last an
// hour or more), sidecar and ephemeral containers, Service IPs, the pod's
// own network namespace (a process can bind any address, not only its pod
// IP), the kubelet API (exec, logs: use Logs).
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// Well-known names of the harness node.
const (
	// DefaultNode is the node name when Options.Node is empty.
	DefaultNode = "harness-node-0"
	// NodeLabel is set to "true" on the node: nodeSelector{NodeLabel: "true"}.
	NodeLabel = "openbao-restore.io/harness"
	// TaintKey is the key of the node's NoSchedule taint (value "true"):
	// only pods that tolerate it, or name the node, land there.
	TaintKey = "openbao-restore.io/harness"
	// DefaultMaxGrace caps terminationGracePeriodSeconds.
	DefaultMaxGrace = 10 * time.Second
)

// Options configure a harness kubelet.
type Options struct {
	// Node is the name of the node to register (DefaultNode if empty).
	Node string
	// Subnet is an IPv4 /24 (or larger) inside 127.0.0.0/8 that pod IPs are
	// taken from, e.g. "127.0.1.0/24"; empty picks a random 127.x.y.0/24
	// (x in 100..254), so that test packages running in parallel don't
	// collide. The node's address is its .1.
	Subnet string
	// IPs, if set, chooses a pod's IP (any address, usually loopback);
	// returning "" falls back to the allocator. The default allocator gives
	// a new pod the address a previous pod of the same namespace and name
	// had, if it is free: a StatefulSet pod keeps its IP across deletion
	// (unlike in a real cluster).
	IPs func(*corev1.Pod) string
	// Images maps a container image (exact, or without its tag or digest)
	// to a local binary. When the container has no command, the binary is
	// run with the container's args. When it has one, command[0] is run as
	// given if it is an absolute path that exists on this machine or a
	// program on PATH (e.g. ["sh", "-c", ...]) and its base name differs
	// from the binary's; otherwise the image's binary runs, with argv[0] =
	// command[0] and the rest of command and args after it.
	Images map[string]string
	// Dir holds the kubelet's state: pod roots, volumes, logs and the
	// persistent-volume directories. Empty means a new temporary directory,
	// removed by Stop.
	Dir string
	// StorageClass: claims with this storageClassName are bound by the
	// kubelet to volumes on its node. Default: the node name. The class
	// object itself is created if missing.
	StorageClass string
	// MaxGrace caps terminationGracePeriodSeconds (DefaultMaxGrace if 0).
	MaxGrace time.Duration
	// Logf, if set, receives one line per notable event (process started,
	// exited, pod deleted), with timings.
	Logf func(format string, args ...any)
}

// Kubelet is a running harness kubelet.
type Kubelet struct {
	opts      Options
	cfg       *rest.Config
	cs        kubernetes.Interface
	apiHost   string
	apiPort   string
	ca        []byte
	subnet    *net.IPNet
	hostIP    string
	dir       string
	removeDir bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hostsMu sync.Mutex
	mu      sync.Mutex
	pods    map[types.UID]*podWorker
	ipsUsed map[string]types.UID // IP -> pod holding it
	lastIP  map[string]string    // namespace/name -> last IP
	logs    map[string][]string  // namespace/name -> log files, oldest first
	stopped bool
	unadopt func(context.Context) error // removes the AdoptNamespaces policy
}

// Start registers the node and starts running its pods. Stop it (or cancel
// ctx and call Stop) before the control plane goes away. cfg is the
// kubelet's identity: under openbao-operator's admission policy (the test
// bed's OperatorPolicy) it must be a node's, system:node:<Node>, or its
// final deletes of the operator's pods are refused.
func Start(ctx context.Context, cfg *rest.Config, opts Options) (*Kubelet, error) {
	if opts.Node == "" {
		opts.Node = DefaultNode
	}
	if opts.StorageClass == "" {
		opts.StorageClass = opts.Node
	}
	if opts.MaxGrace == 0 {
		opts.MaxGrace = DefaultMaxGrace
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	k := &Kubelet{opts: opts, cfg: rest.CopyConfig(cfg), pods: map[types.UID]*podWorker{},
		ipsUsed: map[string]types.UID{}, lastIP: map[string]string{}, logs: map[string][]string{}}
	var err error
	if k.subnet, err = pickSubnet(opts.Subnet); err != nil {
		return nil, err
	}
	gw := ipAdd(k.subnet.IP, 1)
	k.hostIP = gw.String()
	if k.apiHost, k.apiPort, err = hostPort(cfg.Host); err != nil {
		return nil, err
	}
	if k.ca, err = caData(cfg); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		if k.dir, err = os.MkdirTemp("", "harness-kubelet-"); err != nil {
			return nil, err
		}
		k.removeDir = true
	} else {
		k.dir = opts.Dir
		if err := os.MkdirAll(k.dir, 0o755); err != nil {
			return nil, err
		}
	}
	qcfg := rest.CopyConfig(cfg)
	qcfg.QPS, qcfg.Burst = 200, 400
	if k.cs, err = kubernetes.NewForConfig(qcfg); err != nil {
		return nil, err
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	if err := k.registerNode(ctx); err != nil {
		k.cancel()
		return nil, fmt.Errorf("register node: %w", err)
	}
	if err := k.ensureStorageClass(ctx); err != nil {
		k.cancel()
		return nil, fmt.Errorf("storage class: %w", err)
	}
	k.wg.Add(1)
	go func() { defer k.wg.Done(); k.heartbeat() }()
	if err := k.startInformers(ctx); err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// Node is the node's name.
func (k *Kubelet) Node() string { return k.opts.Node }

// StorageClass is the storage class whose claims this kubelet binds.
func (k *Kubelet) StorageClass() string { return k.opts.StorageClass }

// ClaimTemplate is a StatefulSet's volume claim template named name (1 GiB,
// ReadWriteOnce) that this kubelet binds: a directory per pod that
// survives the pod.
func (k *Kubelet) ClaimTemplate(name string) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(k.StorageClass()),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// Subnet is the loopback subnet pod IPs are taken from.
func (k *Kubelet) Subnet() *net.IPNet { return k.subnet }

// Dir is the kubelet's state directory.
func (k *Kubelet) Dir() string { return k.dir }

// Toleration lets a pod onto the harness node.
func Toleration() corev1.Toleration {
	return corev1.Toleration{Key: TaintKey, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}
}

// PlaceOnNode adds what a pod spec needs to be scheduled onto this
// kubelet's node: the taint's toleration and a nodeSelector on the node's
// hostname label (NodeLabel would match any harness node).
func (k *Kubelet) PlaceOnNode(spec *corev1.PodSpec) {
	spec.Tolerations = append(spec.Tolerations, Toleration())
	if spec.NodeSelector == nil {
		spec.NodeSelector = map[string]string{}
	}
	spec.NodeSelector["kubernetes.io/hostname"] = k.opts.Node
}

// Stop removes the AdoptNamespaces policy, kills every container process
// (SIGTERM, SIGKILL after 2 s), stops watching and removes a temporary
// state directory. Other API objects (the node, pods, volumes) are left as
// they are. It is safe to call more than once.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.stopped = true
	unadopt := k.unadopt
	workers := make([]*podWorker, 0, len(k.pods))
	for _, w := range k.pods {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	if unadopt != nil {
		// No new pod may be sent to a node nobody runs.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = unadopt(ctx)
		cancel()
	}
	k.cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.shutdown(2 * time.Second) }()
	}
	wg.Wait()
	k.wg.Wait()
	if k.removeDir {
		_ = os.RemoveAll(k.dir)
	}
}

func caData(cfg *rest.Config) ([]byte, error) {
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	if cfg.CAFile != "" {
		return os.ReadFile(cfg.CAFile)
	}
	return nil, errors.New("the REST config has no CA (CAData or CAFile); in-cluster clients need one")
}
