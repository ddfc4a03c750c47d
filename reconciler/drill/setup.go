package drill

import (
	"context"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// AddControllers adds a Reconciler for each drill XR kind to mgr once the
// API serves it (the drill's XRD may come after the reconciler starts),
// keeping the drills of these namespaces (all when empty).
func AddControllers(mgr ctrl.Manager, namespaces []string, opts controller.Options) error {
	return mgr.Add(&setup{mgr: mgr, namespaces: namespaces, opts: opts})
}

type setup struct {
	mgr        ctrl.Manager
	namespaces []string
	opts       controller.Options
}

// NeedLeaderElection: only the leader keeps the drills' time.
func (s *setup) NeedLeaderElection() bool { return true }

func (s *setup) Start(ctx context.Context) error {
	err := xrkinds.Each(ctx, s.mgr.GetRESTMapper(), schemas.DrillXRs, func(gvk schema.GroupVersionKind) error {
		r := &Reconciler{GVK: gvk, Cache: s.mgr.GetCache(), Client: s.mgr.GetClient(), APIReader: s.mgr.GetAPIReader(),
			Recorder: s.mgr.GetEventRecorder(FieldManager), Namespaces: s.namespaces}
		if err := r.SetupWithManager(s.mgr, s.opts); err != nil {
			return err
		}
		log.FromContext(ctx).Info("keeping drills", "kind", gvk.String())
		return nil
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// SetupWithManager watches the drills, their runs' restores (which carry
// the drill's XR as Crossplane's composite label) and the source clusters
// (a new backup counts for everySuccessfulBackups). A run's check Job is
// polled while it is awaited (checkPoll): watching Jobs would cache every
// Job of the cluster for a few seconds of waiting a week.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	xr := &unstructured.Unstructured{}
	xr.SetGroupVersionKind(r.GVK)
	claim := &unstructured.Unstructured{}
	claim.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.Group, Version: schemas.Version, Kind: schemas.ClaimKind})
	cluster := &unstructured.Unstructured{}
	cluster.SetGroupVersionKind(schemas.ClusterGVK)
	name := "drill-" + strings.ToLower(r.GVK.Kind)
	if r.GVK == schemas.NamespacedDrillXR {
		name += "-ns"
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(xr).
		Watches(claim, handler.EnqueueRequestsFromMapFunc(r.drillOf)).
		Watches(cluster, handler.EnqueueRequestsFromMapFunc(r.drillsOf)).
		WithOptions(opts).
		Complete(r)
}

// drillOf maps a run's restore to its drill.
func (r *Reconciler) drillOf(_ context.Context, o client.Object) []reconcile.Request {
	if o.GetLabels()[schemas.LabelDrill] == "" {
		return nil
	}
	xr := o.GetLabels()[schemas.LabelComposite]
	if xr == "" {
		return nil
	}
	key := types.NamespacedName{Name: xr}
	if r.GVK == schemas.NamespacedDrillXR {
		key.Namespace = o.GetNamespace()
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// drillsOf maps a source cluster to the drills of its namespace.
func (r *Reconciler) drillsOf(ctx context.Context, o client.Object) []reconcile.Request {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(r.GVK.GroupVersion().WithKind(r.GVK.Kind + "List"))
	if err := r.Cache.List(ctx, list); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, d := range list.Items {
		src, _, _ := unstructured.NestedString(d.Object, "spec", "source", "cluster")
		if src == o.GetName() && namespaceOf(&d) == o.GetNamespace() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&d)})
		}
	}
	return out
}
