package executor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// The notes every exit message ends with (submissionNote), by what they say.
var (
	noteNothing  = "Nothing was submitted"
	noteRecorded = "This run submitted nothing; the recorded submission's outcome is unconfirmed"
	noteApplied  = "The snapshot was submitted and applied"
	noteUnknown  = "The snapshot was submitted; its outcome is unconfirmed"
	noteRefused  = "The snapshot was submitted and OpenBao refused it: nothing was applied"
)

// statesSubmission checks that a termination message says whether the
// snapshot was submitted, consistently with its submitted flag: every
// run through fixture.run checks it too, against the real servers.
func statesSubmission(tm schemas.TerminationMessage) error {
	want := []string{noteNothing, noteRecorded}
	if tm.Submitted {
		want = []string{noteApplied, noteUnknown, noteRefused}
	}
	for _, n := range want {
		if strings.HasSuffix(tm.Message, n) {
			return nil
		}
	}
	return fmt.Errorf("exit %d, submitted=%v: the message does not end with one of %q: %s", tm.ExitCode, tm.Submitted, want, tm.Message)
}

// fakeStore serves one object over plain HTTP, which the S3 client reads
// path-style; unit tests only, beside the real stores of the other tests.
type fakeStore struct {
	data   []byte
	status int          // answer every request with this status instead (404, 403)
	cut    atomic.Int32 // cut the body of this many next GETs short
	gets   atomic.Int32
}

func (s *fakeStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	w.Header().Set("ETag", `"e"`)
	if r.Method == http.MethodGet {
		s.gets.Add(1)
		if s.cut.Add(-1) >= 0 {
			// The whole length announced, half the bytes sent: the server
			// then closes the connection, as a store that dies would.
			w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
			_, _ = w.Write(s.data[:len(s.data)/2])
			return
		}
	}
	http.ServeContent(w, r, "", time.Unix(0, 0), bytes.NewReader(s.data))
}

// fakeBao stands in for OpenBao's few endpoints the executor calls, with the
// restore's answer chosen by the test; unit tests only.
type fakeBao struct {
	health  string // sys/health's body; "" for an active node with cluster_id c1
	after   string // sys/health's body once a restore was accepted; "" for health's
	caps    string // the capabilities granted; "" for update
	restore func(w http.ResponseWriter, r *http.Request)
	posted  atomic.Bool
}

func (b *fakeBao) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/sys/health":
		h := cmp(b.health, `{"initialized":true,"cluster_id":"c1","version":"2.4.0"}`)
		if b.posted.Load() && b.after != "" {
			h = b.after
		}
		if strings.Contains(h, `"standby":true`) {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		_, _ = w.Write([]byte(h))
	case "/v1/sys/leader":
		_, _ = w.Write([]byte(`{"leader_address":""}`))
	case "/v1/sys/capabilities-self":
		_, _ = fmt.Fprintf(w, `{"capabilities":[%q]}`, cmp(b.caps, "update"))
	default:
		b.restore(w, r)
		b.posted.Store(true)
	}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Restores answered as OpenBao does once it has the whole body.
func acceptRestore(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
}

