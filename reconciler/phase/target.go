package phase

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A fresh-target restore (spec.clusterTemplate) restores into a cluster the
// function creates. The phase waits for it to come up within the bootstrap
// deadline, and keeps the time of a Disposable one: at its cleanup time it
// says so in status.target.expired, the function stops composing it, and
// Crossplane deletes it.

// Target is a fresh target's record (status.target).
type Target struct {
	// Name is the new cluster's.
	Name string `json:"name"`
	// Lifecycle is Disposable or Retain.
	Lifecycle string `json:"lifecycle"`
	// UpAt is when it was first seen up: initialised, at the expected
	// version.
	UpAt *metav1.Time `json:"upAt,omitempty"`
	// CleanupAt is when a Disposable target goes: the restore's end plus
	// cleanupAfterSeconds.
	CleanupAt *metav1.Time `json:"cleanupAt,omitempty"`
	// Expired: CleanupAt has passed.
	Expired bool `json:"expired,omitempty"`
}

// Fresh is what the phase knows of a fresh-target restore.
type Fresh struct {
	// Name is spec.cluster, Lifecycle spec.targetLifecycle and Version
	// spec.source.expectedVersion.
	Name, Lifecycle, Version string
	// Cleanup is how long a Disposable target stays after the end.
	Cleanup time.Duration
	// Created is when the restore was created, from which the bootstrap
	// deadline counts.
	Created time.Time
	// Bootstrap is the bootstrap deadline.
	Bootstrap time.Duration
}

// freshOf reads a fresh-target restore's spec; nil for any other.
func freshOf(xr *unstructured.Unstructured, spec map[string]any, bootstrap time.Duration) *Fresh {
	if _, ok := spec["clusterTemplate"].(map[string]any); !ok {
		return nil
	}
	f := &Fresh{Created: xr.GetCreationTimestamp().Time, Bootstrap: bootstrap, Cleanup: schemas.DefaultCleanupAfter}
	f.Name, _, _ = unstructured.NestedString(spec, "cluster")
	f.Lifecycle, _, _ = unstructured.NestedString(spec, "targetLifecycle")
	f.Version, _, _ = unstructured.NestedString(spec, "source", "expectedVersion")
	if s, ok, _ := unstructured.NestedFieldNoCopy(spec, "cleanupAfterSeconds"); ok {
		switch n := s.(type) {
		case int64:
			f.Cleanup = time.Duration(n) * time.Second
		case float64:
			f.Cleanup = time.Duration(n) * time.Second
		}
	}
	if f.Bootstrap <= 0 {
		f.Bootstrap = schemas.DefaultBootstrapTimeout
	}
	return f
}

// targetUp reports whether the new cluster is this restore's and up.
func targetUp(f Facts) bool {
	c := f.Cluster
	return c != nil && c.Origin == f.UID && c.Initialized && c.Version == f.Fresh.Version
}

// bootstrapping decides while the new cluster is not up: Pending, or
// Failed once the bootstrap deadline has passed.
func bootstrapping(next Status, f Facts) Status {
	state := "it does not exist yet"
	if c := f.Cluster; c != nil {
		state = fmt.Sprintf("initialized: %t, version: %q, want %q", c.Initialized, c.Version, f.Fresh.Version)
	}
	deadline := f.Fresh.Created.Add(f.Fresh.Bootstrap)
	if !f.Now.Before(deadline) {
		next.Phase = schemas.PhaseFailed
		next.Message = fmt.Sprintf("the new OpenBaoCluster %s did not come up within the bootstrap deadline of %s (%s); nothing was restored. Check its pods and events: "+
			"the template must give a seal and storage that work, and spec.clusterTemplate.version an image that starts", f.Fresh.Name, f.Fresh.Bootstrap, state)
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondRestored, Status: "False", Reason: schemas.ReasonTargetBootstrapTimeout, Message: next.Message})
		return next
	}
	next.Phase = schemas.PhasePending
	next.Message = fmt.Sprintf("waiting for the new OpenBaoCluster %s to come up (%s); the restore fails if it is not up by %s", f.Fresh.Name, state, deadline.UTC().Format(time.RFC3339))
	return next
}

// trackTarget keeps status.target of a fresh-target restore: its name and
// lifecycle, when it came up, and a Disposable one's cleanup time once the
// restore ended.
func trackTarget(next Status, f Facts) Status {
	if f.Fresh == nil {
		return next
	}
	t := Target{Name: f.Fresh.Name, Lifecycle: f.Fresh.Lifecycle}
	if next.Target != nil {
		t = *next.Target
	}
	now := metav1.NewTime(f.Now.UTC().Truncate(time.Second))
	if t.UpAt == nil && targetUp(f) {
		t.UpAt = &now
	}
	if t.CleanupAt == nil && t.Lifecycle == schemas.LifecycleDisposable && schemas.Terminal(next.Phase) {
		at := metav1.NewTime(now.Add(f.Fresh.Cleanup))
		t.CleanupAt = &at
	}
	next.Target = &t
	return next
}

// Expire marks a finished restore's Disposable target expired once its
// cleanup time has passed; it returns the status, the event, and how long
// to wait when the time has not come. A finished restore is otherwise
// never changed.
func Expire(cur Status, now time.Time) (Status, []Event, time.Duration) {
	t := cur.Target
	if t == nil || t.Expired || t.CleanupAt == nil {
		return cur, nil, 0
	}
	if wait := t.CleanupAt.Sub(now); wait > 0 {
		return cur, nil, wait
	}
	next := cur
	e := *t
	e.Expired = true
	next.Target = &e
	return next, []Event{{Reason: "TargetExpired", Message: fmt.Sprintf("the Disposable OpenBaoCluster %s is deleted: its cleanupAfterSeconds have passed since the restore ended", t.Name)}}, 0
}
