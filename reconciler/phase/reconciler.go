package phase

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/openbao-restore/openbao-restore/reconciler/prio"
	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/reconciler/stale"
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
// status only.
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=xopenbaorestores/status,verbs=patch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestores,verbs=get;list;watch
// +kubebuilder:rbac:groups=ns.restore.openbao-restore.io,resources=openbaorestores/status,verbs=patch
// +kubebuilder:rbac:groups=restore.openbao-restore.io,resources=lockrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=openbao.org,resources=openbaoclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler follows the restores of one XR kind.
type Reconciler struct {
	GVK schema.GroupVersionKind
	// Client reads typed objects from the manager's cache and writes to
	// the API.
	Client client.Client
	// Cache reads the XRs and OpenBaoClusters (unstructured, which the
	// manager's client would read from the API) from the manager's cache.
	Cache client.Reader
	// APIReader reads from the API: the pods of a finished Job and the
	// LockRequest's submission record are read fresh before a failure is
	// called Failed.
	APIReader client.Reader
	// Jobs is a cache of the restore Jobs only (by label).
	Jobs cache.Cache
	// Members, if set, is a cache of the StatefulSets and pods labelled
	// schemas.LabelOperatorCluster (NewMemberCache): the restart reads them from it and
	// is woken by their changes. Without it, or for a cluster whose
	// StatefulSet lacks the label, the restart reads the API and polls.
	Members  cache.Cache
	Recorder events.EventRecorder
	// Now is the clock (tests may fix it).
	Now func() time.Time
	// Namespaces, if set, limits the restores followed to those running
	// in these namespaces (a legacy XR is cluster-scoped: its claim's
	// namespace counts).
	Namespaces []string
	// Observe, if set, is called after each write of a new phase (tests
	// measure latency with it).
	Observe func(xr types.NamespacedName, phase string)
	// Restart configures the follow-through after a restore.
	Restart RestartOptions

	writesMu sync.Mutex
	writes   map[types.NamespacedName]time.Time // last status write per XR
	// own are our own last status writes: a cached XR from before one
	// is stale, and its event is on its way.
	own stale.Writes
}

// RestartOptions configure the pod restarts after a restore.
type RestartOptions struct {
	// Prober reads each pod's sys/health.
	Prober *Prober
	// Timeouts bound the waits; zero means DefaultTimeouts.
	Timeouts Timeouts
	// Poll is how often a restart under way looks again at the pods and
	// their health (OpenBao's health cannot be watched); default 1 s.
	Poll time.Duration
}

// Setup registers a Reconciler for each XR kind as soon as the API serves
// it (the XRDs may be installed after the reconciler starts), with a cache
// of the restore Jobs in these namespaces (all when empty).
func Setup(mgr ctrl.Manager, namespaces []string, opts controller.Options, restart RestartOptions) error {
	return mgr.Add(&setup{mgr: mgr, namespaces: namespaces, opts: opts, restart: restart})
}

type setup struct {
	mgr        ctrl.Manager
	namespaces []string
	opts       controller.Options
	restart    RestartOptions
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
			Recorder: s.mgr.GetEventRecorder(FieldManager), Namespaces: s.namespaces, Restart: s.restart}
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

func (r *Reconciler) newXR() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(r.GVK)
	return u
}

func (r *Reconciler) namespaced() bool { return r.GVK == schemas.NamespacedXR }

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
		p, err := NewProber(DefaultHealthURL, 2*time.Second)
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

// jobEnded reports a Job that has just become Complete or Failed: the
// restore's next step (its Failed phase and released lock, or the restart)
// goes ahead of the queue.
func jobEnded(old, new *batchv1.Job) bool { return !ended(old) && ended(new) }

func ended(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// xrsForPod maps a cluster's pod to the restores of that cluster under
// way: a replacement that becomes Ready lets the restart go on at once.
func (r *Reconciler) xrsForPod(ctx context.Context, p *corev1.Pod) []ctrl.Request {
	c := p.Labels[schemas.LabelOperatorCluster]
	if c == "" {
		return nil
	}
	o := clusterObject()
	o.SetNamespace(p.Namespace)
	o.SetName(c)
	return r.xrsForCluster(ctx, o)
}

func clusterObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: schemas.ClusterGroup, Version: schemas.ClusterVersion, Kind: schemas.ClusterKind})
	return u
}

