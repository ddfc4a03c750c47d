// Package prio puts the work that ends something ahead of the rest in a
// controller's queue. When many restores run at once, the queues fill with
// work that starts restores (a new lock request, a new Job) and with
// reconciles that find nothing to do; a finished Job or a released request
// waiting behind them keeps a lock held, and the operations it blocks
// waiting, for nothing. controller-runtime's priority queue (its default in
// v0.25, which this module uses) takes the highest priority an item was
// added with.
package prio

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Urgent is the priority of the work When marks; the default is 0, and
// controller-runtime's handlers use handler.LowPriority (-100) for events
// that change nothing.
const Urgent = 100

// When wraps h: the requests it enqueues for an update that urgent reports
// go ahead of every other. Other events are h's alone. A queue that is not
// a priority queue gets h's requests unchanged.
func When[T any](h handler.TypedEventHandler[T, reconcile.Request], urgent func(old, new T) bool) handler.TypedEventHandler[T, reconcile.Request] {
	return &when[T]{TypedEventHandler: h, urgent: urgent}
}

type when[T any] struct {
	handler.TypedEventHandler[T, reconcile.Request]
	urgent func(old, new T) bool
}

func (w *when[T]) Update(ctx context.Context, e event.TypedUpdateEvent[T], q queue) {
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok && w.urgent(e.ObjectOld, e.ObjectNew) {
		q = front{pq}
	}
	w.TypedEventHandler.Update(ctx, e, q)
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// front adds every item at priority Urgent at least, however the handler
// adds it: controller-runtime's own handlers call AddWithOpts with a
// priority of their choosing (0 for a change), not Add.
type front struct {
	priorityqueue.PriorityQueue[reconcile.Request]
}

func (f front) Add(r reconcile.Request) { f.AddWithOpts(priorityqueue.AddOpts{}, r) }

func (f front) AddAfter(r reconcile.Request, d time.Duration) {
	f.AddWithOpts(priorityqueue.AddOpts{After: d}, r)
}

func (f front) AddRateLimited(r reconcile.Request) {
	f.AddWithOpts(priorityqueue.AddOpts{RateLimited: true}, r)
}

func (f front) AddWithOpts(o priorityqueue.AddOpts, rs ...reconcile.Request) {
	o.Priority = ptr.To(max(ptr.Deref(o.Priority, 0), Urgent))
	f.PriorityQueue.AddWithOpts(o, rs...)
}
