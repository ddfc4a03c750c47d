package phase

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func TestNext(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	earlier := metav1.NewTime(now.Add(-time.Minute))
	const uid = "u-1"
	holder := schemas.Holder("r", uid)
	held := &Lock{State: schemas.LockHeld, HeldBy: holder, Holder: holder, Message: "holding"}
	heldSubmitted := &Lock{State: schemas.LockHeld, HeldBy: holder, Holder: holder,
		Submission: &Submission{Pod: "p-1", Endpoint: "https://bao:8200", At: earlier.Time}}
	waiting := &Lock{State: schemas.LockWaiting, HeldBy: "backup/x", Holder: holder, Message: "held by Backup backup/x"}
	ok := &Cluster{Initialized: true}
	yes := true
	term := func(code int32, submitted bool, msg string) Pod {
		return Pod{Name: "p-1", ExitCode: code, Termination: &schemas.TerminationMessage{ExitCode: int(code), Submitted: submitted, Message: msg}}
	}
	failedJob := func(pods ...Pod) *Job {
		return &Job{Name: "j", Failed: true, FailedReason: "PodFailurePolicy", Pods: pods}
	}

	cases := []struct {
		name      string
		cur       Status
		f         Facts
		phase     string
		msg       []string // substrings of the message
		restored  string   // status of the Restored condition, "" for none
		event     string   // reason of the one event, "" for none
		start     bool
		completed bool
	}{
		{name: "new restore, cluster ready", f: Facts{Cluster: ok}, phase: schemas.PhasePending, event: "RestorePending",
			msg: []string{"requesting the operation lock"}},
		{name: "cluster missing", f: Facts{}, phase: schemas.PhasePending, event: "RestorePending", msg: []string{"does not exist"}},
		{name: "cluster not initialized", f: Facts{Cluster: &Cluster{}}, phase: schemas.PhasePending, msg: []string{"initialized"}, event: "RestorePending"},
		{name: "not initialized but force", f: Facts{Cluster: &Cluster{}, Force: true}, phase: schemas.PhasePending, msg: []string{"requesting"}, event: "RestorePending"},
		{name: "monotonic: validating stays validating", cur: Status{Phase: schemas.PhaseValidating}, f: Facts{Cluster: ok, Lock: waiting},
			phase: schemas.PhaseValidating, msg: []string{"held by Backup"}},
		{name: "upgrading", f: Facts{Cluster: &Cluster{Initialized: true, Upgrading: true}}, phase: schemas.PhasePending, msg: []string{"upgrade"}, event: "RestorePending"},
		{name: "lock waits on a backup", f: Facts{Cluster: ok, Lock: waiting}, phase: schemas.PhasePending, msg: []string{"held by Backup"}, event: "RestorePending"},
		{name: "lock held, no job yet", f: Facts{Cluster: ok, Lock: held}, phase: schemas.PhaseValidating, event: "RestoreValidating"},
		{name: "job running", cur: Status{Phase: schemas.PhaseValidating}, f: Facts{Cluster: ok, Lock: held, Job: &Job{Name: "j"}},
			phase: schemas.PhaseRunning, event: "RestoreRunning", start: true},
		{name: "monotonic: running stays running while lock flaps", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Cluster: ok, Lock: waiting}, phase: schemas.PhaseRunning, start: true},
		// A dry run: no lock, no restart, never Unknown.
		{name: "dry run waits for its Job, not a lock", f: Facts{Cluster: ok, DryRun: true}, phase: schemas.PhaseValidating, event: "RestoreValidating",
			msg: []string{"dry run: no lock is taken"}},
		{name: "dry run's Job running", cur: Status{Phase: schemas.PhaseValidating}, f: Facts{Cluster: ok, DryRun: true, Job: &Job{Name: "j"}},
			phase: schemas.PhaseRunning, event: "RestoreRunning", start: true, msg: []string{"nothing will be sent"}},
		{name: "dry run passed: completed, nothing restarted", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Cluster: ok, DryRun: true, Members: healthy3(), Job: &Job{Name: "j", Complete: true, Pods: []Pod{{Name: "p", Termination: &schemas.TerminationMessage{
				DryRun: true, Message: "dry run: every check passed; a restore would send a/b.snap", Checks: []schemas.Check{{Name: schemas.CheckSnapshot, Passed: true}}}}}}},
			phase: schemas.PhaseCompleted, msg: []string{"dry run: every check passed"}, event: "RestoreCompleted", start: true, completed: true},
		{name: "dry run failed: failed naming the check, not unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Cluster: ok, DryRun: true, Job: failedJob(Pod{Name: "p-1", ExitCode: 6, Termination: &schemas.TerminationMessage{ExitCode: 6, DryRun: true,
				Message: "dry run: the check snapshot failed: the snapshot archive is not sound"}})},
			phase: schemas.PhaseFailed, msg: []string{"the check snapshot failed"}, event: "RestoreFailed", start: true, completed: true},
		{name: "dry run failed without a message", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{Cluster: ok, DryRun: true, Job: failedJob(Pod{Name: "p-1", ExitCode: 137})},
			phase: schemas.PhaseFailed, msg: []string{"exit code 137"}, event: "RestoreFailed", start: true, completed: true},
		{name: "invalid spec fails at once", f: Facts{Violations: []schemas.Violation{{Path: "spec.source.key", Message: "spec.source.key must not contain .."}}},
			phase: schemas.PhaseFailed, msg: []string{"spec.source.key must not contain ..", "nothing was locked"}, restored: "False", event: "RestoreFailed", completed: true},
		{name: "function's verdict invalid", f: Facts{FunctionInvalid: "spec.image is not on the allow-list"}, phase: schemas.PhaseFailed,
			msg: []string{"allow-list"}, restored: "False", event: "RestoreFailed", completed: true},
		{name: "job complete starts the restart", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Cluster: ok, Lock: held, Members: healthy3(), Job: &Job{Name: "j", Complete: true, Pods: []Pod{{Name: "p", Termination: &schemas.TerminationMessage{
				Submitted: true, SnapshotKey: "a/b.snap", SnapshotSize: 42}}}}},
			phase: schemas.PhaseRunning, msg: []string{"evicting pod prod-1 (standby)"}, restored: "Unknown", event: "RestartingPod", start: true},
		{name: "complete straight from validating sets start", cur: Status{Phase: schemas.PhaseValidating},
			f: Facts{Cluster: ok, Lock: held, Job: &Job{Name: "j", Complete: true}}, phase: schemas.PhaseRunning, restored: "Unknown", event: "RestoreRunning", start: true},
		{name: "restart done: completed", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier, SnapshotKey: "a/b.snap", SnapshotSize: 42,
			Restart: &restart.Restart{StartedAt: &earlier, Pods: []restart.RestartedPod{{Name: "prod-0", UID: "x", DeletedAt: &earlier, HealthyAt: &earlier},
				{Name: "prod-1", UID: "x", DeletedAt: &earlier, HealthyAt: &earlier}, {Name: "prod-2", UID: "x", DeletedAt: &earlier, HealthyAt: &earlier}}}},
			f: Facts{Cluster: ok, Members: healthy3(), Job: &Job{Name: "j", Complete: true}}, phase: schemas.PhaseCompleted,
			msg: []string{"restored snapshot a/b.snap (42 bytes)", "all 3 OpenBao pods"}, restored: "True", event: "RestoreCompleted", start: true, completed: true},
		{name: "restart follows the progress, not the Job", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier, Restart: &restart.Restart{StartedAt: &earlier}},
			f:     Facts{UID: uid, Cluster: ok, Members: &restart.Members{StatefulSet: "prod", Missing: true}, Job: failedJob(), Timeouts: restart.Timeouts{Gate: time.Second, Sealed: time.Second}},
			phase: schemas.PhaseUnknown,
			msg:   []string{"StatefulSet prod does not exist", "u-1/Resume"}, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "cluster deleted during the restart", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier, Restart: &restart.Restart{StartedAt: &earlier}},
			f: Facts{Members: healthy3(), Job: &Job{Name: "j", Complete: true}}, phase: schemas.PhaseFailed,
			msg: []string{"deleted before its pods were restarted"}, restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "sealed after the restore: unknown at once", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Cluster: ok, Lock: held, Job: &Job{Name: "j", Complete: true, Pods: []Pod{{Name: "p", Termination: &schemas.TerminationMessage{
				Submitted: true, Sealed: &yes}}}}},
			phase: schemas.PhaseUnknown, msg: []string{"sealed itself", "source cluster's unseal", "u-1/Resume"}, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "exit 4 before submission fails", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Lock: held, Job: failedJob(term(4, false, "snapshot not found"))}, phase: schemas.PhaseFailed,
			msg: []string{"exit code 4", "snapshot is missing", "snapshot not found", "lock is released"}, restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "failed job without pods, nothing recorded", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Lock: held, Job: &Job{Name: "j", Failed: true, FailedReason: "DeadlineExceeded"}}, phase: schemas.PhaseFailed,
			msg: []string{"DeadlineExceeded"}, restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "exit 11 is unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Lock: held, Job: failedJob(Pod{Name: "p-1", ExitCode: 11})}, phase: schemas.PhaseUnknown,
			msg: []string{"exited 11", "openbao.org/restore-acknowledge=u-1/Resume", "u-1/Abandon", "lock stays held"}, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "submission record wins over submitted=false", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(term(4, false, "refused"))}, phase: schemas.PhaseUnknown,
			msg: []string{"pod p-1 recorded a submission to https://bao:8200"}, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "refused after the whole snapshot: failed, nothing applied", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(term(4, true, "OpenBao refused the snapshot (HTTP 400: could not verify hash file)"))},
			phase: schemas.PhaseFailed, msg: []string{"received the whole snapshot and refused it", "exit code 4", "could not verify hash file", "cluster is unchanged", "lock is released"},
			restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "token refused after the whole snapshot: failed", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(term(2, true, "refused the token"))},
			phase: schemas.PhaseFailed, msg: []string{"exit code 2"}, restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "refused, but the record names another pod: unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(Pod{Name: "p-2", ExitCode: 4,
				Termination: &schemas.TerminationMessage{ExitCode: 4, Submitted: true}})},
			phase: schemas.PhaseUnknown, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "refused, but no record: unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{UID: uid, Lock: held, Job: failedJob(term(4, true, "x"))},
			phase: schemas.PhaseUnknown, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "refused, but an earlier pod's outcome is unconfirmed: unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(Pod{Name: "p-0", ExitCode: 11}, term(4, true, "x"))},
			phase: schemas.PhaseUnknown, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "a 5xx from something between (exit 11): unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f:     Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(term(11, true, "OpenBao answered HTTP 502"))},
			phase: schemas.PhaseUnknown, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "termination says submitted", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Lock: held, Job: failedJob(term(10, true, "x"))}, phase: schemas.PhaseUnknown, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "lock request gone: not known, so unknown", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{UID: uid, Job: failedJob(term(4, false, "x"))}, phase: schemas.PhaseUnknown, msg: []string{"is gone"}, restored: "Unknown", event: "RestoreUnknown", start: true},
		{name: "unknown stays without ack", cur: Status{Phase: schemas.PhaseUnknown, Message: "m", StartTime: &earlier},
			f: Facts{UID: uid, Lock: heldSubmitted, Job: failedJob(term(11, true, ""))}, phase: schemas.PhaseUnknown, msg: []string{"m"}, start: true},
		{name: "ack for another uid is ignored", cur: Status{Phase: schemas.PhaseUnknown, Message: "m", StartTime: &earlier},
			f: Facts{UID: uid, Ack: "other/Abandon", Lock: heldSubmitted, Job: failedJob()}, phase: schemas.PhaseUnknown, start: true},
		{name: "abandon ends failed", cur: Status{Phase: schemas.PhaseUnknown, StartTime: &earlier},
			f: Facts{UID: uid, Ack: uid + "/Abandon", Lock: heldSubmitted, Job: failedJob()}, phase: schemas.PhaseFailed,
			msg: []string{"abandoned"}, restored: "False", event: "RestoreFailed", start: true, completed: true},
		{name: "resume re-runs the gates and restarts", cur: Status{Phase: schemas.PhaseUnknown, StartTime: &earlier},
			f: Facts{UID: uid, Ack: uid + "/Resume", Cluster: ok, Members: healthy3(), Lock: heldSubmitted, Job: failedJob()}, phase: schemas.PhaseRunning,
			msg: []string{"evicting pod prod-1"}, restored: "Unknown", event: "RestoreRunning", start: true},
		{name: "a resume already acted on is not repeated", cur: Status{Phase: schemas.PhaseUnknown, Message: "m", StartTime: &earlier,
			Restart: &restart.Restart{StartedAt: &earlier, Acknowledged: uid + "/Resume"}},
			f: Facts{UID: uid, Ack: uid + "/Resume", Cluster: ok, Members: healthy3(), Job: &Job{Complete: true}}, phase: schemas.PhaseUnknown,
			msg: []string{"m"}, start: true},
		{name: "failed is sticky", cur: Status{Phase: schemas.PhaseFailed, Message: "m"},
			f: Facts{Lock: held, Job: &Job{Complete: true}}, phase: schemas.PhaseFailed, msg: []string{"m"}},
		{name: "completed is sticky", cur: Status{Phase: schemas.PhaseCompleted, Message: "m"},
			f: Facts{Violations: []schemas.Violation{{Message: "x"}}}, phase: schemas.PhaseCompleted, msg: []string{"m"}},
		{name: "cluster deleted mid-run before submission fails", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Lock: held, Job: &Job{Name: "j"}}, phase: schemas.PhaseFailed, msg: []string{"deleted"}, restored: "False",
			event: "RestoreFailed", start: true, completed: true},
		{name: "cluster deleted mid-run after submission follows the Job", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Lock: heldSubmitted, Job: &Job{Name: "j"}}, phase: schemas.PhaseRunning, start: true},
		{name: "cluster deleted and lock request gone follows the Job", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{Job: &Job{Name: "j"}}, phase: schemas.PhaseRunning, start: true},
		{name: "a later invalid verdict does not fail a running job", cur: Status{Phase: schemas.PhaseRunning, StartTime: &earlier},
			f: Facts{FunctionInvalid: "x", Cluster: ok, Lock: held, Job: &Job{Name: "j"}}, phase: schemas.PhaseRunning, start: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.f.Now = now
			got, evs := Next(c.cur, c.f)
			if got.Phase != c.phase {
				t.Fatalf("phase %q, want %q (message %q)", got.Phase, c.phase, got.Message)
			}
			for _, m := range c.msg {
				if !strings.Contains(got.Message, m) {
					t.Errorf("message %q lacks %q", got.Message, m)
				}
			}
			var restored string
			for _, cd := range got.Conditions {
				if cd.Type == schemas.CondRestored {
					restored = cd.Status
				}
			}
			if restored != c.restored {
				t.Errorf("Restored condition %q, want %q", restored, c.restored)
			}
			var reasons []string
			for _, e := range evs {
				reasons = append(reasons, e.Reason)
				if strings.HasPrefix(e.Reason, "Restore") && e.Warning != (c.phase == schemas.PhaseFailed || c.phase == schemas.PhaseUnknown) {
					t.Errorf("event %v: wrong type", e)
				}
			}
			if c.event == "" && len(evs) != 0 || c.event != "" && !slices.Contains(reasons, c.event) {
				t.Errorf("events %v, want %q", reasons, c.event)
			}
			if (got.StartTime != nil) != c.start {
				t.Errorf("startTime %v, want set=%v", got.StartTime, c.start)
			}
			if c.cur.StartTime != nil && got.StartTime != c.cur.StartTime {
				t.Errorf("startTime changed from %v to %v", c.cur.StartTime, got.StartTime)
			}
			if (got.CompletionTime != nil) != c.completed {
				t.Errorf("completionTime %v, want set=%v", got.CompletionTime, c.completed)
			}
		})
	}
}