// restoreNamespace is where the restore runs: the claim's namespace for a
// legacy XR (the function writes it to status.plan.namespace too), the
// XR's own for a namespaced one.
func (r *Reconciler) restoreNamespace(xr *unstructured.Unstructured) string {
	if r.namespaced() {
		return xr.GetNamespace()
	}
	if ns, _, _ := unstructured.NestedString(xr.Object, "spec", "claimRef", "namespace"); ns != "" {
		return ns
	}
	ns, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "namespace")
	return ns
}

func (r *Reconciler) request(ns, name string) ctrl.Request {
	if !r.namespaced() {
		ns = ""
	}
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

// xrForJob maps a Job to its XR: the controller owner of our kind, else
// (no owner at all) Crossplane's composite label.
func (r *Reconciler) xrForJob(_ context.Context, j *batchv1.Job) []ctrl.Request {
	if ref := metav1.GetControllerOf(j); ref != nil {
		gv, _ := schema.ParseGroupVersion(ref.APIVersion)
		if ref.Kind == r.GVK.Kind && gv.Group == r.GVK.Group {
			return []ctrl.Request{r.request(j.Namespace, ref.Name)}
		}
		return nil
	}
	if xr := j.Labels[schemas.LabelComposite]; xr != "" {
		return []ctrl.Request{r.request(j.Namespace, xr)}
	}
	return nil
}

func (r *Reconciler) xrForLock(_ context.Context, o client.Object) []ctrl.Request {
	lr, ok := o.(*lockv1alpha1.LockRequest)
	if !ok {
		return nil
	}
	gv, _ := schema.ParseGroupVersion(lr.Spec.Restore.APIVersion)
	if lr.Spec.Restore.Kind != r.GVK.Kind || gv.Group != r.GVK.Group {
		return nil
	}
	return []ctrl.Request{r.request(lr.Namespace, lr.Spec.Restore.Name)}
}

func (r *Reconciler) xrsForCluster(ctx context.Context, o client.Object) []ctrl.Request {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(r.GVK.GroupVersion().WithKind(r.GVK.Kind + "List"))
	if err := r.Cache.List(ctx, list, client.MatchingFields{clusterIndex: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing restores of cluster", "cluster", o.GetName())
		return nil
	}
	var reqs []ctrl.Request
	for _, xr := range list.Items {
		if p, _, _ := unstructured.NestedString(xr.Object, "status", "phase"); !schemas.Terminal(p) {
			reqs = append(reqs, r.request(xr.GetNamespace(), xr.GetName()))
		}
	}
	return reqs
}

// Reconcile reads the facts of one restore, decides with Next and writes
// the owned status fields when they change.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	xr := r.newXR()
	if err := r.Cache.Get(ctx, req.NamespacedName, xr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.own.Stale(req.NamespacedName, xr.GetResourceVersion()) {
		return ctrl.Result{}, nil // our write's event will bring us back
	}
	if !xr.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, nil
	}
	if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, r.restoreNamespace(xr)) {
		return ctrl.Result{}, nil
	}
	cur := ReadStatus(xr)
	if schemas.Terminal(cur.Phase) {
		return r.nudge(ctx, xr, cur)
	}
	f, err := r.facts(ctx, xr, cur)
	if err != nil {
		return ctrl.Result{}, err
	}
	next, evs := Next(cur, f)
	for fresh := false; !sameStatus(cur, next); {
		if cosmetic(cur, next) {
			// Every XR write is a watch event for Crossplane, whose
			// circuit breaker stops reconciling a chatty XR (v2.4: a
			// burst of 50 events, then one every 2 s), and Crossplane
			// answers most writes with writes of its own. A write that
			// changes only a message or a condition waits until the XR's
			// last write is minWriteGap old.
			if wait := r.writeGap(req.NamespacedName); wait > 0 {
				return ctrl.Result{RequeueAfter: wait}, nil
			}
		}
		// A phase change, or the choice of a pod to delete, is written
		// only over the status it was decided from: the write carries
		// the resourceVersion read, so that a cache behind our previous
		// write can never write a terminal phase twice (with a later
		// completionTime, and its event again) or choose a pod twice.
		rv := ""
		if next.Phase != cur.Phase || chosen(cur, next) {
			rv = xr.GetResourceVersion()
		}
		r.wrote(req.NamespacedName)
		err := r.apply(ctx, xr, next, rv)
		if rv != "" && apierrors.IsConflict(err) && !fresh {
			// The XR changed since it was read: decide again on the XR as
			// the API has it.
			fresh = true
			xr = r.newXR()
			if err := r.APIReader.Get(ctx, req.NamespacedName, xr); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
			if fc := ReadStatus(xr); !sameStatus(fc, cur) {
				cur = fc
				if schemas.Terminal(cur.Phase) {
					return ctrl.Result{}, nil
				}
				next, evs = Next(cur, f)
			}
			continue
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		for _, e := range evs {
			typ := corev1.EventTypeNormal
			if e.Warning {
				typ = corev1.EventTypeWarning
			}
			r.Recorder.Eventf(xr, nil, typ, e.Reason, "Phase", "%s", e.Message)
		}
		if next.Phase != cur.Phase {
			transitions.WithLabelValues(r.GVK.Kind, next.Phase).Inc()
			if schemas.Terminal(next.Phase) && next.StartTime != nil && next.CompletionTime != nil {
				duration.WithLabelValues(next.Phase).Observe(next.CompletionTime.Sub(*next.StartTime).Seconds())
			}
			if r.Observe != nil {
				r.Observe(req.NamespacedName, next.Phase)
			}
		}
		break
	}
	// The status written (or already there) records the pod to delete;
	// only now is it deleted. After a crash this finishes the deletion.
	if next.Phase == schemas.PhaseRunning && next.Restart != nil && next.Restart.CompletedAt == nil {
		if err := r.deletePending(ctx, r.restoreNamespace(xr), next.Restart, f.Members); err != nil {
			return ctrl.Result{}, err
		}
		// OpenBao's health cannot be watched: poll while it is what the
		// restart waits for. Pods from the member cache wake us when
		// they change; then only the gates' timeouts need a look.
		if f.watched && !f.Members.waitsOnHealth() {
			return ctrl.Result{RequeueAfter: max(r.Restart.Poll, watchedRecheck)}, nil
		}
		return ctrl.Result{RequeueAfter: r.Restart.Poll}, nil
	}
	return ctrl.Result{}, nil
}

// watchedRecheck is how often a restart that waits on watched pods looks
// again anyway: the gates' timeouts and the slow-wait message are decided
// on a look.
const watchedRecheck = 5 * time.Second

// nudgeEvery is how often a finished restore whose XR Crossplane has stopped
// watching is written again: the half-open interval of Crossplane's watch
// circuit breaker (v2.4), which lets one event through that often.
const nudgeEvery = 30 * time.Second

// nudge makes sure Crossplane sees a terminal phase. Crossplane's circuit
// breaker drops the watch events of an XR that got too many (it then says
// Responsive=False), and with realtime compositions it does not poll: if
// the write of the terminal phase was dropped, the function would never
// run again to release the lock and mark the XR Ready. Until the function
// has seen the phase (status.plan.stage Finished), a restore whose XR's
// circuit is open is written again every nudgeEvery.
func (r *Reconciler) nudge(ctx context.Context, xr *unstructured.Unstructured, cur Status) (ctrl.Result, error) {
	if stage, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "stage"); stage == schemas.StageFinished || !circuitOpen(xr) {
		return ctrl.Result{}, nil
	}
	now := r.Now()
	if cur.Nudged != nil && now.Sub(*cur.Nudged) < nudgeEvery {
		return ctrl.Result{RequeueAfter: nudgeEvery - now.Sub(*cur.Nudged)}, nil
	}
	next := cur
	t := now.UTC().Truncate(time.Second)
	next.Nudged = &t
	if err := r.apply(ctx, xr, next, ""); err != nil {
		return ctrl.Result{}, err
	}
	log.FromContext(ctx).Info("Crossplane's watch circuit is open for this XR: wrote it again so that the function sees the phase", "phase", cur.Phase)
	return ctrl.Result{RequeueAfter: nudgeEvery}, nil
}

