package drill

import (
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

func drillSpec(edit func(*schemas.DrillSpec)) *schemas.DrillSpec {
	s := &schemas.DrillSpec{Source: schemas.DrillSource{Cluster: "prod"}, Schedule: "0 3 * * 0", HistoryLimit: 2,
		ClusterTemplate: map[string]any{"version": "2.4.0"}, ReadPaths: []string{"secret/data/app/db"}}
	if edit != nil {
		edit(s)
	}
	return s
}

var (
	t0     = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC) // a Saturday
	sunday = time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	newest = &schemas.SnapshotRef{Key: "clusters/prod/b.snap", Digest: "sha256:ab", Size: 42, ClusterID: "c-prod", Version: "2.4.0"}
)

// TestSchedule: the first run is the schedule's first time after the
// drill's creation; until then the drill waits for it, without polling.
func TestSchedule(t *testing.T) {
	f := Facts{Now: t0, Name: "weekly", Created: t0, Spec: drillSpec(nil), Latest: newest}
	s, evs, wait := Next(Status{}, f)
	if s.Active != nil || len(evs) != 0 || s.NextRunAt == nil || !s.NextRunAt.Time.Equal(sunday) || wait != sunday.Sub(t0) {
		t.Fatalf("before: %+v %v wait %s", s, evs, wait)
	}
	f.Now = sunday.Add(time.Second)
	s, evs, _ = Next(s, f)
	a := s.Active
	if a == nil || a.Run != 1 || a.Restore != "weekly-run-1" || a.Cluster != a.Restore || a.Snapshot.Key != newest.Key || a.Snapshot.ClusterID != "c-prod" {
		t.Fatalf("due: %+v", a)
	}
	if len(evs) != 1 || evs[0].Reason != "DrillRunStarted" || !s.NextRunAt.Time.Equal(sunday.Add(7*24*time.Hour)) {
		t.Errorf("due: %v, next %s", evs, s.NextRunAt)
	}
	if c := s.Conditions[0]; c.Type != schemas.CondPassed || c.Status != "Unknown" || c.Reason != schemas.DrillRunning {
		t.Errorf("condition %+v", c)
	}
	// One run at a time: due again, but one is under way.
	f.Now = sunday.Add(8 * 24 * time.Hour)
	if s2, _, _ := Next(s, f); s2.Active.Run != 1 || s2.LastRun != 1 {
		t.Errorf("a second run began beside the first: %+v", s2.Active)
	}
}

