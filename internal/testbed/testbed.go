// Package testbed starts a real, loopback-only Kubernetes control plane for
// tests: envtest's etcd and kube-apiserver, plus kube-controller-manager,
// kube-scheduler and kwok as child processes, so that Jobs and StatefulSets
// actually run (kwok plays the kubelet for one fake node). The binaries are
// the pinned builds of hack/tool.sh, found through internal/testbin; nothing
// is downloaded and no test skips for want of a binary.
//
// One control plane per test package is the intended use: call Main from
// TestMain and Shared from each test. Start gives a test its own.
package testbed

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

var (
	//go:embed assets/kwok.x-k8s.io_stages.yaml
	kwokStageCRD []byte
	//go:embed assets/default-stages.yaml
	kwokDefaultStages []byte
)

// NodeName is the fake node kwok manages; every pod is scheduled there.
const NodeName = "kwok-node-0"

// Directories of CRDs tests usually install.
var (
	// TestCRDs holds fixtures such as the minimal OpenBaoCluster CRD.
	TestCRDs = filepath.Join(testbin.Root(), "test", "crds")
	// ReconcilerCRDs holds the LockRequest CRD, as the package ships it.
	ReconcilerCRDs = filepath.Join(testbin.Root(), "package", "reconciler", "crds")
)

// Options configure a control plane.
type Options struct {
	// CRDDirs are directories (or files) of CRDs installed at start; Start
	// waits until they are Established.
	CRDDirs []string
	// NoKCM, NoScheduler, NoKwok leave out those components, for tests
	// that need only the API.
	NoKCM, NoScheduler, NoKwok bool
	// OperatorPolicy installs the stand-in for openbao-operator's
	// admission policy on the objects it manages (operator.go), as on a
	// real installation: a stack that runs OpenBao pods has it on.
	OperatorPolicy bool
}

// Env is a running control plane.
type Env struct {
	// Config is an admin (system:masters) REST config.
	Config *rest.Config
	// Client is an uncached admin client whose scheme knows the built-in
	// kinds, CRDs and LockRequests.
	Client client.Client
	Scheme *runtime.Scheme
	// Kubeconfig is the path of an admin kubeconfig, for child processes.
	Kubeconfig string
	// BinDir holds kube-apiserver, etcd, kubectl and friends.
	BinDir string
	// Dir holds the logs and state of this control plane.
	Dir string

	env   *envtest.Environment
	procs []*proc

	operatorOnce sync.Once
	operator     client.Client
	operatorErr  error
	reaper       *proc
	tmp          bool
}

// NewScheme returns a scheme with the built-in kinds, CRDs and LockRequests.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	must(clientgoscheme.AddToScheme(s))
	must(apiextensionsv1.AddToScheme(s))
	must(lockv1alpha1.AddToScheme(s))
	return s
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// bins resolves every binary through hack/tool.sh (building on first use).
// They share one directory, which is also what KUBEBUILDER_ASSETS would be.
func bins(t testing.TB, opts Options) (dir string, paths map[string]string) {
	t.Helper()
	// kubectl is not needed to run the control plane; tests that want it
	// ask testbin.Path for it.
	names := []string{"etcd", "kube-apiserver"}
	if !opts.NoKCM {
		names = append(names, "kube-controller-manager")
	}
	if !opts.NoScheduler {
		names = append(names, "kube-scheduler")
	}
	if !opts.NoKwok {
		names = append(names, "kwok")
	}
	// `go test ./...` runs packages in parallel. On a fresh machine each
	// would build kube-apiserver at once (about 2 GB and 10 minutes each);
	// a lock shared by every test binary makes the first build and the
	// others find the result.
	unlock := lockCache(t)
	defer unlock()
	paths = map[string]string{}
	for _, n := range names {
		paths[n] = testbin.Path(t, n)
	}
	return filepath.Dir(paths["kube-apiserver"]), paths
}

// lockCache takes an exclusive lock on a file in the tools cache of
// hack/tool.sh, waiting for any other test binary holding it.
func lockCache(t testing.TB) (unlock func()) {
	t.Helper()
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("testbed: no cache directory: %v", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "openbao-restore")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".testbed-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		t.Fatalf("testbed: lock %s: %v", f.Name(), err)
	}
	// Closing the file releases the lock.
	return func() { _ = f.Close() }
}

// Start starts a control plane that is stopped when the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	testbin.SkipShort(t, "a control plane")
	e, err := start(t, opts, t.TempDir())
	if err != nil {
		if e != nil {
			e.Stop()
		}
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs(t)
		}
		e.Stop()
	})
	return e
}