// circuitOpen reports whether Crossplane says it stopped watching the XR
// closely (its Responsive condition False).
func circuitOpen(xr *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == schemas.CondResponsive && m["status"] == "False" {
			return true
		}
	}
	return false
}

// minWriteGap is the least time between two writes of an XR's status that
// change only messages or conditions (the refill time of Crossplane's
// watch circuit breaker for one update event).
const minWriteGap = 2 * time.Second

// cosmetic reports whether next differs from cur only in its message or
// conditions: no phase, time, snapshot or restart progress changes.
func cosmetic(cur, next Status) bool {
	a, b := cur, next
	a.Message, b.Message = "", ""
	a.Conditions, b.Conditions = nil, nil
	return sameStatus(a, b)
}

// writeGap is how long a cosmetic write of the XR must still wait.
func (r *Reconciler) writeGap(xr types.NamespacedName) time.Duration {
	r.writesMu.Lock()
	defer r.writesMu.Unlock()
	last, ok := r.writes[xr]
	if !ok {
		return 0
	}
	return minWriteGap - r.Now().Sub(last)
}

// wrote records a write of the XR's status.
func (r *Reconciler) wrote(xr types.NamespacedName) {
	r.writesMu.Lock()
	defer r.writesMu.Unlock()
	if r.writes == nil {
		r.writes = map[types.NamespacedName]time.Time{}
	}
	// Forget old entries now and then: only the last two seconds matter.
	if len(r.writes) > 4096 {
		for k, t := range r.writes {
			if r.Now().Sub(t) > minWriteGap {
				delete(r.writes, k)
			}
		}
	}
	r.writes[xr] = r.Now()
}

