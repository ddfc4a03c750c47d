package phase

import (
	"fmt"
	"strings"

	"github.com/openbao-restore/openbao-restore/schemas"
)

func restoredMessage(s Status) string {
	if s.SnapshotKey == "" {
		return "the restore Job succeeded"
	}
	return fmt.Sprintf("restored snapshot %s (%d bytes)", s.SnapshotKey, s.SnapshotSize)
}

// ExitMeaning explains an executor exit code (docs/architecture.md).
func ExitMeaning(code int32) string {
	switch code {
	case schemas.ExitOK:
		return "restored"
	case schemas.ExitConfig:
		return "configuration: a missing or invalid variable or file"
	case schemas.ExitAuth:
		return "authentication failed, or the token may not use the restore endpoint"
	case schemas.ExitLeader:
		return "no OpenBao leader found"
	case schemas.ExitSnapshot:
		return "the snapshot is missing, empty, over 8 GiB, or OpenBao refused it"
	case schemas.ExitStorage:
		return "the object store refused access"
	case schemas.ExitVerification:
		return "verification failed: size, digest or cluster pins do not match"
	case schemas.ExitTransient:
		return "transient failures (network, 5xx, timeouts) exhausted the retries"
	case schemas.ExitUnconfirmed:
		return "submitted, outcome unconfirmed"
	}
	return "not an executor exit code"
}

func failedMessage(j *Job) string {
	if len(j.Pods) == 0 {
		return fmt.Sprintf("the restore Job failed (%s: %s) and no pod's exit could be read; the lock request holds no submission record, so nothing was submitted to OpenBao; the lock is released",
			j.FailedReason, j.FailedMessage)
	}
	p := j.Pods[len(j.Pods)-1]
	detail := p.Raw
	if p.Termination != nil {
		detail = p.Termination.Message
	}
	msg := fmt.Sprintf("the restore Job failed: exit code %d (%s)", p.ExitCode, ExitMeaning(p.ExitCode))
	if strings.Contains(strings.ToLower(detail), "nothing was submitted") {
		// The executor's own message already says so.
		return msg + ": " + strings.TrimRight(detail, ". ") + "; the lock is released"
	}
	if detail != "" {
		msg += ": " + detail
	}
	return msg + "; nothing was submitted to OpenBao; the lock is released"
}

func refusedMessage(p *Pod) string {
	return fmt.Sprintf("the restore Job failed: OpenBao received the whole snapshot and refused it (exit code %d, %s): %s; "+
		"OpenBao applies a snapshot only after it has accepted it, so the cluster is unchanged; the lock is released",
		p.ExitCode, ExitMeaning(p.ExitCode), p.Termination.Message)
}

func unknownMessage(f Facts, why string) string {
	return fmt.Sprintf("the restore Job failed after the snapshot may have reached OpenBao (%s); whether it was applied is not confirmed, "+
		"so the operation lock stays held and nothing is retried. Check the cluster's data, then %s", why, schemas.AckHint(f.UID, "if the restore took effect"))
}

func invalidMessage(f Facts) string {
	if len(f.Violations) == 0 {
		return "the spec is invalid: " + f.FunctionInvalid
	}
	ms := make([]string, len(f.Violations))
	for i, v := range f.Violations {
		ms[i] = v.Message
	}
	return fmt.Sprintf("the spec is invalid (%d problem(s)); nothing was locked or run: %s", len(ms), strings.Join(ms, "; "))
}

// sealedMessage is the Unknown message when the executor found OpenBao
// sealed after the restore.
func sealedMessage(uid string) string {
	return "the snapshot was restored, but OpenBao sealed itself afterwards, as it does after a forced restore of a snapshot from a cluster with another seal key; " +
		"the operation lock stays held. Unseal every pod with the source cluster's unseal or recovery keys (bao operator unseal), then " +
		schemas.AckHint(uid, "to restart the pods behind the health gates")
}
