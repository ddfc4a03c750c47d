package phase

import (
	"context"
	"errors"
	"slices"
	"sync"

	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/reconciler/stale"
	"github.com/openbao-restore/openbao-restore/reconciler/xrkinds"
	"github.com/openbao-restore/openbao-restore/schemas"
)

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
	// BootstrapTimeout bounds the wait for a fresh target to come up
	// (zero: schemas.DefaultBootstrapTimeout).
	BootstrapTimeout time.Duration

	writesMu sync.Mutex
	writes   map[types.NamespacedName]time.Time // last status write per XR
	// own are our own last status writes: a cached XR from before one
	// is stale, and its event is on its way.
	own stale.Writes
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
		return r.releaseRetained(ctx, xr)
	}
	if err := r.holdRetained(ctx, xr); err != nil {
		return ctrl.Result{}, err
	}
	if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, r.restoreNamespace(xr)) {
		return ctrl.Result{}, nil
	}
	cur, err := ReadStatus(xr)
	if err != nil {
		return ctrl.Result{}, err
	}
	if schemas.Terminal(cur.Phase) {
		return r.expire(ctx, xr, cur)
	}
	f, err := r.facts(ctx, xr, cur)
	if err != nil {
		return ctrl.Result{}, err
	}
	next, evs := Next(cur, f)
	wait, err := r.write(ctx, xr, cur, next, evs)
	if apierrors.IsConflict(err) {
		// The XR changed since it was read: decide once more, on the XR
		// as the API has it. A second conflict is an error, retried.
		xr = r.newXR()
		if err := r.APIReader.Get(ctx, req.NamespacedName, xr); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		fc, rerr := ReadStatus(xr)
		if rerr != nil {
			return ctrl.Result{}, rerr
		}
		if !sameStatus(fc, cur) {
			cur = fc
			if schemas.Terminal(cur.Phase) {
				return ctrl.Result{}, nil
			}
			next, evs = Next(cur, f)
		}
		wait, err = r.write(ctx, xr, cur, next, evs)
	}
	if err != nil || wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, err
	}
	if f.Fresh != nil && next.Phase == schemas.PhasePending && !targetUp(f) {
		// The new cluster's changes wake us; the deadline needs a look.
		return ctrl.Result{RequeueAfter: min(bootstrapRecheck, max(time.Second, f.Fresh.Created.Add(f.Fresh.Bootstrap).Sub(f.Now)))}, nil
	}
	// The status written (or already there) records the pod to delete;
	// only now is it deleted. After a crash this finishes the deletion.
	if next.Phase == schemas.PhaseRunning && next.Restart != nil && next.Restart.CompletedAt == nil {
		err := r.evicter().EvictPending(ctx, r.restoreNamespace(xr), next.Restart, f.Members)
		var refused *restart.Refusal
		if errors.As(err, &refused) {
			// Said in status at once (a condition, the message and one
			// event), then tried again at the pace of the restart's
			// polls, until the pod goes or a gate's timeout ends the
			// restart Unknown: never a silent retry loop.
			f.Members.Refused, f.Members.RefusedReason = refused.Message, refused.Reason
			blocked, bevs := Next(next, f)
			if _, werr := r.write(ctx, xr, next, blocked, bevs); werr != nil {
				return ctrl.Result{}, werr
			}
			return ctrl.Result{RequeueAfter: max(r.Restart.Poll, refusedRetry)}, nil
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		// OpenBao's health cannot be watched: poll while it is what the
		// restart waits for. Pods from the member cache wake us when
		// they change; then only the gates' timeouts need a look.
		if f.watched && !f.Members.WaitsOnHealth() {
			return ctrl.Result{RequeueAfter: max(r.Restart.Poll, watchedRecheck)}, nil
		}
		return ctrl.Result{RequeueAfter: r.Restart.Poll}, nil
	}
	return ctrl.Result{}, nil
}