// chosen reports whether next records a pod deletion that cur does not.
func chosen(cur, next Status) bool {
	n := 0
	if cur.Restart != nil {
		n = len(cur.Restart.Pods)
	}
	return next.Restart != nil && len(next.Restart.Pods) > n
}

// facts gathers what Next decides from.
func (r *Reconciler) facts(ctx context.Context, xr *unstructured.Unstructured, cur Status) (Facts, error) {
	ns := r.restoreNamespace(xr)
	spec, _, _ := unstructured.NestedMap(xr.Object, "spec")
	f := Facts{UID: string(xr.GetUID()), Now: r.Now(), Ack: xr.GetAnnotations()[schemas.AcknowledgeAnnotation], Timeouts: r.Restart.Timeouts}
	f.Force, _, _ = unstructured.NestedBool(spec, "force")

	// The contract's rules, but not the operator's policy (allowed
	// images, insecure endpoints): only the function knows the Input, and
	// it says so in its SpecValid condition.
	image, _, _ := unstructured.NestedString(spec, "image")
	policy := schemas.Policy{AllowInsecureEndpoints: true}
	if image != "" {
		policy.AllowedImages = []string{image}
	}
	_, vs, err := schemas.Validate(spec, policy)
	if err != nil {
		return f, err
	}
	f.Violations = vs
	if ns == "" && !r.namespaced() {
		f.Violations = append(f.Violations, schemas.Violation{Path: "spec.claimRef",
			Message: schemas.MsgNeedsClaim})
	}
	conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == schemas.CondSpecValid && m["status"] == "False" {
			f.FunctionInvalid, _ = m["message"].(string)
			if f.FunctionInvalid == "" {
				f.FunctionInvalid, _ = m["reason"].(string)
			}
		}
	}
	if ns == "" {
		return f, nil
	}

	cluster := clusterObject()
	clusterName, _, _ := unstructured.NestedString(spec, "cluster")
	scheme := "https"
	if err := r.Cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: clusterName}, cluster); err == nil {
		if tlsOn, found, _ := unstructured.NestedBool(cluster.Object, "spec", "tls", "enabled"); found && !tlsOn {
			scheme = "http"
		}
		c := &Cluster{}
		c.Initialized, _, _ = unstructured.NestedBool(cluster.Object, "status", "initialized")
		// Upgrading is the condition Upgrading=True, exactly as
		// openbao-operator's restore manager reads it (its
		// validateClusterState), set for rolling and blue/green upgrades.
		ccs, _, _ := unstructured.NestedSlice(cluster.Object, "status", "conditions")
		for _, cc := range ccs {
			m, _ := cc.(map[string]any)
			if m["type"] == schemas.CondUpgrading && m["status"] == "True" {
				c.Upgrading = true
			}
		}
		f.Cluster = c
	} else if client.IgnoreNotFound(err) != nil {
		return f, err
	}

	lr, err := r.lockRequest(ctx, r.Client, ns, xr)
	if err != nil {
		return f, err
	}
	job, err := r.job(ctx, ns, xr)
	if err != nil {
		return f, err
	}
	if job != nil {
		f.Job = &Job{Name: job.Name}
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				f.Job.Complete = true
			case batchv1.JobFailed:
				f.Job.Failed, f.Job.FailedReason, f.Job.FailedMessage = true, c.Reason, c.Message
			}
		}
		// Once the restart has begun, the Job's outcome is in the status
		// and only the restart decides: its pods need no reading.
		if (f.Job.Complete || f.Job.Failed) && cur.Restart == nil {
			if f.Job.Pods, err = r.pods(ctx, job); err != nil {
				return f, err
			}
		}
		running := !f.Job.Complete && !f.Job.Failed
		if running && f.Cluster == nil {
			// Only a cluster that is really gone fails a running
			// restore: confirm on the API, not the cache.
			if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: clusterName}, clusterObject()); err == nil {
				f.Cluster = &Cluster{Initialized: true}
			} else if client.IgnoreNotFound(err) != nil {
				return f, err
			}
		}
		if f.Job.Failed || running && f.Cluster == nil {
			// The submission record decides Failed or Unknown: read it
			// from the API, never from a cache that may lag behind it.
			if lr, err = r.lockRequest(ctx, r.APIReader, ns, xr); err != nil {
				return f, err
			}
		}
	}
	// The restart is due (the Job succeeded, or a Resume) or under way:
	// read the pods, their health, and whether the cluster really exists.
	if cur.Restart != nil || f.Job != nil && f.Job.Complete || cur.Phase == schemas.PhaseUnknown && f.Ack != "" {
		if f.Cluster == nil {
			if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: clusterName}, clusterObject()); err == nil {
				f.Cluster = &Cluster{Initialized: true}
			} else if client.IgnoreNotFound(err) != nil {
				return f, err
			}
		}
		if f.Cluster != nil {
			if f.Members, f.watched, err = r.members(ctx, ns, clusterName, scheme); err != nil {
				return f, err
			}
		}
	}
	if lr != nil {
		f.Lock = &Lock{State: lr.Status.State, HeldBy: lr.Status.HeldBy, Message: lr.Status.Message, Holder: lr.Spec.Holder}
		if s := lr.Status.Submission; s != nil {
			f.Lock.Submission = &Submission{Pod: s.Pod, Endpoint: s.Endpoint, At: s.SubmittedAt.Time}
		}
		if c := meta.FindStatusCondition(lr.Status.Conditions, schemas.CondOverride); c != nil && c.Status == metav1.ConditionTrue {
			f.Lock.Override = c.Message
		}
	}
	return f, nil
}