// TestRunOutcomes: a run ends Passed with its time to recover split into
// its parts, or Failed with the reason and the message; its objects stay
// cleanupAfterSeconds; the history keeps historyLimit runs.
func TestRunOutcomes(t *testing.T) {
	start := Status{}
	f := Facts{Now: t0, Name: "weekly", Created: t0, Spec: drillSpec(func(s *schemas.DrillSpec) { s.CleanupAfterSeconds = 60 }), Latest: newest, Trigger: "1"}
	s, _, _ := Next(start, f)
	if s.Active == nil || s.LastTrigger != "1" {
		t.Fatalf("the manual trigger: %+v", s)
	}
	running := s

	up, done, checked := t0.Add(4*time.Second), t0.Add(15*time.Second), t0.Add(17*time.Second)
	f.Now = t0.Add(16 * time.Second)
	f.Restore = &Restore{Phase: schemas.PhaseCompleted, UpAt: up, CompletedAt: done}
	if s, evs, _ := Next(running, f); s.Active.EndedAt != nil || s.Active.RestoredAt == nil || len(evs) != 0 {
		t.Fatalf("restored, checks not read yet: %+v %v", s.Active, evs)
	}
	f.Now, f.Check = t0.Add(18*time.Second), &Check{Passed: true, Message: "read 1 path(s)", EndedAt: checked}
	s, evs, wait := Next(running, f)
	r := s.Runs[0]
	if r.Outcome != OutcomePassed || *r.TimeToRecoverSeconds != 17 || *r.BootstrapSeconds != 4 || *r.RestoreSeconds != 11 || *r.ChecksSeconds != 2 {
		t.Fatalf("passed: %+v", r)
	}
	if s.Active == nil || wait != time.Minute || len(evs) != 1 || evs[0].Reason != "DrillPassed" || s.LastSuccessTime == nil || s.Conditions[0].Status != "True" {
		t.Fatalf("passed: active %+v wait %s events %v", s.Active, wait, evs)
	}
	f.Now = t0.Add(18*time.Second + time.Minute)
	if s, _, _ = Next(s, f); s.Active != nil {
		t.Fatalf("after cleanupAfterSeconds: %+v", s.Active)
	}

	for name, c := range map[string]struct {
		restore *Restore
		check   *Check
		reason  string
		msg     string
	}{
		"restore failed":  {&Restore{Phase: schemas.PhaseFailed, Message: "exit code 4"}, nil, schemas.DrillRestoreFailed, "is Failed: exit code 4"},
		"restore unknown": {&Restore{Phase: schemas.PhaseUnknown, Message: "sealed"}, nil, schemas.DrillRestoreFailed, "is Unknown"},
		"a path missing":  {&Restore{Phase: schemas.PhaseCompleted}, &Check{Message: "secret/data/app/db (not found)"}, schemas.DrillReadCheckFailed, "secret/data/app/db (not found)"},
	} {
		f := f
		f.Restore, f.Check = c.restore, c.check
		s, evs, _ := Next(running, f)
		r := s.Runs[0]
		if r.Outcome != OutcomeFailed || r.Reason != c.reason || !strings.Contains(r.Message, c.msg) || len(evs) != 1 || !evs[0].Warning || s.Conditions[0].Status != "False" {
			t.Errorf("%s: %+v %v", name, r, evs)
		}
	}

	// historyLimit 2: the oldest goes.
	h := Status{LastRun: 3, Runs: []Run{{Run: 3}, {Run: 2}}}
	h.Active = &Run{Run: 4, Restore: "weekly-run-4", Snapshot: &Snapshot{Key: "k"}}
	f.Restore, f.Check = &Restore{Phase: schemas.PhaseFailed}, nil
	if s, _, _ := Next(h, f); len(s.Runs) != 2 || s.Runs[0].Run != 4 || s.Runs[1].Run != 3 {
		t.Errorf("history %+v", s.Runs)
	}
}

// TestNoRunPossible: no newest backup, or one of another version, ends the
// run at once, recorded, with no restore composed.
func TestNoRunPossible(t *testing.T) {
	f := Facts{Now: t0, Name: "weekly", Created: t0, Spec: drillSpec(nil), Trigger: "now"}
	s, evs, _ := Next(Status{}, f)
	if s.Active != nil || s.Runs[0].Reason != schemas.DrillNoCompatibleSnapshot || len(evs) != 1 || !evs[0].Warning {
		t.Errorf("no backup: %+v %v", s, evs)
	}
	old := *newest
	old.Version = "2.3.1"
	f.Latest, f.Trigger = &old, "again"
	s, _, _ = Next(s, f)
	if s.Active != nil || s.Runs[0].Reason != schemas.DrillVersionMismatch || !strings.Contains(s.Runs[0].Message, "2.3.1") || s.LastRun != 2 {
		t.Errorf("another version: %+v", s.Runs)
	}
}

// TestTriggers: suspend stops the schedule but not a manual run; a trigger
// value runs once; everySuccessfulBackups counts new backups.
func TestTriggers(t *testing.T) {
	f := Facts{Now: sunday.Add(time.Minute), Name: "weekly", Created: t0, Spec: drillSpec(func(s *schemas.DrillSpec) { s.Suspend = true }), Latest: newest}
	if s, _, wait := Next(Status{}, f); s.Active != nil || wait != 0 {
		t.Errorf("suspended: %+v wait %s", s.Active, wait)
	}
	f.Trigger = "x"
	s, _, _ := Next(Status{}, f)
	if s.Active == nil {
		t.Fatal("a manual run while suspended did not start")
	}
	s.Active = nil
	if s2, _, _ := Next(s, f); s2.Active != nil {
		t.Error("the same trigger ran twice")
	}

	every := Facts{Now: t0, Name: "weekly", Created: t0, Spec: drillSpec(func(s *schemas.DrillSpec) { s.Schedule = ""; s.EverySuccessfulBackups = 2 }), Latest: newest}
	st := Status{}
	for i, key := range []string{"a.snap", "b.snap", "c.snap"} {
		l := *newest
		l.Key = key
		every.Latest = &l
		st, _, _ = Next(st, every)
		if started := st.Active != nil; started != (i == 2) {
			t.Fatalf("backup %d (%s): started %v, %d since", i, key, started, st.BackupsSinceRun)
		}
	}
	if st.BackupsSinceRun != 0 || st.NextRunAt != nil {
		t.Errorf("after the run: %d since, next %v", st.BackupsSinceRun, st.NextRunAt)
	}
}

