package restart

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StepDown is the leader's step-down (sys/step-down) before its restart,
// which a Job of the executor makes with the restore's own credentials:
// the reconciler holds none. It is asked once; whatever its outcome, the
// leader is restarted after it.
type StepDown struct {
	// Pod is the leader asked to step down.
	Pod         string       `json:"pod"`
	RequestedAt *metav1.Time `json:"requestedAt,omitempty"`
	EndedAt     *metav1.Time `json:"endedAt,omitempty"`
	// Outcome is SteppedDown, Failed or TimedOut (StepDown*).
	Outcome string `json:"outcome,omitempty"`
	// NewLeader is the node that became active, as the Job saw it.
	NewLeader string `json:"newLeader,omitempty"`
	Message   string `json:"message,omitempty"`
}

// The outcomes of a step-down.
const (
	StepDownDone     = "SteppedDown"
	StepDownFailed   = "Failed"
	StepDownTimedOut = "TimedOut"
)

// StepDownReport is what the step-down Job said, once it ended.
type StepDownReport struct {
	SteppedDown bool
	NewLeader   string
	Message     string
}

// Asked is the leader's step-down while it is asked and not yet ended,
// nil otherwise.
func (r *Restart) Asked() *StepDown {
	if r == nil || r.StepDown == nil || r.StepDown.EndedAt != nil {
		return nil
	}
	return r.StepDown
}

// endStepDown ends an asked step-down from the Job's report, or when it
// waited too long, and says so in an event.
func endStepDown(sd *StepDown, rep *StepDownReport, limit time.Duration, now time.Time) (Event, bool) {
	t := metav1.NewTime(now)
	switch {
	case rep != nil && rep.SteppedDown:
		sd.Outcome, sd.NewLeader, sd.Message = StepDownDone, rep.NewLeader, rep.Message
	case rep != nil:
		sd.Outcome, sd.Message = StepDownFailed, rep.Message
	case sd.RequestedAt == nil || now.Sub(sd.RequestedAt.Time) >= limit:
		sd.Outcome = StepDownTimedOut
		sd.Message = fmt.Sprintf("no step-down report within %s (is the function older than the reconciler?)", limit)
	default:
		return Event{}, false
	}
	sd.EndedAt = &t
	if sd.Outcome == StepDownDone {
		return Event{Reason: "LeaderSteppedDown", Message: fmt.Sprintf("the leader %s stepped down; %s is active: %s", sd.Pod, sd.NewLeader, sd.Message)}, true
	}
	return Event{Warning: true, Reason: "LeaderStepDownFailed", Message: fmt.Sprintf("the leader %s did not step down (%s: %s); it is restarted anyway, and Raft elects a restarted standby", sd.Pod, sd.Outcome, sd.Message)}, true
}
