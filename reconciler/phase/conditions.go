package phase

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// The restore's conditions: those of its lock, and how a new status keeps
// the old ones and names the events of a change.

// lockConditions are the XR's conditions about its lock request.
func lockConditions(l *Lock) []Condition {
	if l == nil {
		return nil
	}
	var cs []Condition
	switch {
	case l.State == schemas.LockHeld && l.HeldBy == l.Holder:
		cs = append(cs, Condition{Type: schemas.CondLockHeld, Status: "True", Reason: "Held", Message: l.Message})
	case l.State == schemas.LockWaiting && l.taken():
		cs = append(cs, Condition{Type: schemas.CondLockHeld, Status: "False", Reason: "Taken", Message: l.Taken.Message})
	case l.State == schemas.LockWaiting:
		cs = append(cs, Condition{Type: schemas.CondLockHeld, Status: "False", Reason: "Waiting", Message: l.Message})
	case l.State == schemas.LockReleased:
		cs = append(cs, Condition{Type: schemas.CondLockHeld, Status: "False", Reason: "Released", Message: l.Message})
	}
	if l.Override != "" {
		cs = append(cs, Condition{Type: schemas.CondOverride, Status: "True", Reason: "Overridden", Message: l.Override})
	}
	if l.Taken != nil {
		cs = append(cs, *l.Taken)
	}
	return cs
}

// taken reports whether another writer holds the lock it took from the
// request.
func (l *Lock) taken() bool { return l != nil && l.Taken != nil && l.Taken.Status == "True" }

// finish sets the times, keeps the conditions of the previous status that
// Next did not decide again, and names the events of a phase change.
func finish(cur, next Status, f Facts) (Status, []Event) {
	now := metav1.NewTime(f.Now.UTC().Truncate(time.Second))
	if next.StartTime == nil && rank[next.Phase] >= rank[schemas.PhaseRunning] && f.Job != nil {
		next.StartTime = &now
	}
	if schemas.Terminal(next.Phase) && next.CompletionTime == nil {
		next.CompletionTime = &now
	}
	next = trackTarget(next, f)
	next.Conditions = merge(cur.Conditions, next.Conditions)
	var evs []Event
	if c := find(next.Conditions, schemas.CondIdentityChanged); c != nil && find(cur.Conditions, schemas.CondIdentityChanged) == nil {
		evs = append(evs, Event{Warning: true, Reason: "ClusterIdentityChanged", Message: c.Message})
	}
	// A warning for each of these conditions as it turns True, or says
	// something new.
	for _, w := range [...]struct{ typ, reason string }{
		{schemas.CondLockTaken, "OperationLockTaken"}, {schemas.CondRestartBlocked, "RestartBlocked"},
	} {
		if c := find(next.Conditions, w.typ); c != nil && c.Status == "True" {
			if was := find(cur.Conditions, w.typ); was == nil || was.Status != "True" || was.Message != c.Message {
				evs = append(evs, Event{Warning: true, Reason: w.reason, Message: c.Message})
			}
		}
	}
	if next.Phase == cur.Phase {
		return next, evs
	}
	if next.Phase == schemas.PhaseUnknown {
		// Whatever happened, the state from before is one step away.
		next.Message += undoHint(next.SafetySnapshot)
	}
	warn := next.Phase == schemas.PhaseFailed || next.Phase == schemas.PhaseUnknown
	return next, append(evs, Event{Warning: warn, Reason: "Restore" + next.Phase, Message: next.Message})
}

// find is the condition of that type, nil if none.
func find(cs []Condition, typ string) *Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// merge keeps old conditions of types not decided now.
func merge(old, now []Condition) []Condition {
	out := append([]Condition(nil), now...)
	for _, o := range old {
		found := false
		for _, n := range now {
			if n.Type == o.Type {
				found = true
			}
		}
		if !found {
			out = append(out, o)
		}
	}
	return out
}
