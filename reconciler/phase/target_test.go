package phase

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestFreshTargetPhase: a fresh-target restore waits for its new cluster
// within the bootstrap deadline, then goes on as any restore; its status
// records the target, when it came up, and a Disposable one's cleanup time
// from the end.
func TestFreshTargetPhase(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	const uid = "u-1"
	holder := schemas.Holder("r", uid)
	fresh := func(lifecycle string) *Fresh {
		return &Fresh{Name: "restored", Lifecycle: lifecycle, Version: "2.4.0", Cleanup: 10 * time.Minute, Created: created, Bootstrap: 30 * time.Minute}
	}
	up := &Cluster{Initialized: true, Version: "2.4.0", Origin: uid}
	cases := []struct {
		name   string
		cur    Status
		f      Facts
		phase  string
		msg    string
		reason string // the Restored condition's
		upAt   bool
	}{
		{name: "not created yet", f: Facts{Fresh: fresh(schemas.LifecycleDisposable)}, phase: schemas.PhasePending, msg: "it does not exist yet"},
		{name: "not initialised", f: Facts{Fresh: fresh(schemas.LifecycleDisposable), Cluster: &Cluster{Origin: uid}, Now: created.Add(29 * time.Minute)},
			phase: schemas.PhasePending, msg: `initialized: false, version: "", want "2.4.0"`},
		{name: "another version", f: Facts{Fresh: fresh(schemas.LifecycleDisposable), Cluster: &Cluster{Initialized: true, Version: "2.3.1", Origin: uid}},
			phase: schemas.PhasePending, msg: `version: "2.3.1"`},
		{name: "deadline passed", f: Facts{Fresh: fresh(schemas.LifecycleDisposable), Cluster: &Cluster{Origin: uid}, Now: created.Add(30 * time.Minute)},
			phase: schemas.PhaseFailed, msg: "did not come up within the bootstrap deadline of 30m0s", reason: schemas.ReasonTargetBootstrapTimeout},
		{name: "up: the lock next", f: Facts{Fresh: fresh(schemas.LifecycleRetain), Cluster: up}, phase: schemas.PhasePending, msg: "requesting the operation lock", upAt: true},
		{name: "up, lock held", f: Facts{Fresh: fresh(schemas.LifecycleRetain), Cluster: up,
			Lock: &Lock{State: schemas.LockHeld, HeldBy: holder, Holder: holder}}, phase: schemas.PhaseValidating, upAt: true},
		{name: "the function refused a foreign cluster", f: Facts{Fresh: fresh(schemas.LifecycleDisposable), Cluster: &Cluster{Initialized: true, Version: "2.4.0"},
			FunctionInvalid: schemas.MsgTargetConflict("restored", "vault")}, phase: schemas.PhaseFailed, msg: "was not created by this restore", reason: "InvalidSpec"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.f.UID = uid
			if c.f.Now.IsZero() {
				c.f.Now = created.Add(time.Minute)
			}
			next, _ := Next(c.cur, c.f)
			if next.Phase != c.phase || !strings.Contains(next.Message, c.msg) {
				t.Fatalf("phase %s %q, want %s with %q", next.Phase, next.Message, c.phase, c.msg)
			}
			if r := find(next.Conditions, schemas.CondRestored); c.reason != "" && (r == nil || r.Reason != c.reason) {
				t.Errorf("Restored condition %+v, want reason %s", r, c.reason)
			}
			tg := next.Target
			if tg == nil || tg.Name != "restored" || tg.Lifecycle != c.f.Fresh.Lifecycle || (tg.UpAt != nil) != c.upAt {
				t.Fatalf("target %+v, up %t", tg, c.upAt)
			}
			if (tg.CleanupAt != nil) != (c.phase == schemas.PhaseFailed && tg.Lifecycle == schemas.LifecycleDisposable) {
				t.Errorf("cleanupAt %v for a %s %s target", tg.CleanupAt, next.Phase, tg.Lifecycle)
			}
		})
	}
}

// TestExpire: a finished restore's Disposable target expires at its
// cleanup time, once, with an event; a Retained one never does.
func TestExpire(t *testing.T) {
	end := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	at := metav1.NewTime(end.Add(10 * time.Minute))
	done := Status{Phase: schemas.PhaseCompleted, Target: &Target{Name: "restored", Lifecycle: schemas.LifecycleDisposable, CleanupAt: &at}}

	next, evs, wait := Expire(done, end.Add(4*time.Minute))
	if next.Target.Expired || len(evs) != 0 || wait != 6*time.Minute {
		t.Fatalf("before its time: %+v %v wait %s", next.Target, evs, wait)
	}
	next, evs, wait = Expire(done, end.Add(10*time.Minute))
	if !next.Target.Expired || len(evs) != 1 || evs[0].Reason != "TargetExpired" || wait != 0 || done.Target.Expired {
		t.Fatalf("at its time: %+v %v wait %s (input changed: %t)", next.Target, evs, wait, done.Target.Expired)
	}
	if again, evs, _ := Expire(next, end.Add(time.Hour)); !sameStatus(again, next) || len(evs) != 0 {
		t.Errorf("expired again: %+v %v", again.Target, evs)
	}
	retained := Status{Phase: schemas.PhaseCompleted, Target: &Target{Name: "restored", Lifecycle: schemas.LifecycleRetain}}
	if next, evs, wait := Expire(retained, end.Add(48*time.Hour)); next.Target.Expired || len(evs) != 0 || wait != 0 {
		t.Errorf("a Retained target expired: %+v", next.Target)
	}

	// The end of a Disposable restore sets its cleanup time.
	f := Facts{UID: "u-1", Now: end, Fresh: &Fresh{Name: "restored", Lifecycle: schemas.LifecycleDisposable, Version: "2.4.0", Cleanup: 10 * time.Minute},
		FunctionInvalid: "spec.cluster: no"}
	failed, _ := Next(Status{Phase: schemas.PhasePending}, f)
	if failed.Phase != schemas.PhaseFailed || failed.Target.CleanupAt == nil || !failed.Target.CleanupAt.Time.Equal(at.Time) {
		t.Errorf("the end: %s %+v, want cleanup at %s", failed.Phase, failed.Target, at)
	}
}

// TestChosenSnapshotShown: the object the executor chose for a restore
// with no key is in status.snapshotKey as soon as it is recorded.
func TestChosenSnapshotShown(t *testing.T) {
	holder := schemas.Holder("r", "u-1")
	f := Facts{UID: "u-1", Now: time.Now(), Cluster: &Cluster{Initialized: true},
		Lock: &Lock{State: schemas.LockHeld, HeldBy: holder, Holder: holder, Chosen: "clusters/prod/b.snap", ChosenSize: 42}, Job: &Job{Name: "j"}}
	next, _ := Next(Status{Phase: schemas.PhaseValidating}, f)
	if next.SnapshotKey != "clusters/prod/b.snap" || next.SnapshotSize != 42 {
		t.Errorf("snapshot %s (%d), want the chosen one", next.SnapshotKey, next.SnapshotSize)
	}
}