func refuseRestore(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"errors":["failed to read snapshot file: unexpected EOF"]}`))
}

// stallRestore takes the whole body and never answers.
func stallRestore(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// fakeRun runs Main against a fake store and a fake OpenBao.
func fakeRun(t *testing.T, store *fakeStore, bao *fakeBao, rec *MemoryRecorder, edit func(env map[string]string, p Paths)) (int, schemas.TerminationMessage, string) {
	t.Helper()
	ss := httptest.NewServer(store)
	t.Cleanup(ss.Close)
	bs := httptest.NewServer(bao)
	t.Cleanup(bs.Close)
	d := t.TempDir()
	p := Paths{TokenFile: filepath.Join(d, "token"), CredentialsDir: d, Termination: filepath.Join(d, "term"), JWTFile: filepath.Join(d, "jwt"), KubeDir: d}
	if err := os.WriteFile(p.TokenFile, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{schemas.EnvEndpoint: ss.URL, schemas.EnvBucket: "b", schemas.EnvRestoreKey: "k",
		schemas.EnvUsePathStyle: "true", schemas.EnvOpenBaoAddr: bs.URL}
	if edit != nil {
		edit(env, p)
	}
	var log strings.Builder
	code := Main(t.Context(), envOf(env), Options{Paths: p, Log: &log, Recorder: rec, HoldBack: 4096, Retries: 2,
		RetryDelay: 10 * time.Millisecond, SettleDelay: 10 * time.Millisecond, AfterTimeout: 2 * time.Second})
	var tm schemas.TerminationMessage
	b, err := os.ReadFile(p.Termination)
	if err != nil || json.Unmarshal(b, &tm) != nil {
		t.Fatalf("termination message: %v %s", err, b)
	}
	return code, tm, log.String()
}

// Every exit path's message says whether anything was submitted, in the
// termination message and in the log. The same paths run against real
// servers elsewhere (restore_test.go, shortread_test.go, answer_test.go…),
// where fixture.run checks the same; here each path is one fast case.
func TestExitMessagesStateSubmission(t *testing.T) {
	t.Parallel()
	data := snaptest.Bytes(randBytes(t, 64<<10)) // more than the hold-back
	cases := []struct {
		name      string
		store     *fakeStore
		bao       *fakeBao
		recorded  bool // a submission is recorded before the run
		edit      func(map[string]string, Paths)
		code      int
		note      string
		submitted bool
	}{
		{name: "configuration", edit: func(_ map[string]string, p Paths) { _ = os.Remove(p.TokenFile) },
			code: schemas.ExitConfig, note: noteNothing},
		{name: "token may not restore", bao: &fakeBao{caps: "read"},
			code: schemas.ExitAuth, note: noteNothing},
		{name: "no leader", bao: &fakeBao{health: `{"initialized":true,"standby":true}`},
			code: schemas.ExitLeader, note: noteNothing},
		{name: "snapshot missing", store: &fakeStore{status: http.StatusNotFound},
			code: schemas.ExitSnapshot, note: noteNothing},
		{name: "OpenBao refuses the whole snapshot", bao: &fakeBao{restore: refuseRestore},
			code: schemas.ExitSnapshot, note: noteRefused, submitted: true},
		{name: "store refuses access", store: &fakeStore{status: http.StatusForbidden},
			code: schemas.ExitStorage, note: noteNothing},
		{name: "digest pin", edit: func(e map[string]string, _ Paths) { e[schemas.EnvExpectedDigest] = "sha256:" + strings.Repeat("0", 64) },
			code: schemas.ExitVerification, note: noteNothing},
		{name: "identity changed after the restore", bao: &fakeBao{after: `{"initialized":true,"cluster_id":"c2"}`},
			edit: func(e map[string]string, _ Paths) { e[schemas.EnvExpectedClusterID] = "c1" },
			code: schemas.ExitVerification, note: noteApplied, submitted: true},
		{name: "body cut short every time", store: func() *fakeStore { s := &fakeStore{}; s.cut.Store(100); return s }(),
			code: schemas.ExitTransient, note: noteNothing},
		{name: "already recorded", recorded: true,
			code: schemas.ExitUnconfirmed, note: noteRecorded},
		{name: "no answer", bao: &fakeBao{restore: stallRestore},
			edit: func(e map[string]string, _ Paths) { e[schemas.EnvAnswerTimeout] = "1s" },
			code: schemas.ExitUnconfirmed, note: noteUnknown, submitted: true},
		{name: "restored", code: schemas.ExitOK, note: noteApplied, submitted: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := tc.store
			if store == nil {
				store = &fakeStore{}
			}
			store.data = data
			bao := tc.bao
			if bao == nil {
				bao = &fakeBao{}
			}
			if bao.restore == nil {
				bao.restore = acceptRestore
			}
			rec := &MemoryRecorder{}
			if tc.recorded {
				rec.Rec = &Submission{Pod: "earlier"}
			}
			code, tm, log := fakeRun(t, store, bao, rec, tc.edit)
			t.Logf("exit %d: %s", code, tm.Message)
			if code != tc.code || tm.ExitCode != code || tm.Submitted != tc.submitted || !strings.HasSuffix(tm.Message, tc.note) {
				t.Fatalf("exit %d (want %d), submitted %v (want %v), message %q, want it to end with %q\n%s", code, tc.code, tm.Submitted, tc.submitted, tm.Message, tc.note, log)
			}
			if err := statesSubmission(tm); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log, tc.note) {
				t.Fatalf("the log does not say %q:\n%s", tc.note, log)
			}
			if !tc.recorded && (rec.Rec != nil) != tc.submitted {
				t.Fatalf("record %+v, submitted %v", rec.Rec, tc.submitted)
			}
		})
	}
}

// A termination message too long for Kubernetes is cut in the middle, so
// that it still says whether anything was submitted.
func TestTerminationKeepsSubmissionNote(t *testing.T) {
	p := filepath.Join(t.TempDir(), "term")
	tm := &schemas.TerminationMessage{ExitCode: schemas.ExitSnapshot, Message: withSubmission("snapshot s3://b/k not found; nearest keys: "+strings.Repeat("clusters/prod/ä-key, ", 400), noteNothing)}
	if err := writeTermination(p, tm); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var got schemas.TerminationMessage
	if len(b) > 4000 || json.Unmarshal(b, &got) != nil || !strings.HasPrefix(got.Message, "snapshot s3://b/k not found") || statesSubmission(got) != nil {
		t.Fatalf("%d bytes: %s", len(b), b)
	}
}
