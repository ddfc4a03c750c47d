package phase

import (
	"context"
	"strings"

	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/openbao-restore/openbao-restore/reconciler/prio"
	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

const (
	// FieldManager owns the XR status fields this reconciler writes.
	FieldManager = "openbao-restore-phase"

	// labelJobName is the Job controller's label on a Job's pods.
	labelJobName = "batch.kubernetes.io/job-name"

	clusterIndex = "restore.cluster"
)

// Least privilege (rbac/role.yaml, which the tests run under): reads of
// what a restore is made of, and patches (server-side apply) of the XRs'
// status; patches of the XRs' and OpenBaoClusters' metadata only for a
// Retained fresh target (retain.go: the finalizer, the owner reference).
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestores,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestores/status,verbs=patch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestores,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestores/status,verbs=patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=lockrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=openbao.org,resources=openbaoclusters,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// RestartOptions configure the pod restarts after a restore.
type RestartOptions struct {
	// Prober reads each pod's sys/health.
	Prober *restart.Prober
	// Timeouts bound the waits; zero means DefaultTimeouts.
	Timeouts restart.Timeouts
	// Poll is how often a restart under way looks again at the pods and
	// their health (OpenBao's health cannot be watched); default 1 s.
	Poll time.Duration
}

// Follow configures how the phase follows a restore.
type Follow struct {
	Restart RestartOptions
	// Bootstrap bounds the wait for a fresh target to come up (zero:
	// schemas.DefaultBootstrapTimeout).
	Bootstrap time.Duration
}

// AddControllers adds a Reconciler for each XR kind to mgr as soon as the
// API serves the kind (the XRDs may be installed after the reconciler
// starts), with a cache of the restore Jobs in these namespaces (all when
// empty).
func AddControllers(mgr ctrl.Manager, namespaces []string, opts controller.Options, follow Follow) error {
	return mgr.Add(&setup{mgr: mgr, namespaces: namespaces, opts: opts, follow: follow})
}

type setup struct {
	mgr        ctrl.Manager
	namespaces []string
	opts       controller.Options
	follow     Follow
}

// NeedLeaderElection: the controllers it adds reconcile, so only the
// leader registers them.
func (s *setup) NeedLeaderElection() bool { return true }

func (s *setup) Start(ctx context.Context) error {
	jobs, err := NewJobCache(s.mgr, s.namespaces)
	if err != nil {
		return err
	}
	if err := s.mgr.Add(jobs); err != nil {
		return err
	}
	// The restore's pods, which pods reads, from the start: an informer
	// made on the first read would hold that reconcile until it synced.
	if _, err := jobs.GetInformer(ctx, &corev1.Pod{}, cache.BlockUntilSynced(false)); err != nil {
		return err
	}
	members, err := NewMemberCache(s.mgr, s.namespaces)
	if err != nil {
		return err
	}
	if err := s.mgr.Add(members); err != nil {
		return err
	}
	err = xrkinds.Each(ctx, s.mgr.GetRESTMapper(), schemas.XRs, func(gvk schema.GroupVersionKind) error {
		r := &Reconciler{GVK: gvk, Client: s.mgr.GetClient(), Cache: s.mgr.GetCache(), APIReader: s.mgr.GetAPIReader(), Jobs: jobs, Members: members,
			Recorder: s.mgr.GetEventRecorder(FieldManager), Namespaces: s.namespaces, Restart: s.follow.Restart,
			BootstrapTimeout: s.follow.Bootstrap}
		if err := r.SetupWithManager(s.mgr, s.opts); err != nil {
			return err
		}
		log.FromContext(ctx).Info("following restores", "kind", gvk.String())
		return nil
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// NewJobCache is a cache holding only the restore Jobs (those labelled
// with schemas.LabelRestore), not every Job of the cluster.
func NewJobCache(mgr ctrl.Manager, namespaces []string) (cache.Cache, error) {
	return labelledCache(mgr, namespaces, schemas.LabelRestore, nil)
}

// NewMemberCache is a cache of the StatefulSets and pods labelled
// schemas.LabelOperatorCluster, as openbao-operator labels an OpenBaoCluster's, holding
// only what the restart reads of them: a cluster's pods are few, but a
// namespace may hold many other pods, and a pod's spec is most of its size.
func NewMemberCache(mgr ctrl.Manager, namespaces []string) (cache.Cache, error) {
	return labelledCache(mgr, namespaces, schemas.LabelOperatorCluster, slim)
}

// labelledCache is a cache of the objects carrying label, in these
// namespaces (all when empty), each passed through transform if set.
func labelledCache(mgr ctrl.Manager, namespaces []string, label string, transform toolscache.TransformFunc) (cache.Cache, error) {
	req, err := labels.NewRequirement(label, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	opts := cache.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultLabelSelector: labels.NewSelector().Add(*req), DefaultTransform: transform}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return cache.New(mgr.GetConfig(), opts)
}

// slim keeps of a pod or StatefulSet what members reads.
func slim(o any) (any, error) {
	switch v := o.(type) {
	case *corev1.Pod:
		v.ManagedFields = nil
		v.Spec = corev1.PodSpec{}
		v.Status = corev1.PodStatus{PodIP: v.Status.PodIP, Conditions: v.Status.Conditions}
	case *appsv1.StatefulSet:
		v.ManagedFields = nil
		v.Spec = appsv1.StatefulSetSpec{Replicas: v.Spec.Replicas, Selector: v.Spec.Selector}
		v.Status = appsv1.StatefulSetStatus{}
	}
	return o, nil
}

// SetupWithManager registers the reconciler for its XR kind, watching the
// XRs, their Jobs, their LockRequests and the OpenBaoClusters they name.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Restart.Poll == 0 {
		r.Restart.Poll = time.Second
	}
	if r.Restart.Prober == nil {
		p, err := restart.NewProber(restart.DefaultHealthURL, 2*time.Second)
		if err != nil {
			return err
		}
		r.Restart.Prober = p
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), r.newXR(), clusterIndex, func(o client.Object) []string {
		u := o.(*unstructured.Unstructured)
		c, _, _ := unstructured.NestedString(u.Object, "spec", "cluster")
		return []string{r.restoreNamespace(u) + "/" + c}
	}); err != nil {
		return err
	}
	name := "phase-" + strings.ToLower(r.GVK.Kind)
	if r.namespaced() {
		name += "-ns"
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named(name).
		// The event a reconcile stopped for (reconciler/stale) goes ahead
		// of the queue: that reconcile has waited its turn once already.
		Watches(r.newXR(), prio.When(&handler.EnqueueRequestForObject{}, func(_, new client.Object) bool {
			return r.own.Skipped(client.ObjectKeyFromObject(new), new.GetResourceVersion())
		})).
		WatchesRawSource(source.Kind(r.Jobs, &batchv1.Job{}, prio.When(handler.TypedEnqueueRequestsFromMapFunc(r.xrForJob), jobEnded))).
		Watches(&lockv1alpha1.LockRequest{}, handler.EnqueueRequestsFromMapFunc(r.xrForLock)).
		Watches(clusterObject(), handler.EnqueueRequestsFromMapFunc(r.xrsForCluster))
	if r.Members != nil {
		b = b.WatchesRawSource(source.Kind(r.Members, &corev1.Pod{}, handler.TypedEnqueueRequestsFromMapFunc(r.xrsForPod)))
	}
	return b.WithOptions(opts).Complete(r)
}

var _ manager.LeaderElectionRunnable = (*setup)(nil)
