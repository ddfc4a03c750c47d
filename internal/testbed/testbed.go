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
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

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
