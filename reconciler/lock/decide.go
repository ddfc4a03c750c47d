// Package lock reconciles LockRequests: it takes, waits for, overrides and
// releases an OpenBaoCluster's status.operationLock on behalf of restores.
// It is the only writer of that lock for restores, and writes it only by
// compare-and-swap on the cluster's resourceVersion, so at most one holder
// exists at any moment however many requests race.
package lock

import (
	"fmt"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Operations other than restores that take the lock (openbao-operator's).
const (
	OperationBackup  = "Backup"
	OperationUpgrade = "Upgrade"
)

// ClusterLock is status.operationLock as read from the cluster; the zero
// value means the lock is free.
type ClusterLock struct {
	Operation string
	Holder    string
	Message   string
}

// Free reports whether nobody holds the lock. A lock with neither an
// operation nor a holder is free; one with either is held, so that a
// half-written foreign lock is never taken over.
func (l ClusterLock) Free() bool { return l.Operation == "" && l.Holder == "" }

// Request is what the decision needs to know about a LockRequest.
type Request struct {
	Holder   string
	Override bool
	// Deleting is true once the request has a deletionTimestamp.
	Deleting bool
	// Ended is true once the restore the request belongs to is Completed
	// or Failed, which it stays: it never needs the lock again.
	Ended bool
	// Ahead is the request first in line for this cluster (the oldest
	// live one), if it is not this one. A free lock goes to the first in
	// line, so that restores of one cluster run in the order they were
	// requested and a release wakes one writer, not a herd. It is a
	// preference read from a cache; the compare-and-swap alone is what
	// keeps the lock single-held.
	Ahead string
	// Held is true while the request's status says it holds the lock;
	// Taken while its LockTaken condition says a writer that does not
	// compare-and-swap took the lock from it. Either way the lock is
	// this request's by right: it is taken back the moment it is free,
	// ahead of the line.
	Held, Taken bool
}

// Action is what the reconciler must do next.
type Action int

const (
	// Acquire: the lock is free; take it by compare-and-swap.
	Acquire Action = iota
	// Keep: this request holds the lock already; nothing to write.
	Keep
	// Wait: someone else holds it; record Waiting and wait for a change.
	Wait
	// Override: clear a foreign Backup or Upgrade lock and take it, in one
	// compare-and-swap.
	Override
	// Release: the request is going away and holds the lock; clear it by
	// compare-and-swap, then drop the finalizer.
	Release
	// Forget: the request is going away without holding the lock; only
	// drop the finalizer. Whoever holds the lock keeps it.
	Forget
	// Finish: the restore ended and the request holds the lock: mark the
	// request Released (so that no executor can record a submission under
	// it any more), then clear the lock by compare-and-swap. The request
	// and its finalizer stay until the request is deleted.
	Finish
	// Retire: the restore ended without the request holding the lock:
	// mark it Released, out of the line. Whoever holds the lock keeps it.
	Retire
)

func (a Action) String() string {
	switch a {
	case Acquire:
		return "Acquire"
	case Keep:
		return "Keep"
	case Wait:
		return "Wait"
	case Override:
		return "Override"
	case Release:
		return "Release"
	case Forget:
		return "Forget"
	case Finish:
		return "Finish"
	case Retire:
		return "Retire"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is an Action with the reason given to people.
type Decision struct {
	Action Action
	// Message explains the decision; for Wait it names the holder.
	Message string
	// Blocked is true when a non-restore operation holds the lock: the
	// reconciler then warns (OperationLockBlocked), as the anchor does.
	Blocked bool
	// Taken (with Wait) reports that the lock was taken from this
	// request while it held it: the reconciler marks the request
	// LockTaken and warns (OperationLockTaken), once.
	Taken bool
	// Retake (with Acquire or Override) reports that the request takes
	// back a lock it had held: the LockTaken condition turns False.
	Retake bool
}

// Decide is the whole lock policy, free of I/O so that it can be tested
// exhaustively: given the cluster's lock as last read and the request,
// what to do. The caller performs writes by compare-and-swap and, on a
// conflict, re-reads and decides again.
func Decide(cluster string, lock ClusterLock, req Request) Decision {
	ours := !lock.Free() && lock.Holder == req.Holder && lock.Operation == schemas.OperationRestore
	if req.Deleting {
		if ours {
			return Decision{Action: Release, Message: "releasing the operation lock of cluster " + cluster}
		}
		// Never release a lock held by someone else, even one this
		// request overrode or waited for.
		return Decision{Action: Forget, Message: "not holding the operation lock of cluster " + cluster}
	}
	if req.Ended {
		// The lock goes with the restore's end, whenever the request
		// itself goes (the function's turn, then the finalizer's).
		if ours {
			return Decision{Action: Finish, Message: "the restore ended: released the operation lock of cluster " + cluster}
		}
		return Decision{Action: Retire, Message: "the restore ended without holding the operation lock of cluster " + cluster}
	}
	holding := req.Held || req.Taken
	switch {
	case lock.Free() && holding:
		// Only a writer that does not compare-and-swap clears a lock
		// under its holder (a blind release of its own, stale, lock):
		// take it back before anyone else can.
		return Decision{Action: Acquire, Retake: true, Message: "taking back the operation lock of cluster " + cluster +
			", which another writer cleared while this restore held it"}
	case lock.Free() && req.Ahead != "":
		return Decision{Action: Wait, Message: fmt.Sprintf("queued for the operation lock of cluster %s behind %s", cluster, req.Ahead)}
	case lock.Free():
		return Decision{Action: Acquire, Message: "acquiring the operation lock of cluster " + cluster}
	case ours:
		return Decision{Action: Keep, Message: "holding the operation lock of cluster " + cluster}
	}
	waiting := fmt.Sprintf("Waiting for cluster operation lock held by operation=%s holder=%s", lock.Operation, lock.Holder)
	if req.Held {
		// The lock is ours by status but names another holder: a writer
		// replaced it without compare-and-swap. Say so first; the next
		// decision waits, overrides or takes it back as for any holder.
		return Decision{Action: Wait, Taken: true, Blocked: lock.Operation != schemas.OperationRestore, Message: fmt.Sprintf(
			"operation=%s holder=%s took the operation lock of cluster %s from this restore, which held it, without compare-and-swap; "+
				"the restore waits and takes it back when it is free", lock.Operation, lock.Holder, cluster)}
	}
	switch lock.Operation {
	case OperationBackup, OperationUpgrade:
		if req.Override {
			return Decision{Action: Override, Retake: req.Taken, Message: fmt.Sprintf(
				"overriding the operation lock of cluster %s held by operation=%s holder=%s", cluster, lock.Operation, lock.Holder)}
		}
		return Decision{Action: Wait, Blocked: true, Message: waiting}
	case schemas.OperationRestore:
		// Another restore: queue behind it. The override never clears
		// another restore's lock, because that restore may be mid-write.
		return Decision{Action: Wait, Message: waiting + "; restores of one cluster run one at a time"}
	default:
		// An operation we do not know may be anything: wait, never
		// override.
		return Decision{Action: Wait, Blocked: true, Message: waiting}
	}
}
