package phase

import (
	"fmt"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// followDryRun decides a dry run from its Job: Completed when every check
// passed, Failed naming the check that did not. A dry run takes no lock
// and sends nothing, so it is never Unknown and restarts nothing.
func followDryRun(next Status, f Facts) Status {
	j := f.Job
	t := lastTermination(j)
	switch {
	case j.Complete:
		next.Phase = schemas.PhaseCompleted
		next.DryRun = report(t)
		next.Message = "dry run: every check passed; nothing was sent, no lock was taken and no pod restarted"
		if t != nil && t.Message != "" {
			next.Message = t.Message
		}
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondDryRun, Status: "True", Reason: "Passed", Message: next.Message})
	case j.Failed:
		next.Phase = schemas.PhaseFailed
		next.DryRun = report(t)
		next.Message = failedMessage(j)
		if t != nil && t.DryRun && t.Message != "" {
			next.Message = t.Message
		}
		next.Conditions = append(next.Conditions, Condition{Type: schemas.CondDryRun, Status: "False", Reason: "CheckFailed", Message: next.Message})
	default:
		next.Phase = schemas.PhaseRunning
		next.Message = fmt.Sprintf("dry run: the Job %s is running every check of the restore; nothing will be sent", j.Name)
	}
	return next
}

// report is status.dryRun from the executor's termination message.
func report(t *schemas.TerminationMessage) *schemas.DryRunReport {
	if t == nil {
		return nil
	}
	return &schemas.DryRunReport{
		SnapshotKey: t.SnapshotKey, SnapshotSize: t.SnapshotSize, SnapshotVersion: t.SnapshotVersion, SHA256: t.SHA256, Endpoint: t.Endpoint,
		ClusterID: t.ClusterIDBefore, Archive: t.Archive, Checks: t.Checks,
	}
}