// An acknowledgement is acted on once; removing the annotation forgets it,
// so that setting it again resumes again.
func TestResumeOnceThenAgain(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ack := "u/" + schemas.AckResume
	cur := Status{Phase: schemas.PhaseUnknown, Message: "m", Restart: &restart.Restart{StartedAt: &metav1.Time{Time: now}, Acknowledged: ack}}
	f := Facts{UID: "u", Cluster: &Cluster{Initialized: true}, Members: healthy3(), Now: now}
	f.Ack = ack
	if got, _ := Next(cur, f); got.Phase != schemas.PhaseUnknown {
		t.Fatalf("consumed ack acted on: %s", got.Phase)
	}
	f.Ack = ""
	got, _ := Next(cur, f)
	if got.Phase != schemas.PhaseUnknown || got.Restart.Acknowledged != "" {
		t.Fatalf("removal not recorded: %+v", got.Restart)
	}
	f.Ack = ack
	if got, _ = Next(got, f); got.Phase != schemas.PhaseRunning || got.Restart.Acknowledged != ack {
		t.Fatalf("second resume: %s %+v", got.Phase, got.Restart)
	}
}

func TestLockConditions(t *testing.T) {
	h := schemas.Holder("r", "u")
	got, _ := Next(Status{}, Facts{Cluster: &Cluster{Initialized: true}, Now: time.Now(),
		Lock: &Lock{State: schemas.LockHeld, HeldBy: h, Holder: h, Override: "cleared Backup"}})
	want := map[string]string{schemas.CondLockHeld: "True", schemas.CondOverride: "True"}
	for _, c := range got.Conditions {
		if want[c.Type] != c.Status {
			t.Errorf("condition %+v", c)
		}
		delete(want, c.Type)
	}
	if len(want) > 0 {
		t.Errorf("missing conditions %v", want)
	}
}

