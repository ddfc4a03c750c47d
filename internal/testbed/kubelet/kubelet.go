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
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
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

// Logs returns the output of every container of every pod that had this
// namespace and name, oldest first, each under a header line.
func (k *Kubelet) Logs(namespace, pod string) string {
	k.mu.Lock()
	files := append([]string(nil), k.logs[namespace+"/"+pod]...)
	k.mu.Unlock()
	var sb strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			b = []byte(err.Error())
		}
		fmt.Fprintf(&sb, "==== %s ====\n%s", strings.TrimPrefix(f, k.dir+"/"), b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}

// AllLogs returns Logs for every pod the kubelet ran, for failure dumps.
func (k *Kubelet) AllLogs() string {
	k.mu.Lock()
	keys := make([]string, 0, len(k.logs))
	for key := range k.logs {
		keys = append(keys, key)
	}
	k.mu.Unlock()
	sort.Strings(keys)
	var sb strings.Builder
	for _, key := range keys {
		ns, name, _ := strings.Cut(key, "/")
		sb.WriteString(k.Logs(ns, name))
	}
	return sb.String()
}

func (k *Kubelet) addLog(namespace, pod, file string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := namespace + "/" + pod
	for _, f := range k.logs[key] {
		if f == file {
			return
		}
	}
	k.logs[key] = append(k.logs[key], file)
}

func (k *Kubelet) logf(format string, args ...any) {
	k.opts.Logf("harness kubelet %s: "+format, append([]any{k.opts.Node}, args...)...)
}

// refreshHosts rewrites the /etc/hosts file of every pod that has one (and
// creates self's): localhost, the pod's own names, then the names of every
// other pod of this kubelet that has a subdomain, standing in for cluster
// DNS (<pod>.<service>.<namespace>.svc.cluster.local resolves in a
// StatefulSet's pods). Files are rewritten in place, so running processes
// see the change (Go's resolver rereads the file within 5 s). It returns
// the error of writing self's file.
func (k *Kubelet) refreshHosts(self *podWorker) error {
	k.hostsMu.Lock()
	defer k.hostsMu.Unlock()
	k.mu.Lock()
	workers := make([]*podWorker, 0, len(k.pods))
	for _, w := range k.pods {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	entries := map[*podWorker]string{}
	var peers []string
	for _, w := range workers {
		e := w.hostsEntry()
		entries[w] = e
		if e != "" && w.latest().Spec.Subdomain != "" {
			peers = append(peers, e)
		}
	}
	sort.Strings(peers)
	var selfErr error
	for _, w := range workers {
		own := entries[w]
		if own == "" {
			continue
		}
		if _, err := os.Stat(w.hostsFile()); err != nil && w != self {
			continue // not set up yet, or already gone
		}
		var sb strings.Builder
		sb.WriteString("# Kubernetes-managed hosts file (harness kubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
		sb.WriteString(own)
		for _, p := range peers {
			if p != own {
				sb.WriteString(p)
			}
		}
		err := os.MkdirAll(w.dir, 0o755)
		if err == nil {
			err = os.WriteFile(w.hostsFile(), []byte(sb.String()), 0o644)
		}
		if w == self {
			selfErr = err
		}
	}
	return selfErr
}

// ---- node ----

func (k *Kubelet) nodeStatus() corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	now := metav1.Now()
	return corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "harness kubelet is posting ready status",
				LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.hostIP},
			{Type: corev1.NodeHostName, Address: k.opts.Node},
		},
		NodeInfo: corev1.NodeSystemInfo{
			Architecture: "amd64", OperatingSystem: "linux", KubeletVersion: "v1.36.3-harness",
			ContainerRuntimeVersion: "harness://0.1", OSImage: "harness kubelet",
		},
	}
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.opts.Node, Labels: map[string]string{
			"kubernetes.io/hostname": k.opts.Node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"type": "harness", NodeLabel: "true",
		}},
		Spec: corev1.NodeSpec{
			PodCIDR:  k.subnet.String(),
			PodCIDRs: []string{k.subnet.String()},
			Taints:   []corev1.Taint{{Key: TaintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	got, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = k.cs.CoreV1().Nodes().Get(ctx, k.opts.Node, metav1.GetOptions{})
		if err == nil && got.Annotations["kwok.x-k8s.io/node"] != "" {
			return fmt.Errorf("node %s is kwok's", k.opts.Node)
		}
	}
	if err != nil {
		return err
	}
	got.Status = k.nodeStatus()
	if _, err := k.cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return k.renewLease(ctx)
}

func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.opts.Node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.opts.Node, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.opts.Node), LeaseDurationSeconds: ptr.To[int32](40),
				RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node lease every 10 s and the Ready condition every
