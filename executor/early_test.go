package executor

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A server that refuses the restore before reading the body (as OpenBao does
// for a token it rejects): the refusal is reported, and the submission is
// never recorded, even though the executor was still streaming.
func TestEarlyRefusalIsNeverRecorded(t *testing.T) {
	data := bytes.Repeat([]byte("snapshot"), 4<<20) // 32 MiB
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e"`)
		http.ServeContent(w, r, "", time.Unix(0, 0), bytes.NewReader(data))
	}))
	t.Cleanup(store.Close)
	bao := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sys/health":
			_, _ = w.Write([]byte(`{"initialized":true,"cluster_id":"c"}`))
		case "/v1/sys/capabilities-self":
			_, _ = w.Write([]byte(`{"capabilities":["update"]}`))
		default:
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
		}
	}))
	t.Cleanup(bao.Close)
	d := t.TempDir()
	p := Paths{TokenFile: filepath.Join(d, "token"), CredentialsDir: d, Termination: filepath.Join(d, "term"), JWTFile: filepath.Join(d, "jwt"), KubeDir: d}
	if err := os.WriteFile(p.TokenFile, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{schemas.EnvEndpoint: store.URL, schemas.EnvBucket: "b", schemas.EnvRestoreKey: "k",
		schemas.EnvUsePathStyle: "true", schemas.EnvOpenBaoAddr: bao.URL}
	rec := &MemoryRecorder{}
	var log strings.Builder
	code := Main(t.Context(), envOf(env), Options{Paths: p, Log: &log, Recorder: rec, HoldBack: 64, Retries: 1})
	if code != schemas.ExitAuth || rec.Rec != nil {
		t.Fatalf("exit %d, record %+v\n%s", code, rec.Rec, log.String())
	}
}
