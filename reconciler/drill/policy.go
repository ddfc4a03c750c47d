// Package drill keeps the time of restore drills (OpenBaoRestoreDrill) and
// records their runs. Next is the pure policy: from the drill's status and
// what is (its spec, the source's newest backup, the run's restore and its
// read check), when a run starts, how it ended, and when to look again.
// The Reconciler gathers the facts and applies the status; the function
// composes what status.active asks for.
package drill

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Status is the drill's status, as this reconciler owns it.
type Status struct {
	Active          *Run         `json:"active,omitempty"`
	Runs            []Run        `json:"runs,omitempty"`
	LastRun         int64        `json:"lastRun,omitempty"`
	LastSuccessTime *metav1.Time `json:"lastSuccessTime,omitempty"`
	NextRunAt       *metav1.Time `json:"nextRunAt,omitempty"`
	LastBackupKey   string       `json:"lastBackupKey,omitempty"`
	BackupsSinceRun int64        `json:"backupsSinceRun,omitempty"`
	LastTrigger     string       `json:"lastTrigger,omitempty"`
	Conditions      []Condition  `json:"conditions,omitempty"`
}

// Run is one run of the drill.
type Run struct {
	Run       int64        `json:"run"`
	Restore   string       `json:"restore"`
	Cluster   string       `json:"cluster"`
	Snapshot  *Snapshot    `json:"snapshot,omitempty"`
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// RestoredAt is when its restore was Completed: the function then
	// composes the read check.
	RestoredAt *metav1.Time `json:"restoredAt,omitempty"`
	// NudgedAt is when the run was last written again for Crossplane,
	// whose watch circuit was open while the run waited for its
	// composition (Nudge).
	NudgedAt *metav1.Time `json:"nudgedAt,omitempty"`
	EndedAt  *metav1.Time `json:"endedAt,omitempty"`
	Outcome  string       `json:"outcome,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	Message  string       `json:"message,omitempty"`
	// The time to recover, from the start to the checks verified, and its
	// parts.
	TimeToRecoverSeconds *float64 `json:"timeToRecoverSeconds,omitempty"`
	BootstrapSeconds     *float64 `json:"bootstrapSeconds,omitempty"`
	RestoreSeconds       *float64 `json:"restoreSeconds,omitempty"`
	ChecksSeconds        *float64 `json:"checksSeconds,omitempty"`
}

// Snapshot is the backup a run restores, pinned.
type Snapshot struct {
	Key       string `json:"key"`
	Digest    string `json:"digest,omitempty"`
	Size      int64  `json:"size,omitempty"`
	ClusterID string `json:"clusterID,omitempty"`
	Version   string `json:"version,omitempty"`
}

// Condition is a drill condition (Passed).
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// The outcomes of a run.
const (
	OutcomePassed = "Passed"
	OutcomeFailed = "Failed"
)

// Facts are what Next decides from.
type Facts struct {
	Now time.Time
	// Name is the drill's name as its users know it (the claim's): the
	// runs are named after it.
	Name string
	// Spec is the drill's valid spec; nil when it is invalid (no run
	// starts; one under way goes on).
	Spec *schemas.DrillSpec
	// Created is when the drill was created.
	Created time.Time
	// Trigger is the run-now annotation's value.
	Trigger string
	// Latest is the source cluster's newest backup; nil if it reports
	// none or does not exist.
	Latest *schemas.SnapshotRef
	// Restore is the active run's restore, nil until it exists.
	Restore *Restore
	// Check is the active run's read check, nil until it ended;
	// CheckComposed is whether its Job exists.
	Check         *Check
	CheckComposed bool
	// CircuitOpen is whether Crossplane's watch circuit is open for the
	// drill's XR (xrkinds.CircuitOpen).
	CircuitOpen bool
}

// Restore is what the run's OpenBaoRestore says.
type Restore struct {
	Phase, Message string
	// UpAt is when its new cluster came up, CompletedAt when it ended.
	UpAt, CompletedAt time.Time
}

// Check is how the run's read check ended.
type Check struct {
	Passed  bool
	Message string
	EndedAt time.Time
}

// Event is an event on the drill.
type Event struct {
	Warning         bool
	Reason, Message string
}

// Next decides the drill's status, its events, and how long until it must
// look again (0: only on a change).
func Next(cur Status, f Facts) (Status, []Event, time.Duration) {
	next := cur
	next.Runs = slices.Clone(cur.Runs)
	var evs []Event
	now := metav1.NewTime(f.Now.UTC().Truncate(time.Second))

	// New backups of the source, for everySuccessfulBackups only: a
	// scheduled drill writes nothing when its source backs up.
	if l := f.Latest; l != nil && l.Key != cur.LastBackupKey && f.Spec != nil && f.Spec.EverySuccessfulBackups > 0 {
		if cur.LastBackupKey != "" {
			next.BackupsSinceRun++
		}
		next.LastBackupKey = l.Key
	}

	if a := cur.Active; a != nil {
		run := *a
		next.Active = &run
		if run.EndedAt == nil && run.RestoredAt == nil && f.Restore != nil && f.Restore.Phase == schemas.PhaseCompleted {
			run.RestoredAt = &now
		}
		if run.EndedAt == nil {
			if ended, ev := finish(&run, f, now); ended {
				next = record(next, run, f)
				evs = append(evs, ev)
			}
		}
		if run.EndedAt != nil {
			// The run's objects stay cleanupAfterSeconds, then go.
			gone := run.EndedAt.Add(cleanup(f.Spec))
			if !f.Now.Before(gone) {
				next.Active = nil
			} else {
				return next, evs, gone.Sub(f.Now)
			}
		}
	}
	if a := next.Active; a != nil {
		return next, evs, nudge(a, f, now)
	}
	if f.Spec == nil {
		return next, evs, 0
	}

	// Whether a run is due.
	manual := f.Trigger != "" && f.Trigger != cur.LastTrigger
	if next.NextRunAt == nil && f.Spec.Schedule != "" {
		at := metav1.NewTime(f.Spec.Next(f.Created))
		next.NextRunAt = &at
	}
	if f.Spec.Schedule == "" {
		next.NextRunAt = nil
	}
	due := manual
	if !f.Spec.Suspend {
		due = due || next.NextRunAt != nil && !f.Now.Before(next.NextRunAt.Time) ||
			f.Spec.EverySuccessfulBackups > 0 && next.BackupsSinceRun >= f.Spec.EverySuccessfulBackups
	}
	if !due {
		if next.NextRunAt != nil && !f.Spec.Suspend {
			return next, evs, next.NextRunAt.Sub(f.Now)
		}
		return next, evs, 0
	}
	if manual {
		next.LastTrigger = f.Trigger
	}
	if next.NextRunAt != nil && !f.Now.Before(next.NextRunAt.Time) {
		at := metav1.NewTime(f.Spec.Next(f.Now))
		next.NextRunAt = &at
	}
	next.BackupsSinceRun = 0
	next.LastRun = cur.LastRun + 1
	run := Run{Run: next.LastRun, Restore: schemas.RunName(f.Name, next.LastRun), StartedAt: &now}
	run.Cluster = run.Restore
	switch l := f.Latest; {
	case l == nil:
		run.EndedAt, run.Outcome, run.Reason = &now, OutcomeFailed, schemas.DrillNoCompatibleSnapshot
		run.Message = fmt.Sprintf("OpenBaoCluster %s reports no newest backup (status.backup.latestSnapshot): nothing to rehearse", f.Spec.Source.Cluster)
	case l.Version != "" && l.Version != f.Spec.Version():
		run.EndedAt, run.Outcome, run.Reason = &now, OutcomeFailed, schemas.DrillVersionMismatch
		run.Message = fmt.Sprintf("the newest backup %s was taken with OpenBao %s, but spec.clusterTemplate.version is %s: set the template's version to the backup's", l.Key, l.Version, f.Spec.Version())
	default:
		run.Snapshot = &Snapshot{Key: l.Key, Digest: l.Digest, Size: l.Size, ClusterID: l.ClusterID, Version: l.Version}
		next.Active = &run
		next.Conditions = passed(cur.Conditions, "Unknown", schemas.DrillRunning, fmt.Sprintf("run %d restores %s into %s", run.Run, l.Key, run.Cluster))
		evs = append(evs, Event{Reason: "DrillRunStarted", Message: fmt.Sprintf("run %d: restoring %s into a new cluster %s", run.Run, l.Key, run.Cluster)})
		return next, evs, 0
	}
	next = record(next, run, f)
	evs = append(evs, Event{Warning: true, Reason: "Drill" + run.Reason, Message: fmt.Sprintf("run %d: %s", run.Run, run.Message)})
	return next, evs, wait(next, f)
}

// NudgeEvery is how often a run that waits for Crossplane is written again
// while the drill's watch circuit is open. The breaker lets one event
// through every 30 seconds, and only if one comes: a run whose restore has
// ended and whose check Job is not composed yet makes none of its own, and
// would wait for Crossplane's poll. One of these writes passes at most this
// long after the breaker allows it.
const NudgeEvery = 5 * time.Second

// nudge marks an unfinished run that waits for Crossplane's composition
// (its restore claim, or its check Job once restored) with the time, every
// NudgeEvery while the circuit is open: the write is an event on the
// drill's XR. It returns how long until it must look again (0: only on a
// change).
func nudge(a *Run, f Facts, now metav1.Time) time.Duration {
	reads := f.Spec != nil && len(f.Spec.ReadPaths) > 0
	waits := f.Restore == nil || a.RestoredAt != nil && reads && !f.CheckComposed
	if a.EndedAt != nil || !f.CircuitOpen || !waits {
		return 0
	}
	if a.NudgedAt != nil && f.Now.Before(a.NudgedAt.Add(NudgeEvery)) {
		return a.NudgedAt.Add(NudgeEvery).Sub(f.Now)
	}
	a.NudgedAt = &now
	return NudgeEvery
}

// wait is how long until the schedule, or 0.
func wait(s Status, f Facts) time.Duration {
	if s.NextRunAt == nil || f.Spec == nil || f.Spec.Suspend {
		return 0
	}
	return max(s.NextRunAt.Sub(f.Now), time.Second)
}

func cleanup(s *schemas.DrillSpec) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(s.CleanupAfterSeconds) * time.Second
}

// finish ends the run when its restore failed, or passed with its checks:
// it reports whether it ended, and the event.
func finish(run *Run, f Facts, now metav1.Time) (bool, Event) {
	r := f.Restore
	if r == nil {
		return false, Event{}
	}
	reads := f.Spec != nil && len(f.Spec.ReadPaths) > 0
	switch {
	case r.Phase == schemas.PhaseFailed || r.Phase == schemas.PhaseUnknown:
		run.Outcome, run.Reason = OutcomeFailed, schemas.DrillRestoreFailed
		run.Message = fmt.Sprintf("the restore %s is %s: %s", run.Restore, r.Phase, r.Message)
	case r.Phase != schemas.PhaseCompleted:
		return false, Event{}
	case reads && f.Check == nil:
		return false, Event{}
	case reads && !f.Check.Passed:
		run.Outcome, run.Reason, run.Message = OutcomeFailed, schemas.DrillReadCheckFailed, f.Check.Message
	default:
		run.Outcome, run.Reason = OutcomePassed, schemas.DrillPassed
		run.Message = fmt.Sprintf("restored %s into %s and confirmed its identity", run.Snapshot.Key, run.Cluster)
		if reads {
			run.Message += "; " + f.Check.Message
		}
	}
	run.EndedAt, run.NudgedAt = &now, nil
	if run.Outcome == OutcomePassed && run.StartedAt != nil {
		end := r.CompletedAt
		if reads {
			end = f.Check.EndedAt
		}
		if end.IsZero() {
			end = f.Now
		}
		secs := func(a, b time.Time) *float64 {
			if a.IsZero() || b.IsZero() || b.Before(a) {
				return nil
			}
			s := b.Sub(a).Seconds()
			return &s
		}
		run.TimeToRecoverSeconds = secs(run.StartedAt.Time, end)
		run.BootstrapSeconds = secs(run.StartedAt.Time, r.UpAt)
		run.RestoreSeconds = secs(r.UpAt, r.CompletedAt)
		if reads {
			run.ChecksSeconds = secs(r.CompletedAt, f.Check.EndedAt)
		}
	}
	if run.Outcome == OutcomePassed {
		return true, Event{Reason: "DrillPassed", Message: fmt.Sprintf("run %d passed: %s", run.Run, run.Message)}
	}
	return true, Event{Warning: true, Reason: "Drill" + run.Reason, Message: fmt.Sprintf("run %d failed: %s", run.Run, run.Message)}
}

// record adds an ended run to the history (newest first, historyLimit
// kept), and sets the Passed condition and the last success.
func record(s Status, run Run, f Facts) Status {
	limit := int64(10)
	if f.Spec != nil {
		limit = f.Spec.HistoryLimit
	}
	s.Runs = append([]Run{run}, s.Runs...)
	if int64(len(s.Runs)) > limit {
		s.Runs = s.Runs[:limit]
	}
	status := "False"
	if run.Outcome == OutcomePassed {
		status = "True"
		s.LastSuccessTime = run.EndedAt
	}
	s.Conditions = passed(s.Conditions, status, run.Reason, fmt.Sprintf("run %d: %s", run.Run, run.Message))
	return s
}

// passed sets the Passed condition.
func passed(cs []Condition, status, reason, msg string) []Condition {
	out := slices.DeleteFunc(slices.Clone(cs), func(c Condition) bool { return c.Type == schemas.CondPassed })
	return append(out, Condition{Type: schemas.CondPassed, Status: status, Reason: reason, Message: msg})
}