// TestCheckMessage: the read check's report, path by path.
func TestCheckMessage(t *testing.T) {
	ok := schemas.TerminationMessage{Message: "read 2 path(s). Nothing was submitted", ReadCheck: []schemas.PathCheck{
		{Path: "secret/data/a", OK: true, Message: "1 key(s)"}, {Path: "secret/data/b", OK: true, Message: "2 key(s)"}}}
	if got := checkMessage(ok); got != "read 2 path(s), each with data: secret/data/a (1 key(s)), secret/data/b (2 key(s))" {
		t.Errorf("passed: %q", got)
	}
	bad := ok
	bad.ReadCheck = []schemas.PathCheck{ok.ReadCheck[0], {Path: "secret/data/new", Message: "not found: the snapshot does not hold it"}}
	if got := checkMessage(bad); got != "the read check failed at secret/data/new (not found: the snapshot does not hold it)" {
		t.Errorf("failed: %q", got)
	}
}

// TestNudgeWhenCircuitOpen: a run that waits for Crossplane's composition
// (its restore claim, or its check Job after the restore) is written again
// every NudgeEvery while Crossplane's watch circuit for the drill is open,
// and never otherwise: a closed circuit, a run whose restore runs, or a
// check Job already composed.
func TestNudgeWhenCircuitOpen(t *testing.T) {
	f := Facts{Now: t0, Name: "weekly", Created: t0, Spec: drillSpec(nil), Latest: newest, Trigger: "1"}
	s, _, _ := Next(Status{}, f)
	if s.Active == nil || s.Active.NudgedAt != nil {
		t.Fatalf("start: %+v", s.Active)
	}
	restored := &Restore{Phase: schemas.PhaseCompleted, UpAt: t0.Add(3 * time.Second), CompletedAt: t0.Add(11 * time.Second)}
	cases := []struct {
		name       string
		edit       func(*Facts)
		wantNudged bool
	}{
		{name: "closed circuit, no claim yet", edit: func(*Facts) {}},
		{name: "open circuit, no claim yet", edit: func(f *Facts) { f.CircuitOpen = true }, wantNudged: true},
		{name: "open circuit, the restore runs", edit: func(f *Facts) {
			f.CircuitOpen, f.Restore = true, &Restore{Phase: schemas.PhaseRunning}
		}},
		{name: "open circuit, restored, no check Job", edit: func(f *Facts) { f.CircuitOpen, f.Restore = true, restored }, wantNudged: true},
		{name: "open circuit, restored, check Job composed", edit: func(f *Facts) {
			f.CircuitOpen, f.Restore, f.CheckComposed = true, restored, true
		}},
		{name: "closed circuit, restored, no check Job", edit: func(f *Facts) { f.Restore = restored }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := f
			g.Now = t0.Add(12 * time.Second)
			c.edit(&g)
			cur := s
			if g.Restore != nil && g.Restore.Phase == schemas.PhaseCompleted {
				first := g
				first.CircuitOpen = false
				cur, _, _ = Next(s, first) // restoredAt first
				g.Now = g.Now.Add(time.Second)
			}
			next, _, wait := Next(cur, g)
			if got := next.Active.NudgedAt != nil; got != c.wantNudged {
				t.Fatalf("nudged %v, want %v: %+v", got, c.wantNudged, next.Active)
			}
			if !c.wantNudged {
				return
			}
			if wait != NudgeEvery {
				t.Errorf("wait %s, want %s", wait, NudgeEvery)
			}
			// Not again before NudgeEvery; again after it.
			g.Now = g.Now.Add(2 * time.Second)
			again, _, wait := Next(next, g)
			if !again.Active.NudgedAt.Equal(next.Active.NudgedAt) || wait != NudgeEvery-2*time.Second {
				t.Errorf("nudged again too soon: %s, wait %s", again.Active.NudgedAt, wait)
			}
			g.Now = g.Now.Add(NudgeEvery)
			if later, _, _ := Next(again, g); !later.Active.NudgedAt.After(next.Active.NudgedAt.Time) {
				t.Errorf("not nudged after NudgeEvery: %s", later.Active.NudgedAt)
			}
		})
	}
}
