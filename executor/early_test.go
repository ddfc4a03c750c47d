package executor

import (
	"net/http"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// A server that refuses the restore before reading the body (as OpenBao does
// for a token it rejects): the refusal is reported, and the submission is
// never recorded, even though the executor was still streaming.
func TestEarlyRefusalIsNeverRecorded(t *testing.T) {
	store := &fakeStore{data: snaptest.Bytes(randBytes(t, 32<<20))}
	bao := &fakeBao{restore: func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
	}}
	rec := &MemoryRecorder{}
	code, tm, log := fakeRun(t, store, bao, rec, nil)
	if code != schemas.ExitAuth || rec.Rec != nil || tm.Submitted {
		t.Fatalf("exit %d, record %+v\n%s", code, rec.Rec, log)
	}
}