func TestExitMeaningCoversTheTable(t *testing.T) {
	for _, c := range []int32{0, 1, 2, 3, 4, 5, 6, 10, 11} {
		if ExitMeaning(c) == "not an executor exit code" {
			t.Errorf("exit %d has no meaning", c)
		}
	}
}

// healthy3 is a healthy three-pod cluster led by prod-0.
func healthy3() *restart.Members {
	m := &restart.Members{StatefulSet: "prod", Replicas: 3}
	for i, name := range []string{"prod-0", "prod-1", "prod-2"} {
		m.Pods = append(m.Pods, restart.Member{Name: name, UID: "old-" + name, Ordinal: i, Ready: true,
			Health: restart.Health{Initialized: true, Standby: i != 0}})
	}
	return m
}

// A restore that replaced the cluster's identity, with no pin, goes on,
// and says so once: a condition that stays through the restart and to
// Completed, and one Warning event.
func TestIdentityChangedWithoutPin(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	job := &Job{Name: "j", Complete: true, Pods: []Pod{{Name: "p", Termination: &schemas.TerminationMessage{
		Submitted: true, ClusterIDBefore: "aaa", ClusterIDAfter: "bbb", SnapshotKey: "k"}}}}
	f := Facts{UID: "u", Cluster: &Cluster{Initialized: true}, Job: job, Now: now}
	got, evs := Next(Status{Phase: schemas.PhaseRunning}, f)
	c := find(got.Conditions, schemas.CondIdentityChanged)
	if got.Phase != schemas.PhaseRunning || got.Restart == nil || c == nil || c.Status != "True" ||
		!strings.Contains(c.Message, "aaa before the restore, bbb after") || !strings.Contains(c.Message, "spec.expectedClusterID pinned") {
		t.Fatalf("phase %s, restart %v, condition %+v", got.Phase, got.Restart, c)
	}
	warned := 0
	for _, e := range evs {
		if e.Reason == "ClusterIdentityChanged" && e.Warning {
			warned++
		}
	}
	if warned != 1 {
		t.Fatalf("events %+v: want one ClusterIdentityChanged Warning", evs)
	}
	// Through the restart to Completed: the condition stays, no second event.
	f.Members = healthy3()
	for range 10 {
		next, evs := Next(got, f)
		for _, e := range evs {
			if e.Reason == "ClusterIdentityChanged" {
				t.Fatalf("a second ClusterIdentityChanged event: %+v", e)
			}
		}
		if next.Restart.Asked() != nil {
			// The step-down Job reports.
			f.Members.StepDown = &restart.StepDownReport{SteppedDown: true, NewLeader: "prod-1"}
		}
		if next.Restart != nil && next.Restart.Pending() != nil {
			// The replacement of the pod just deleted.
			p := next.Restart.Pending()
			for i := range f.Members.Pods {
				if f.Members.Pods[i].Name == p.Name {
					f.Members.Pods[i].UID = "new-" + p.Name
				}
			}
		}
		got = next
	}
	if got.Phase != schemas.PhaseCompleted || find(got.Conditions, schemas.CondIdentityChanged) == nil {
		t.Fatalf("phase %s, conditions %+v: want Completed with IdentityChanged kept", got.Phase, got.Conditions)
	}

	// The same identity before and after: no condition.
	job.Pods[0].Termination.ClusterIDAfter = "aaa"
	if got, _ := Next(Status{Phase: schemas.PhaseRunning}, f); find(got.Conditions, schemas.CondIdentityChanged) != nil {
		t.Fatal("IdentityChanged without a change")
	}
}

