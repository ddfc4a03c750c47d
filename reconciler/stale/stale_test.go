package stale

import (
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestWrites(t *testing.T) {
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	var w Writes
	if w.Stale(a, "1") {
		t.Fatal("nothing written, yet stale")
	}
	w.Wrote(a, "1", "2")
	for _, tc := range []struct {
		key  types.NamespacedName
		rv   string
		want bool
	}{
		{b, "1", false}, // another object
		{a, "1", true},  // the cache before our write
		{a, "1", true},  // still
		{a, "2", false}, // caught up: forgotten
		{a, "1", false}, // forgotten, whatever comes
	} {
		if got := w.Stale(tc.key, tc.rv); got != tc.want {
			t.Errorf("Stale(%s, %s) = %v, want %v", tc.key.Name, tc.rv, got, tc.want)
		}
	}
	// Two writes in a row: both versions they replaced are stale.
	w.Wrote(a, "5", "6")
	w.Wrote(a, "6", "7")
	if !w.Stale(a, "5") || !w.Stale(a, "6") || w.Stale(a, "7") || w.Stale(a, "6") {
		t.Error("chain 5 -> 6 -> 7: want 5 and 6 stale until 7 is seen, then nothing")
	}
	// Another writer moved it on: not stale.
	w.Wrote(a, "8", "9")
	if w.Stale(a, "10") {
		t.Error("a version we never replaced is stale")
	}
	// A write that does not follow our last one starts a new record.
	w.Wrote(a, "11", "12")
	if w.Stale(a, "8") || !w.Stale(a, "11") {
		t.Error("a new chain kept the old one")
	}
	// A no-op write brings no event: never stale.
	w.Wrote(b, "3", "3")
	if w.Stale(b, "3") {
		t.Error("no-op write made the object stale")
	}
	w.Wrote(b, "", "4")
	if w.Stale(b, "") || w.Stale(b, "4") {
		t.Error("unknown before made the object stale")
	}
}

func TestWritesBounded(t *testing.T) {
	var w Writes
	for i := range limit + 10 {
		w.Wrote(types.NamespacedName{Name: strconv.Itoa(i)}, "1", "2")
	}
	if len(w.m) > limit {
		t.Fatalf("%d records, limit %d", len(w.m), limit)
	}
}

func TestSkipped(t *testing.T) {
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	var w Writes
	w.Wrote(a, "1", "2")
	if w.Skipped(a, "2") {
		t.Error("no reconcile stopped, yet Skipped")
	}
	if !w.Stale(a, "1") {
		t.Fatal("want 1 stale")
	}
	for _, tc := range []struct {
		rv   string
		want bool
	}{
		{"1", false}, // the stale copy again: nothing to resume
		{"2", true},  // our write's event: resume first
		{"3", true},  // another writer's, past ours: resume first too
	} {
		if got := w.Skipped(a, tc.rv); got != tc.want {
			t.Errorf("Skipped(%s) = %v, want %v", tc.rv, got, tc.want)
		}
	}
	w.Stale(a, "2") // caught up: forgotten
	if w.Skipped(a, "3") {
		t.Error("Skipped after the cache caught up")
	}
}
