package phase

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func TestStatusEncoding(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	now := t1.Add(time.Hour)
	xr := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{
		"plan": map[string]any{"stage": "JobComplete"},
		"conditions": []any{
			map[string]any{"type": schemas.CondLockHeld, "status": "True", "reason": "Held", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
			map[string]any{"type": schemas.CondSpecValid, "status": "True", "reason": "Valid", "lastTransitionTime": "2026-01-01T00:00:00Z"},
		},
	}}}
	s := Status{Phase: schemas.PhaseRunning, Message: "m", StartTime: &t0, SnapshotKey: "k", SnapshotSize: 42,
		Conditions: []Condition{
			{Type: schemas.CondRestored, Status: "Unknown", Reason: "RestartingPods", Message: "r"},
			{Type: schemas.CondLockHeld, Status: "True", Reason: "Held"},
		},
		Restart: &restart.Restart{StartedAt: &t0, Pods: []restart.RestartedPod{{Name: "prod-1", UID: "u1", DeletedAt: &t1}}}}

	got, err := encodeStatus(xr, s, now)
	if err != nil {
		t.Fatal(err)
	}
	// The shape the XR's schema has (hack/genxrd): whole-second RFC 3339
	// times, leader always written, a condition's time kept while its
	// status is unchanged.
	want := map[string]any{
		"phase": "Running", "message": "m", "startTime": "2026-01-02T03:04:05Z", "snapshotKey": "k", "snapshotSize": int64(42),
		"restart": map[string]any{"startedAt": "2026-01-02T03:04:05Z",
			"pods": []any{map[string]any{"name": "prod-1", "uid": "u1", "leader": false, "deletedAt": "2026-01-02T03:05:05Z"}}},
		"conditions": []any{
			map[string]any{"type": schemas.CondRestored, "status": "Unknown", "reason": "RestartingPods", "message": "r", "lastTransitionTime": "2026-01-02T04:05:05Z"},
			map[string]any{"type": schemas.CondLockHeld, "status": "True", "reason": "Held", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
		},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("encoded status (-want +got):\n%s", d)
	}

	// Read back, it is the same status, conditions in another order
	// included; the function's condition is not ours.
	back, err := ReadStatus(&unstructured.Unstructured{Object: map[string]any{"status": got}})
	if err != nil {
		t.Fatal(err)
	}
	s.Conditions[0], s.Conditions[1] = s.Conditions[1], s.Conditions[0]
	if !sameStatus(s, back) {
		t.Errorf("read back %+v, want %+v", back, s)
	}

	// An empty restart writes an empty list of pods, and reads back the same.
	s = Status{Phase: schemas.PhaseRunning, Restart: &restart.Restart{StartedAt: &t0}}
	if got, err = encodeStatus(xr, s, now); err != nil {
		t.Fatal(err)
	}
	if pods := got["restart"].(map[string]any)["pods"]; cmp.Diff([]any{}, pods) != "" {
		t.Errorf("pods %#v, want []", pods)
	}
	if back, err = ReadStatus(&unstructured.Unstructured{Object: map[string]any{"status": got}}); err != nil || !sameStatus(s, back) {
		t.Errorf("read back %+v (%v), want %+v", back, err, s)
	}

	// Each difference is seen.
	for name, edit := range map[string]func(*Status){
		"phase":     func(s *Status) { s.Phase = schemas.PhaseCompleted },
		"time":      func(s *Status) { s.CompletionTime = &t1 },
		"pod":       func(s *Status) { s.Restart.Pods = append(s.Restart.Pods, restart.RestartedPod{Name: "p"}) },
		"condition": func(s *Status) { s.Conditions = []Condition{{Type: schemas.CondRestored, Status: "True"}} },
		"nudged":    func(s *Status) { s.Execution = &Execution{NudgedAt: &t1} },
	} {
		c := s
		r := *s.Restart
		c.Restart = &r
		edit(&c)
		if sameStatus(s, c) {
			t.Errorf("%s: a change is not seen", name)
		}
	}
}

func TestReadStatusRefusesMalformed(t *testing.T) {
	xr := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"phase": "Running", "startTime": "yesterday"}}}
	if _, err := ReadStatus(xr); err == nil {
		t.Fatal("a malformed startTime was read")
	}
}