// A lock taken from the restore by a writer that does not compare-and-swap
// shows on the XR (LockHeld=False Taken, LockTaken=True, one Warning
// event). Before a submission the restore just waits; after one it is
// Unknown until acknowledged, and its pods are not restarted under the
// other operation's lock.
func TestLockTaken(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h := schemas.Holder("r", "u")
	msg := "operation=Backup holder=openbaocluster/backup took the operation lock of cluster c1 from this restore"
	taken := &Lock{State: schemas.LockWaiting, HeldBy: "openbaocluster/backup", Holder: h, Message: "waiting",
		Taken: &Condition{Type: schemas.CondLockTaken, Status: "True", Reason: "Taken", Message: msg}}
	running := Status{Phase: schemas.PhaseRunning, Conditions: []Condition{{Type: schemas.CondLockHeld, Status: "True", Reason: "Held"}}}
	f := Facts{UID: "u", Cluster: &Cluster{Initialized: true}, Job: &Job{Name: "j"}, Lock: taken, Now: now}

	got, evs := Next(running, f)
	if got.Phase != schemas.PhaseRunning {
		t.Fatalf("before a submission: phase %s, want Running (the executor waits for the lock)", got.Phase)
	}
	if c := find(got.Conditions, schemas.CondLockHeld); c == nil || c.Status != "False" || c.Reason != "Taken" || c.Message != msg {
		t.Errorf("LockHeld %+v", c)
	}
	if c := find(got.Conditions, schemas.CondLockTaken); c == nil || c.Status != "True" {
		t.Errorf("LockTaken %+v", c)
	}
	if len(evs) != 1 || evs[0].Reason != "OperationLockTaken" || !evs[0].Warning || evs[0].Message != msg {
		t.Fatalf("events %+v: want one OperationLockTaken Warning", evs)
	}
	if _, evs := Next(got, f); len(evs) != 0 {
		t.Errorf("the event repeats: %+v", evs)
	}

	// Submitted, then taken: Unknown, with the acknowledgement to give.
	sub := *taken
	sub.Submission = &Submission{Pod: "p-1", At: now.Add(-time.Minute)}
	f.Lock = &sub
	got, _ = Next(running, f)
	if got.Phase != schemas.PhaseUnknown || got.Restart != nil {
		t.Fatalf("after a submission: phase %s restart %+v, want Unknown with no restart", got.Phase, got.Restart)
	}
	for _, want := range []string{"pod p-1", msg, schemas.AcknowledgeAnnotation + "=u/" + schemas.AckResume} {
		if !strings.Contains(got.Message, want) {
			t.Errorf("message %q lacks %q", got.Message, want)
		}
	}
	// Resumed by a person: the restart goes on, though the lock is still
	// reported taken.
	f.Ack, f.Members = "u/"+schemas.AckResume, healthy3()
	got, _ = Next(got, f)
	if got.Phase != schemas.PhaseRunning || got.Restart == nil {
		t.Fatalf("resumed: phase %s restart %+v", got.Phase, got.Restart)
	}
	if got, _ = Next(got, f); got.Phase != schemas.PhaseRunning {
		t.Fatalf("after the resume: phase %s, want Running", got.Phase)
	}

	// Taken back: LockTaken=False stays as a record, LockHeld is True.
	back := &Lock{State: schemas.LockHeld, HeldBy: h, Holder: h, Message: "holding",
		Taken: &Condition{Type: schemas.CondLockTaken, Status: "False", Reason: "Retaken", Message: "took back"}}
	f = Facts{UID: "u", Cluster: &Cluster{Initialized: true}, Job: &Job{Name: "j"}, Lock: back, Now: now}
	got, evs = Next(running, f)
	if c := find(got.Conditions, schemas.CondLockHeld); c == nil || c.Status != "True" {
		t.Errorf("LockHeld %+v after the retake", c)
	}
	if c := find(got.Conditions, schemas.CondLockTaken); c == nil || c.Status != "False" || len(evs) != 0 {
		t.Errorf("LockTaken %+v, events %+v after the retake", c, evs)
	}
}