// 30 s, so that a node-lifecycle controller, if one ran, would leave the
// node alone (the test bed runs none).
func (k *Kubelet) heartbeat() {
	lease := time.NewTicker(10 * time.Second)
	defer lease.Stop()
	status := time.NewTicker(30 * time.Second)
	defer status.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-lease.C:
			_ = k.renewLease(k.ctx)
		case <-status.C:
			n, err := k.cs.CoreV1().Nodes().Get(k.ctx, k.opts.Node, metav1.GetOptions{})
			if err != nil {
				continue
			}
			n.Status = k.nodeStatus()
			_, _ = k.cs.CoreV1().Nodes().UpdateStatus(k.ctx, n, metav1.UpdateOptions{})
		}
	}
}

// ---- informers ----

func (k *Kubelet) startInformers(ctx context.Context) error {
	pf := informers.NewSharedInformerFactoryWithOptions(k.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.opts.Node).String()
	}))
	pods := pf.Core().V1().Pods().Informer()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(o) },
		UpdateFunc: func(_, o any) { k.podChanged(o) },
		DeleteFunc: func(o any) { k.podGone(o) },
	}); err != nil {
		return err
	}
	cf := informers.NewSharedInformerFactory(k.cs, 0)
	claims := cf.Core().V1().PersistentVolumeClaims().Informer()
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.claimChanged(o) },
		UpdateFunc: func(_, o any) { k.claimChanged(o) },
	}); err != nil {
		return err
	}
	pf.Start(k.ctx.Done())
	cf.Start(k.ctx.Done())
	k.wg.Add(1)
	go func() { defer k.wg.Done(); <-k.ctx.Done(); pf.Shutdown(); cf.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, claims.HasSynced) {
		return errors.New("informers did not sync")
	}
	return nil
}

func (k *Kubelet) podChanged(o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	w := k.pods[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			k.mu.Unlock()
			// Finished before we saw it (an earlier kubelet): nothing runs,
			// but a deletion still needs the kubelet's final delete.
			if pod.DeletionTimestamp != nil {
				uid := pod.UID
				_ = k.cs.CoreV1().Pods(pod.Namespace).Delete(k.ctx, pod.Name, metav1.DeleteOptions{
					GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &uid}})
			}
			return
		}
		w = newPodWorker(k, pod)
		k.pods[pod.UID] = w
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			w.run()
			k.mu.Lock()
			delete(k.pods, pod.UID)
			k.mu.Unlock()
			_ = k.refreshHosts(nil)
		}()
	}
	k.mu.Unlock()
	w.update(pod)
}

func (k *Kubelet) podGone(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.pods[pod.UID]
	k.mu.Unlock()
	if w != nil {
		w.gone()
	}
}

// ---- persistent volumes ----

func (k *Kubelet) ensureStorageClass(ctx context.Context) error {
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: k.opts.StorageClass},
		Provisioner:       "openbao-restore.io/harness-kubelet",
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	_, err := k.cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// claimDir is the directory of a claim's volume; it outlives pods.
func (k *Kubelet) claimDir(namespace, name string, uid types.UID) string {
	return filepath.Join(k.dir, "volumes", namespace+"_"+name+"_"+string(uid))
}