func start(t testing.TB, opts Options, dir string) (*Env, error) {
	t.Helper()
	binDir, paths := bins(t, opts)
	began := time.Now()
	te := &envtest.Environment{
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
		// Explicit paths, so neither KUBEBUILDER_ASSETS nor a download can
		// substitute other binaries.
		BinaryAssetsDirectory: binDir,
	}
	if !opts.NoKwok {
		stages := filepath.Join(dir, "kwok-stage-crd.yaml")
		if err := os.WriteFile(stages, kwokStageCRD, 0o600); err != nil {
			return nil, err
		}
		te.CRDDirectoryPaths = append(te.CRDDirectoryPaths, stages)
	}
	te.CRDDirectoryPaths = append(te.CRDDirectoryPaths, opts.CRDDirs...)
	api := te.ControlPlane.GetAPIServer()
	api.Path = paths["kube-apiserver"]
	te.ControlPlane.Etcd = &envtest.Etcd{Path: paths["etcd"]}
	// Without TaintNodesByCondition off, kwok's node keeps a not-ready
	// taint (no node-lifecycle controller runs); ServiceAccount admission
	// would require a token controller we do not run.
	api.Configure().Set("disable-admission-plugins", "ServiceAccount,TaintNodesByCondition")
	// The advertise address is loopback; the endpoint reconciler would
	// publish it as the kubernetes Service's endpoint for nothing.
	api.Configure().Set("endpoint-reconciler-type", "none")
	// Tests never need durability, and fsync dominates etcd's latency.
	te.ControlPlane.Etcd.Configure().Set("unsafe-no-fsync", "true")

	e := &Env{env: te, BinDir: binDir, Dir: dir, Scheme: NewScheme()}
	// The watchdog first, so that even a timeout during start leaks nothing.
	var err error
	if e.reaper, err = startReaper(dir, dir); err != nil {
		return nil, err
	}
	cfg, err := te.Start()
	if err != nil {
		return e, fmt.Errorf("envtest start: %w", err)
	}
	e.Config = cfg
	if e.Client, err = client.New(cfg, client.Options{Scheme: e.Scheme}); err != nil {
		return e, err
	}
	admin, err := te.AddUser(envtest.User{Name: "testbed-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return e, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return e, err
	}
	e.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, kc, 0o600); err != nil {
		return e, err
	}
	t.Logf("testbed: etcd + kube-apiserver up in %s (logs in %s)", time.Since(began).Round(time.Millisecond), dir)

	if opts.OperatorPolicy {
		if err := e.installOperatorPolicy(context.Background()); err != nil {
			return e, err
		}
	}
	if err := e.startHelpers(opts, paths); err != nil {
		return e, err
	}
	t.Logf("testbed: control plane ready in %s", time.Since(began).Round(time.Millisecond))
	return e, nil
}

func (e *Env) startHelpers(opts Options, paths map[string]string) error {
	kc := "--kubeconfig=" + e.Kubeconfig
	// kube-controller-manager and kwok act under the identities a real
	// cluster gives them (with every permission), which the operator's
	// admission policy lets through.
	as := func(user string) (string, error) {
		path, err := e.UserKubeconfig(user, "system:masters")
		return "--kubeconfig=" + path, err
	}
	if !opts.NoKCM {
		kc, err := as(kcmUser)
		if err != nil {
			return err
		}
		p, err := startProc(e.Dir, "kube-controller-manager", paths["kube-controller-manager"], nil, kc,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
			"--use-service-account-credentials=false",
			"--controllers=job-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,statefulset-controller,disruption-controller",
			"--kube-api-qps=200", "--kube-api-burst=400")
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
	}
	if !opts.NoScheduler {
		p, err := startProc(e.Dir, "kube-scheduler", paths["kube-scheduler"], nil, kc,
			"--authentication-kubeconfig="+e.Kubeconfig, "--authorization-kubeconfig="+e.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
			"--kube-api-qps=200", "--kube-api-burst=400")
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
	}
	if opts.NoKwok {
		return nil
	}
	ctx := context.Background()
	if err := e.ApplyYAML(ctx, kwokDefaultStages); err != nil {
		return fmt.Errorf("default stages: %w", err)
	}
	// HOME points into the state dir so that a user's ~/.kwok/kwok.yaml
	// cannot change the fake kubelet's behaviour.
	home := filepath.Join(e.Dir, "kwok-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	kc, err := as(kubeletUser)
	if err != nil {
		return err
	}
	startKwok := func() (*proc, error) {
		p, err := startProc(e.Dir, "kwok", paths["kwok"], []string{"HOME=" + home}, kc,
			"--enable-crds=Stage",
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
			"--cidr=10.0.0.0/16", "--node-ip=10.0.0.2")
		if err == nil {
			e.procs = append(e.procs, p)
		}
		return p, err
	}
	kwok, err := startKwok()
	if err != nil {
		return err
	}
	if err := e.createNode(ctx); err != nil {
		return err
	}
	// kwok once sat on a loaded machine for over a minute after "Watch
	// nodes" without ever taking the node (CI, 2026-12-04): start it again,
	// once, before giving up.
	if e.nodeReady(ctx, 45*time.Second) {
		return nil
	}
	if err := e.exitedHelper(); err != nil {
		return err
	}
	kwok.stop(5 * time.Second)
	if _, err := startKwok(); err != nil {
		return err
	}
	if e.nodeReady(ctx, 60*time.Second) {
		return nil
	}
	if err := e.exitedHelper(); err != nil {
		return err
	}
	return errors.New("kwok's node never became Ready (kwok was started twice)")
}

// createNode registers kwok's fake node.
func (e *Env) createNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        NodeName,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		Labels: map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux",
			"kubernetes.io/arch": "amd64", "type": "kwok"},
	}}
	if err := e.Client.Create(ctx, node); err != nil {
		return err
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("1000")}
	node.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity}
	if err := e.Client.Status().Update(ctx, node); err != nil {
		return err
	}
	return nil
}