// write writes next over cur when it differs, then emits the events and
// counts the phase change. It writes nothing and returns how long to wait
// when the change is cosmetic and the XR's last write is too recent. A
// conflict means that the XR changed since it was read.
func (r *Reconciler) write(ctx context.Context, xr *unstructured.Unstructured, cur, next Status, evs []Event) (time.Duration, error) {
	if sameStatus(cur, next) {
		return 0, nil
	}
	key := client.ObjectKeyFromObject(xr)
	if cosmetic(cur, next) {
		// Every XR write is a watch event for Crossplane, whose circuit
		// breaker stops reconciling a chatty XR (v2.4: a burst of 50
		// events, then one every 2 s), and Crossplane answers most writes
		// with writes of its own. A write that changes only a message or
		// a condition waits until the XR's last write is minWriteGap old.
		if wait := r.writeGap(key); wait > 0 {
			return wait, nil
		}
	}
	// A phase change, or the choice of a pod to delete, is written only
	// over the status it was decided from: the write carries the
	// resourceVersion read, so that a cache behind our previous write can
	// never write a terminal phase twice (with a later completionTime, and
	// its event again) or choose a pod twice.
	rv := ""
	if next.Phase != cur.Phase || chosen(cur, next) {
		rv = xr.GetResourceVersion()
	}
	r.wrote(key)
	if err := r.apply(ctx, xr, next, rv); err != nil {
		return 0, err
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
			duration.WithLabelValues(next.Phase).Observe(next.CompletionTime.Sub(next.StartTime.Time).Seconds())
		}
		if r.Observe != nil {
			r.Observe(key, next.Phase)
		}
	}
	return 0, nil
}

// watchedRecheck is how often a restart that waits on watched pods looks
// again anyway: the gates' timeouts and the slow-wait message are decided
// on a look.
const watchedRecheck = 5 * time.Second

// refusedRetry is how often a refused eviction is tried again: a budget
// frees up when a pod turns Ready, a grant or a policy when a person acts.
const refusedRetry = 5 * time.Second

// bootstrapRecheck is how often a restore waiting for its new cluster
// looks again without an event: the bootstrap deadline is decided on a
// look.
const bootstrapRecheck = time.Minute

// expire writes a finished restore's Disposable target expired once its
// time has come (Expire), and waits for that time; then it makes sure
// Crossplane sees the phase (nudge).
func (r *Reconciler) expire(ctx context.Context, xr *unstructured.Unstructured, cur Status) (ctrl.Result, error) {
	next, evs, wait := Expire(cur, r.Now())
	if !sameStatus(cur, next) {
		w, err := r.write(ctx, xr, cur, next, evs)
		return ctrl.Result{RequeueAfter: w}, err
	}
	res, err := r.nudge(ctx, xr, cur)
	if wait > 0 && (res.RequeueAfter == 0 || wait < res.RequeueAfter) {
		res.RequeueAfter = wait
	}
	return res, err
}

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
	if stage, _, _ := unstructured.NestedString(xr.Object, "status", "plan", "stage"); stage == schemas.StageFinished || !xrkinds.CircuitOpen(xr) {
		return ctrl.Result{}, nil
	}
	now := r.Now()
	if ex := cur.Execution; ex != nil && ex.NudgedAt != nil && now.Sub(ex.NudgedAt.Time) < nudgeEvery {
		return ctrl.Result{RequeueAfter: nudgeEvery - now.Sub(ex.NudgedAt.Time)}, nil
	}
	next := cur
	t := metav1.NewTime(now.UTC().Truncate(time.Second))
	next.Execution = &Execution{NudgedAt: &t}
	if err := r.apply(ctx, xr, next, ""); err != nil {
		return ctrl.Result{}, err
	}
	log.FromContext(ctx).Info("Crossplane's watch circuit is open for this XR: wrote it again so that the function sees the phase", "phase", cur.Phase)
	return ctrl.Result{RequeueAfter: nudgeEvery}, nil
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

// gatherer reads the cluster's members for the restart: from the member
// cache when there is one.
func (r *Reconciler) gatherer() restart.Gatherer {
	g := restart.Gatherer{API: r.APIReader, Prober: r.Restart.Prober}
	if r.Members != nil {
		g.Cache = r.Members // a nil cache.Cache in a client.Reader would not be nil
	}
	return g
}

// evicter carries out the restart's recorded deletions.
func (r *Reconciler) evicter() restart.Evicter {
	return restart.Evicter{Client: r.Client, API: r.APIReader}
}

// chosen reports whether next records a pod deletion that cur does not.
func chosen(cur, next Status) bool {
	n := 0
	if cur.Restart != nil {
		n = len(cur.Restart.Pods)
	}
	return next.Restart != nil && len(next.Restart.Pods) > n
}
