package executor

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// exitError carries the process exit code of a failure, so each step decides
// the code where it knows the cause, and Main only maps errors to codes.
type exitError struct {
	code  int
	msg   string
	err   error
	final bool // never retried: the snapshot's tail was released
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *exitError) Unwrap() error { return e.err }

// fail builds an error with an exit code. Messages must never contain a
// secret: callers pass names, keys and addresses, never values of Secrets.
func fail(code int, err error, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...), err: err}
}

// final marks an error that happened after the snapshot's tail was
// released, so that no retry loop ever sends it again.
func final(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		ee.final = true
		return err
	}
	return &exitError{code: schemas.ExitUnconfirmed, msg: "after the submission", err: err, final: true}
}

func isFinal(err error) bool {
	var ee *exitError
	return errors.As(err, &ee) && ee.final
}

// ExitCode maps an error to the executor's exit code (schemas.Exit*).
// An error without a code is treated as transient only when nothing was
// submitted; callers that may have submitted wrap it with ExitUnconfirmed.
func ExitCode(err error) int {
	if err == nil {
		return schemas.ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return schemas.ExitTransient
}

// ErrAlreadySubmitted is returned by a Recorder when the lock request already
// holds a submission record: this restore was sent before, by this or another
// pod, and must never be sent again.
var ErrAlreadySubmitted = errors.New("a submission is already recorded for this restore")

// transient marks an error worth retrying before the submission: network
// errors, timeouts, 5xx and 429 answers.
func transient(err error, format string, args ...any) error {
	return fail(schemas.ExitTransient, err, format, args...)
}

// scrubURLError drops the URL's query from a url.Error: our URLs never hold
// secrets, but an object store's presigned ones would.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		var ne net.Error
		if errors.As(ue.Err, &ne) && ne.Timeout() {
			return errors.New("timeout")
		}
		return ue.Err
	}
	return err
}