// exitedHelper is an error with the log of a helper (other than a kwok
// stopped for a restart) that exited, nil when none did.
func (e *Env) exitedHelper() error {
	for _, p := range e.procs {
		if p.exited() && !p.stopped.Load() {
			return fmt.Errorf("%s exited at start:\n%s", p.name, p.tail(3000))
		}
	}
	return nil
}

// nodeReady waits up to timeout for kwok's node to be Ready; false also
// when a helper exited.
func (e *Env) nodeReady(ctx context.Context, timeout time.Duration) bool {
	node := &corev1.Node{}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if e.exitedHelper() != nil {
			return false
		}
		if err := e.Client.Get(ctx, client.ObjectKey{Name: NodeName}, node); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Stop stops every process of the control plane, helpers first.
func (e *Env) Stop() {
	if e == nil {
		return
	}
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop(5 * time.Second)
	}
	e.procs = nil
	if e.env != nil {
		_ = e.env.Stop()
		e.env = nil
	}
	if e.reaper != nil {
		e.reaper.stop(time.Second)
		e.reaper = nil
	}
	if e.tmp {
		_ = os.RemoveAll(e.Dir)
	}
}

// AddUser returns a REST config for a user with these groups, whom RBAC
// alone authorizes (for least-privilege tests).
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// UserKubeconfig writes a kubeconfig for a user with these groups, whom
// RBAC alone authorizes, and returns its path: for a controller run as a
// separate process under least privilege.
func (e *Env) UserKubeconfig(name string, groups ...string) (string, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return "", err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.Dir, "user-"+dnsLabel(name, 60)+".kubeconfig")
	return path, os.WriteFile(path, kc, 0o600)
}

// RoleUser returns a REST config for a user bound to the ClusterRole in
// roleFile (applied first) and to nothing else, so that a test of a
// controller run as that user also proves its role suffices.
func (e *Env) RoleUser(ctx context.Context, user, roleFile string) (*rest.Config, error) {
	data, err := os.ReadFile(roleFile)
	if err != nil {
		return nil, err
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil || role.Name == "" {
		return nil, fmt.Errorf("%s is not one ClusterRole: %v", roleFile, err)
	}
	if err := e.ApplyYAML(ctx, data); err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := e.Client.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return e.AddUser(user)
}

// Logs returns the tail of a component's log (kube-controller-manager,
// kube-scheduler, kwok).
func (e *Env) Logs(name string, n int) string {
	return tailFile(filepath.Join(e.Dir, name+".log"), n)
}

func (e *Env) dumpLogs(t testing.TB) {
	t.Helper()
	for _, p := range e.procs {
		t.Logf("---- %s log tail ----\n%s", p.name, p.tail(3000))
	}
}

var shared struct {
	mu   sync.Mutex
	opts Options
	env  *Env
	err  error
}

// Main runs the package's tests with one shared control plane, which the
// first test to call Shared starts and Main stops at the end. It exits.
func Main(m *testing.M, opts Options) {
	shared.opts = opts
	code := m.Run()
	shared.mu.Lock()
	if shared.env != nil {
		shared.env.Stop()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Shared returns the package's shared control plane, starting it on first
// use. Tests using it must not assume they are alone: use a namespace of
// their own (Namespace) and unique names for cluster-scoped objects.
func Shared(t testing.TB) *Env {
	t.Helper()
	testbin.SkipShort(t, "a control plane")
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.env != nil {
		return shared.env
	}
	if shared.err != nil {
		t.Fatalf("testbed: the shared control plane failed to start earlier: %v", shared.err)
	}
	// Set before starting: if start calls t.Fatal (via testbin.Path), the
	// goroutine exits here and later tests must not retry.
	shared.err = errors.New("start aborted")
	dir, err := os.MkdirTemp("", "testbed-")
	if err != nil {
		t.Fatal(err)
	}
	e, err := start(t, shared.opts, dir)
	if err != nil {
		if e != nil {
			e.dumpLogs(t)
			e.Stop()
		}
		shared.err = err
		t.Fatalf("testbed: %v", err)
	}
	e.tmp = true
	shared.env, shared.err = e, nil
	return e
}

// Namespace creates a namespace for this test, deleted when it ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: dnsLabel(t.Name(), 40) + "-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs(t)
		}
		_ = e.Client.Delete(context.Background(), ns)
	})
	return ns.Name
}

// dnsLabel turns s into a valid DNS label prefix of at most n characters.
func dnsLabel(s string, n int) string {
	b := make([]byte, 0, len(s))
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b = append(b, byte(r))
		case len(b) > 0 && b[len(b)-1] != '-':
			b = append(b, '-')
		}
		if len(b) >= n {
			break
		}
	}
	out := strings.Trim(string(b), "-")
	if out == "" {
		out = "test"
	}
	return out
}