// lockRequest finds the XR's LockRequest: the one whose spec.restore names
// this XR by UID.
func (r *Reconciler) lockRequest(ctx context.Context, c client.Reader, ns string, xr *unstructured.Unstructured) (*lockv1alpha1.LockRequest, error) {
	var list lockv1alpha1.LockRequestList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{schemas.LabelComposite: xr.GetName()}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Spec.Restore.UID == string(xr.GetUID()) {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// job finds the XR's restore Job: one controlled by this XR (by UID), or
// labelled with its name when it has no owner.
func (r *Reconciler) job(ctx context.Context, ns string, xr *unstructured.Unstructured) (*batchv1.Job, error) {
	var list batchv1.JobList
	if err := r.Jobs.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{schemas.LabelComposite: xr.GetName()}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		j := &list.Items[i]
		ref := metav1.GetControllerOf(j)
		if ref == nil && len(j.OwnerReferences) == 0 || ref != nil && ref.UID == xr.GetUID() {
			return j, nil
		}
	}
	return nil, nil
}

// pods reads the terminated pods of a finished Job, oldest first, with
// their exit codes and termination messages. The Job cache holds the
// restore's pods too (they carry schemas.LabelRestore); when it shows fewer ended
// pods than the Job counts, or one not yet ended, it lags, and the API is
// read instead. A terminated container's state never changes again, so a
// cached copy that has it is as good as a fresh one.
func (r *Reconciler) pods(ctx context.Context, j *batchv1.Job) ([]Pod, error) {
	var list corev1.PodList
	sel := []client.ListOption{client.InNamespace(j.Namespace), client.MatchingLabels{labelJobName: j.Name}}
	if err := r.Jobs.List(ctx, &list, sel...); err != nil || !allEnded(list.Items, j) {
		if err := r.APIReader.List(ctx, &list, sel...); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(list.Items, func(a, b corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []Pod
	for _, p := range list.Items {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if t == nil {
				continue
			}
			pod := Pod{Name: p.Name, ExitCode: t.ExitCode, Raw: t.Message}
			var tm schemas.TerminationMessage
			if t.Message != "" && json.Unmarshal([]byte(t.Message), &tm) == nil {
				pod.Termination = &tm
			}
			out = append(out, pod)
		}
	}
	return out, nil
}

// allEnded reports whether pods hold every ended pod of the Job, each with
// its containers terminated.
func allEnded(pods []corev1.Pod, j *batchv1.Job) bool {
	if len(pods) < int(j.Status.Succeeded+j.Status.Failed) || len(pods) == 0 {
		return false
	}
	for _, p := range pods {
		if len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Terminated == nil {
				return false
			}
		}
	}
	return true
}

// ReadStatus reads the fields this reconciler owns from an XR.
func ReadStatus(xr *unstructured.Unstructured) Status {
	st, _, _ := unstructured.NestedMap(xr.Object, "status")
	var s Status
	s.Phase, _ = st["phase"].(string)
	s.Message, _ = st["message"].(string)
	s.SnapshotKey, _ = st["snapshotKey"].(string)
	switch v := st["snapshotSize"].(type) {
	case int64:
		s.SnapshotSize = v
	case float64:
		s.SnapshotSize = int64(v)
	}
	s.StartTime = readTime(st["startTime"])
	s.CompletionTime = readTime(st["completionTime"])
	if ex, ok := st["execution"].(map[string]any); ok {
		s.Nudged = readTime(ex["nudgedAt"])
	}
	if rs, ok := st["restart"].(map[string]any); ok {
		r := &Restart{StartedAt: readTime(rs["startedAt"]), CompletedAt: readTime(rs["completedAt"])}
		r.Acknowledged, _ = rs["acknowledged"].(string)
		pods, _ := rs["pods"].([]any)
		for _, p := range pods {
			m, _ := p.(map[string]any)
			rp := RestartedPod{DeletedAt: readTime(m["deletedAt"]), HealthyAt: readTime(m["healthyAt"])}
			rp.Name, _ = m["name"].(string)
			rp.UID, _ = m["uid"].(string)
			rp.Leader, _ = m["leader"].(bool)
			r.Pods = append(r.Pods, rp)
		}
		s.Restart = r
	}
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		typ, _ := m["type"].(string)
		if !owned(typ) {
			continue
		}
		cd := Condition{Type: typ}
		cd.Status, _ = m["status"].(string)
		cd.Reason, _ = m["reason"].(string)
		cd.Message, _ = m["message"].(string)
		s.Conditions = append(s.Conditions, cd)
	}
	return s
}

func owned(t string) bool { return t == schemas.CondRestored || t == schemas.CondLockHeld || t == schemas.CondOverride }

func readTime(v any) *time.Time {
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil
	}
	return &t
}

