package executor

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// submissionNote says whether this run submitted the snapshot, and what
// that means. Every exit message ends with it, so that whoever reads a
// failure, in the log, the termination message or the restore's status,
// knows at once whether OpenBao may have changed, without knowing the
// exit codes.
func submissionNote(code int, submitted, recorded bool) string {
	switch {
	case recorded && !submitted:
		// A record found at the start or at the gate: this run sent no
		// tail, but an earlier run (or this pod's own earlier attempt,
		// whose record request seemed to fail) may have.
		return "This run submitted nothing; the recorded submission's outcome is unconfirmed"
	case !submitted:
		return "Nothing was submitted"
	case code == schemas.ExitOK || code == schemas.ExitVerification:
		// Exit 6 after a submission: OpenBao applied it, and the identity
		// check that followed failed.
		return "The snapshot was submitted and applied"
	case code == schemas.ExitUnconfirmed:
		return "The snapshot was submitted; its outcome is unconfirmed"
	default:
		return "The snapshot was submitted and OpenBao refused it: nothing was applied"
	}
}

// withSubmission appends the submission note to a message as a sentence.
func withSubmission(msg, note string) string {
	if msg = strings.TrimRight(msg, ". "); msg == "" {
		return note
	}
	return msg + ". " + note
}

func writeTermination(path string, tm *schemas.TerminationMessage) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(tm)
	if err != nil {
		return err
	}
	// Kubernetes reads at most 4096 bytes; keep the JSON valid by trimming
	// the message, not the document. The cut is in the middle: the start
	// names the cause, the end says whether anything was submitted.
	const keepEnd = 200
	for len(b) > 4000 && len(tm.Message) > keepEnd+100 {
		m := tm.Message
		head := max(len(m)-keepEnd-(len(b)-3900), 100)
		cut := strings.ToValidUTF8(m[:head], "") + "…" + strings.ToValidUTF8(m[len(m)-keepEnd:], "")
		if len(cut) >= len(m) {
			break // nothing more to take from the message
		}
		tm.Message = cut
		if b, err = json.Marshal(tm); err != nil {
			return err
		}
	}
	return os.WriteFile(path, b, 0o644)
}
