package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// xrWrites counts the updates of every XR by the field manager that made
// each (the one whose managedFields time is the newest), to see how chatty
// a restore is for Crossplane's watch circuit breaker.
func (s *Stack) xrWrites(t testing.TB) func() string {
	wc, err := client.NewWithWatch(s.Config, client.Options{Scheme: s.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(schemas.Group + "/" + schemas.Version)
	list.SetKind(schemas.XRKind + "List")
	w, err := wc.Watch(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	counts := map[string]map[string]int{}
	go func() {
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			mgr := ""
			var newest string
			for _, mf := range u.GetManagedFields() {
				if mf.Time != nil && mf.Time.UTC().Format("15:04:05.000000") >= newest {
					newest, mgr = mf.Time.UTC().Format("15:04:05.000000"), mf.Manager+"/"+mf.Subresource
				}
			}
			mu.Lock()
			if counts[u.GetName()] == nil {
				counts[u.GetName()] = map[string]int{}
			}
			counts[u.GetName()][mgr]++
			mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		var names []string
		for n := range counts {
			names = append(names, n)
		}
		sort.Strings(names)
		out := ""
		for _, n := range names {
			out += fmt.Sprintf("\n  %s: %v", n, counts[n])
		}
		return out
	}
}