// claimChanged binds an unbound claim of our class to a new volume pinned
// to our node, writing both sides as the PV controller would.
func (k *Kubelet) claimChanged(o any) {
	pvc, ok := o.(*corev1.PersistentVolumeClaim)
	if !ok || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil ||
		ptr.Deref(pvc.Spec.StorageClassName, "") != k.opts.StorageClass {
		return
	}
	if err := k.bindClaim(pvc); err != nil && k.ctx.Err() == nil {
		k.logf("bind claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
}

func (k *Kubelet) bindClaim(pvc *corev1.PersistentVolumeClaim) error {
	ctx := k.ctx
	dir := k.claimDir(pvc.Namespace, pvc.Name, pvc.UID)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pvName := "harness-" + string(pvc.UID)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{
			"pv.kubernetes.io/provisioned-by": "openbao-restore.io/harness-kubelet", "pv.kubernetes.io/bound-by-controller": "yes"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              k.opts.StorageClass,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname",
					Operator: corev1.NodeSelectorOpIn, Values: []string{k.opts.Node}}},
			}}}},
		},
	}
	got, err := k.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = k.cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	if got.Status.Phase != corev1.VolumeBound {
		got.Status.Phase = corev1.VolumeBound
		if _, err := k.cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	claims := k.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace)
	c, err := claims.Get(ctx, pvc.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c.UID != pvc.UID || c.Spec.VolumeName != "" {
		return nil
	}
	c.Spec.VolumeName = pvName
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations["pv.kubernetes.io/bind-completed"] = "yes"
	c.Annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
	if c, err = claims.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		return err
	}
	c.Status.Phase = corev1.ClaimBound
	c.Status.AccessModes = modes
	c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: size}
	_, err = claims.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	return err
}

// ---- IP addresses ----

func pickSubnet(s string) (*net.IPNet, error) {
	if s == "" {
		x, err := rand.Int(rand.Reader, big.NewInt(155))
		if err != nil {
			return nil, err
		}
		y, err := rand.Int(rand.Reader, big.NewInt(256))
		if err != nil {
			return nil, err
		}
		s = fmt.Sprintf("127.%d.%d.0/24", 100+x.Int64(), y.Int64())
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	ones, bits := n.Mask.Size()
	if n.IP.To4() == nil || bits-ones < 3 {
		return nil, fmt.Errorf("subnet %s: want an IPv4 network of at least 8 addresses", s)
	}
	return n, nil
}

func ipAdd(ip net.IP, n int) net.IP {
	v := new(big.Int).SetBytes(ip.To4())
	v.Add(v, big.NewInt(int64(n)))
	b := v.Bytes()
	out := make(net.IP, 4)
	copy(out[4-len(b):], b)
	return out
}

// allocateIP picks the pod's IP (see Options.IPs) and records it.
func (k *Kubelet) allocateIP(pod *corev1.Pod) (string, error) {
	want := ""
	if k.opts.IPs != nil {
		want = k.opts.IPs(pod)
	}
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	defer k.mu.Unlock()
	if want != "" {
		if net.ParseIP(want) == nil {
			return "", fmt.Errorf("IPs hook returned %q, not an IP", want)
		}
		if holder, ok := k.ipsUsed[want]; ok && holder != pod.UID {
			return "", fmt.Errorf("IP %s is still held by another pod", want)
		}
		k.ipsUsed[want] = pod.UID
		k.lastIP[key] = want
		return want, nil
	}
	if last, ok := k.lastIP[key]; ok {
		if holder, used := k.ipsUsed[last]; !used || holder == pod.UID {
			k.ipsUsed[last] = pod.UID
			return last, nil
		}
	}
	ones, bits := k.subnet.Mask.Size()
	size := 1 << (bits - ones)
	taken := map[string]bool{}
	for _, ip := range k.lastIP {
		taken[ip] = true
	}
	// Prefer addresses no pod had before, then any free one.
	for _, avoidPast := range []bool{true, false} {
		for i := 2; i < size-1; i++ {
			ip := ipAdd(k.subnet.IP, i).String()
			if _, used := k.ipsUsed[ip]; used || (avoidPast && taken[ip]) {
				continue
			}
			k.ipsUsed[ip] = pod.UID
			k.lastIP[key] = ip
			return ip, nil
		}
	}
	return "", fmt.Errorf("no free address in %s", k.subnet)
}

func (k *Kubelet) releaseIP(ip string, uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ipsUsed[ip] == uid {
		delete(k.ipsUsed, ip)
	}
}

// ---- apiserver address and CA ----

func hostPort(host string) (string, string, error) {
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		u, err = url.Parse("https://" + host)
		if err != nil {
			return "", "", fmt.Errorf("apiserver address %q: %w", host, err)
		}
	}
	h, p := u.Hostname(), u.Port()
	if p == "" {
		p = "443"
	}
	return h, p, nil
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
