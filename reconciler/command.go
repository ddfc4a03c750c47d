// Package reconciler is the companion controller of openbao-restore: it runs
// its two controllers, the operation lock (reconciler/lock) and the phase of
// each restore with the restart after it (reconciler/phase,
// reconciler/restart), in one controller-runtime manager, with leader
// election, health probes and metrics. main.go wires Command into the CLI.
package reconciler

import (
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/openbao-restore/openbao-restore/reconciler/drill"
	"github.com/openbao-restore/openbao-restore/reconciler/lock"
	"github.com/openbao-restore/openbao-restore/reconciler/phase"
	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// Command runs the reconciler until SIGTERM or SIGINT. The API server is
// found as usual: in-cluster, or $KUBECONFIG.
type Command struct {
	Debug                   bool          `short:"d" help:"Emit debug logs."`
	MetricsBindAddress      string        `default:":8080" help:"Address of the Prometheus metrics endpoint; 0 disables it."`
	HealthProbeBindAddress  string        `default:":8081" help:"Address of /healthz and /readyz; 0 disables them."`
	LeaderElect             bool          `default:"true" negatable:"" help:"Run only while holding the leader lease, so that replicas never reconcile at once."`
	LeaderElectionNamespace string        `env:"POD_NAMESPACE" help:"Namespace of the leader lease (the pod's own)."`
	LeaseDuration           time.Duration `default:"15s" help:"Leader lease duration."`
	Namespace               []string      `help:"Watch only these namespaces (default: all)."`
	Concurrency             int           `default:"4" help:"Restores (and, apart, LockRequests) reconciled in parallel. Work that ends a restore (a finished Job, a released lock) goes ahead of the queue; more workers only put more requests in flight on a busy API server, which slows that work down (test/bench: p99 under 1 s at 200 restores with 4, up to 5 s with 16)."`
	HealthURL               string        `default:"{{.Scheme}}://{{.IP}}:8200" help:"Where the restart after a restore reaches each OpenBao pod's sys/health: a Go template over .Scheme (https unless the cluster disables TLS), .IP, .Name, .Namespace, .Cluster and .Ordinal, with an add function."`
	HealthTimeout           time.Duration `default:"2s" help:"Timeout of one health request."`
	RestartTimeout          time.Duration `default:"5m" help:"How long the restart waits for a replacement pod, or the cluster, to be Ready and healthy before the restore goes Unknown."`
	SealedTimeout           time.Duration `default:"1m" help:"How long the restart waits for a sealed pod to unseal before the restore goes Unknown."`
	BootstrapTimeout        time.Duration `default:"30m" help:"How long a fresh-target restore (spec.clusterTemplate) waits for its new cluster to come up (initialised, at the expected version) before it fails."`
	StepDownTimeout         time.Duration `default:"2m" help:"How long the restart waits for the leader's step-down (a Job of the executor, with the restore's credentials) before it restarts the leader anyway; 0 skips the step-down."`
	RestartPoll             time.Duration `default:"1s" help:"How often a restart under way looks again at the pods and their health."`
	KubeAPIQPS              float32       `name:"kube-api-qps" default:"500" help:"Requests per second to the API server (a client-side limit; the API server's priority and fairness protects it too). 0 means 500."`
	KubeAPIBurst            int           `name:"kube-api-burst" default:"1000" help:"Burst of requests to the API server. 0 means 1000."`
}

// Validate refuses settings that would stall the reconciler rather than
// run it (kong calls it after parsing).
func (c *Command) Validate() error {
	switch {
	case c.KubeAPIQPS < 0:
		return fmt.Errorf("--kube-api-qps=%v: must be positive (0 means the default, 500)", c.KubeAPIQPS)
	case c.KubeAPIBurst < 0:
		return fmt.Errorf("--kube-api-burst=%d: must be positive (0 means the default, 1000)", c.KubeAPIBurst)
	case c.Concurrency < 1:
		return fmt.Errorf("--concurrency=%d: must be at least 1", c.Concurrency)
	case c.RestartPoll < 0:
		return fmt.Errorf("--restart-poll=%s: must be positive", c.RestartPoll)
	}
	return nil
}

// Run the reconciler.
func (c *Command) Run() error {
	ctrl.SetLogger(zap.New(zap.UseDevMode(c.Debug)))
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	mgr, err := c.NewManager(cfg)
	if err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// NewManager builds the manager with every reconciler registered.
func (c *Command) NewManager(cfg *rest.Config) (ctrl.Manager, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// controller-runtime's default client limit (20 per second, burst 30),
	// and 100/200 after it, made 200 restores at once wait seconds on the
	// client, not on the API server (test/bench counts the requests).
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = c.KubeAPIQPS, c.KubeAPIBurst
	if cfg.QPS == 0 {
		cfg.QPS = 500
	}
	if cfg.Burst == 0 {
		cfg.Burst = 1000
	}
	opts := ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: c.MetricsBindAddress},
		HealthProbeBindAddress:  c.HealthProbeBindAddress,
		LeaderElection:          c.LeaderElect,
		LeaderElectionID:        "openbao-restore-reconciler",
		LeaderElectionNamespace: c.LeaderElectionNamespace,
		LeaseDuration:           &c.LeaseDuration,
		// A new leader must not wait out a lease its predecessor held
		// when it stopped cleanly.
		LeaderElectionReleaseOnCancel: true,
	}
	if len(c.Namespace) > 0 {
		opts.Cache.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range c.Namespace {
			opts.Cache.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the caches have synced: before that, decisions would be
	// made on an empty view.
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("caches not synced")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	lr := &lock.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("openbao-restore-lock")}
	if err := lr.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: c.Concurrency}); err != nil {
		return nil, err
	}
	prober, err := restart.NewProber(c.HealthURL, c.HealthTimeout)
	if err != nil {
		return nil, err
	}
	follow := phase.RestartOptions{Prober: prober, Poll: c.RestartPoll,
		Timeouts: restart.Timeouts{Gate: c.RestartTimeout, Sealed: c.SealedTimeout, StepDown: c.StepDownTimeout}}
	if err := phase.AddControllers(mgr, c.Namespace, controller.Options{MaxConcurrentReconciles: c.Concurrency}, phase.Follow{Restart: follow, Bootstrap: c.BootstrapTimeout}); err != nil {
		return nil, err
	}
	if err := drill.AddControllers(mgr, c.Namespace, controller.Options{MaxConcurrentReconciles: c.Concurrency}); err != nil {
		return nil, err
	}
	return mgr, nil
}

// Scheme knows the built-in kinds and LockRequests. OpenBaoClusters and the
// XR kinds are handled as unstructured, so they need no Go types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := lockv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