func sameStatus(a, b Status) bool {
	if a.Phase != b.Phase || a.Message != b.Message || a.SnapshotKey != b.SnapshotKey || a.SnapshotSize != b.SnapshotSize ||
		!sameTime(a.StartTime, b.StartTime) || !sameTime(a.CompletionTime, b.CompletionTime) || len(a.Conditions) != len(b.Conditions) ||
		!sameRestart(a.Restart, b.Restart) || !sameTime(a.Nudged, b.Nudged) {
		return false
	}
	for _, c := range a.Conditions {
		if !slices.Contains(b.Conditions, c) {
			return false
		}
	}
	return true
}

func sameRestart(a, b *Restart) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a.Acknowledged != b.Acknowledged || !sameTime(a.StartedAt, b.StartedAt) || !sameTime(a.CompletedAt, b.CompletedAt) || len(a.Pods) != len(b.Pods) {
		return false
	}
	for i, p := range a.Pods {
		q := b.Pods[i]
		if p.Name != q.Name || p.UID != q.UID || p.Leader != q.Leader || !sameTime(p.DeletedAt, q.DeletedAt) || !sameTime(p.HealthyAt, q.HealthyAt) {
			return false
		}
	}
	return true
}

func stamp(t *time.Time, m map[string]any, key string) {
	if t != nil {
		m[key] = t.UTC().Format(time.RFC3339)
	}
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Unix() == b.Unix()
}