// TestFailedMessageSaysSubmissionOnce: the executor's message already ends
// with whether anything was submitted; the phase adds only the lock.
func TestFailedMessageSaysSubmissionOnce(t *testing.T) {
	cases := map[string]struct {
		pod  Pod
		want string
	}{
		"executor's message": {
			pod:  Pod{ExitCode: 6, Termination: &schemas.TerminationMessage{Message: "digest mismatch: the snapshot is sha256:a, the pin is sha256:b. Nothing was submitted"}},
			want: "the restore Job failed: exit code 6 (verification failed: size, digest or cluster pins do not match): digest mismatch: the snapshot is sha256:a, the pin is sha256:b. Nothing was submitted; the lock is released",
		},
		"executor's message without the note": {
			pod:  Pod{ExitCode: 4, Termination: &schemas.TerminationMessage{Message: "snapshot clusters/prod/a.snap not found"}},
			want: "the restore Job failed: exit code 4 (" + ExitMeaning(4) + "): snapshot clusters/prod/a.snap not found; nothing was submitted to OpenBao; the lock is released",
		},
		"no termination message": {
			pod:  Pod{ExitCode: 1, Raw: "panic: boom"},
			want: "the restore Job failed: exit code 1 (" + ExitMeaning(1) + "): panic: boom; nothing was submitted to OpenBao; the lock is released",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := failedMessage(&Job{Pods: []Pod{c.pod}}); got != c.want {
				t.Errorf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}
