package prio

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func pod(name, rv string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv}}
}

func req(name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}}
}

// urgentName marks the updates of the pod named "urgent".
func urgentName(_, n client.Object) bool { return n.GetName() == "urgent" }

// The handlers controller-runtime ships add in both ways: Add (the mapped
// handler) and AddWithOpts with a priority of their own (the object
// handler). An urgent update goes ahead of both, whichever handler it
// passes through; any other is the handler's own.
func TestUrgentGoesFirst(t *testing.T) {
	for name, h := range map[string]handler.EventHandler{
		"object": &handler.EnqueueRequestForObject{},
		"mapped": handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{req(o.GetName())}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			q := priorityqueue.New[reconcile.Request]("test")
			defer q.ShutDown()
			h := When(h, urgentName)
			ctx := context.Background()
			for _, n := range []string{"a", "b"} {
				h.Update(ctx, event.UpdateEvent{ObjectOld: pod(n, "1"), ObjectNew: pod(n, "2")}, q)
			}
			h.Update(ctx, event.UpdateEvent{ObjectOld: pod("urgent", "1"), ObjectNew: pod("urgent", "2")}, q)
			h.Create(ctx, event.CreateEvent{Object: pod("c", "1")}, q)
			want := []struct {
				name     string
				priority int
			}{{"urgent", Urgent}, {"a", 0}, {"b", 0}, {"c", 0}}
			for _, w := range want {
				got, p, _ := q.GetWithPriority()
				if got != req(w.name) || p != w.priority {
					t.Fatalf("got %s at %d, want %s at %d", got.Name, p, w.name, w.priority)
				}
				q.Done(got)
			}
		})
	}
}

// An item already queued is moved ahead when it turns urgent, and stays
// urgent when a later event adds it at a lower priority.
func TestUrgentRaisesQueued(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	plain := &handler.EnqueueRequestForObject{}
	ctx := context.Background()
	plain.Update(ctx, event.UpdateEvent{ObjectOld: pod("urgent", "1"), ObjectNew: pod("urgent", "2")}, q)
	plain.Update(ctx, event.UpdateEvent{ObjectOld: pod("a", "1"), ObjectNew: pod("a", "2")}, q)
	When(plain, urgentName).Update(ctx, event.UpdateEvent{ObjectOld: pod("urgent", "2"), ObjectNew: pod("urgent", "3")}, q)
	// Unchanged: controller-runtime adds it at LowPriority.
	plain.Update(ctx, event.UpdateEvent{ObjectOld: pod("urgent", "3"), ObjectNew: pod("urgent", "3")}, q)
	got, p, _ := q.GetWithPriority()
	if got != req("urgent") || p != Urgent {
		t.Fatalf("got %s at %d, want urgent at %d", got.Name, p, Urgent)
	}
}

// A plain workqueue (a controller without the priority queue) gets the
// handler's requests unchanged.
func TestPlainQueue(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	When(&handler.EnqueueRequestForObject{}, urgentName).
		Update(context.Background(), event.UpdateEvent{ObjectOld: pod("urgent", "1"), ObjectNew: pod("urgent", "2")}, q)
	if got, _ := q.Get(); got != req("urgent") {
		t.Fatalf("got %v", got)
	}
}