// apply server-side-applies the owned fields with this reconciler's field
// manager on the status subresource. Conditions are a list map keyed by
// type on Crossplane's XR CRDs, so applying ours leaves the function's and
// Crossplane's conditions alone. A condition keeps its
// lastTransitionTime while its status is unchanged.
//
// rv, if set, makes the write conditional on the XR's resourceVersion: a
// pod chosen for deletion is recorded only on the status it was chosen
// from.
func (r *Reconciler) apply(ctx context.Context, xr *unstructured.Unstructured, s Status, rv string) error {
	status := map[string]any{"phase": s.Phase}
	if s.Message != "" {
		status["message"] = s.Message
	}
	stamp(s.StartTime, status, "startTime")
	stamp(s.CompletionTime, status, "completionTime")
	if s.Nudged != nil {
		status["execution"] = map[string]any{"nudgedAt": s.Nudged.UTC().Format(time.RFC3339)}
	}
	if rs := s.Restart; rs != nil {
		m := map[string]any{}
		stamp(rs.StartedAt, m, "startedAt")
		stamp(rs.CompletedAt, m, "completedAt")
		if rs.Acknowledged != "" {
			m["acknowledged"] = rs.Acknowledged
		}
		pods := make([]any, 0, len(rs.Pods))
		for _, p := range rs.Pods {
			pm := map[string]any{"name": p.Name, "uid": p.UID, "leader": p.Leader}
			stamp(p.DeletedAt, pm, "deletedAt")
			stamp(p.HealthyAt, pm, "healthyAt")
			pods = append(pods, pm)
		}
		m["pods"] = pods
		status["restart"] = m
	}
	if s.SnapshotKey != "" {
		status["snapshotKey"] = s.SnapshotKey
	}
	if s.SnapshotSize != 0 {
		status["snapshotSize"] = s.SnapshotSize
	}
	if len(s.Conditions) > 0 {
		var existing []metav1.Condition
		conds, _, _ := unstructured.NestedSlice(xr.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			typ, _ := m["type"].(string)
			st, _ := m["status"].(string)
			ts, _ := m["lastTransitionTime"].(string)
			t, _ := time.Parse(time.RFC3339, ts)
			existing = append(existing, metav1.Condition{Type: typ, Status: metav1.ConditionStatus(st), LastTransitionTime: metav1.Time{Time: t}})
		}
		list := make([]any, 0, len(s.Conditions))
		for _, c := range s.Conditions {
			ltt := r.Now().UTC()
			if old := meta.FindStatusCondition(existing, c.Type); old != nil && string(old.Status) == c.Status && !old.LastTransitionTime.IsZero() {
				ltt = old.LastTransitionTime.UTC()
			}
			reason := c.Reason
			if reason == "" {
				reason = "Unspecified"
			}
			list = append(list, map[string]any{"type": c.Type, "status": c.Status, "reason": reason,
				"message": c.Message, "lastTransitionTime": ltt.Format(time.RFC3339)})
		}
		status["conditions"] = list
	}
	md := map[string]any{"name": xr.GetName()}
	if rv != "" {
		md["resourceVersion"] = rv
	}
	if xr.GetNamespace() != "" {
		md["namespace"] = xr.GetNamespace()
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": r.GVK.GroupVersion().String(), "kind": r.GVK.Kind, "metadata": md, "status": status}}
	err := r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil // the XR is gone
	}
	if err != nil {
		return fmt.Errorf("apply status of %s %s: %w", r.GVK.Kind, xr.GetName(), err)
	}
	r.own.Wrote(client.ObjectKeyFromObject(xr), xr.GetResourceVersion(), u.GetResourceVersion())
	return nil
}

var _ manager.LeaderElectionRunnable = (*setup)(nil)
