package executor

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// OpenBao takes the whole snapshot and its answer never comes back: the
// executor stops waiting after RESTORE_ANSWER_TIMEOUT and exits 11, the
// snapshot submitted and its outcome unconfirmed, instead of hanging until
// the Job's deadline. A real OpenBao 2.4.0 cannot be made to stall after
// a whole body, so a proxy on loopback forwards the restore to it and
// swallows the answer (a network that loses it): the restore does take
// effect, which is exactly why the outcome is reported as unknown, never
// as a failure. The fake in exits_test.go covers a server that never
// answers at all.
func TestNoAnswerAfterWholeSnapshot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	target, err := url.Parse(f.bao.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	answered := make(chan int, 1) // OpenBao's status for the restore
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/sys/storage/raft/snapshot") {
			rp.ServeHTTP(w, r)
			return
		}
		// Not cancelled with the executor's request: OpenBao finishes the
		// restore whatever the executor does.
		out := r.Clone(context.WithoutCancel(r.Context()))
		out.URL.Scheme, out.URL.Host, out.RequestURI = target.Scheme, target.Host, ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			answered <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		answered <- resp.StatusCode
		<-r.Context().Done() // the answer is lost on its way back
	}))
	t.Cleanup(px.Close)
	f.env[schemas.EnvOpenBaoAddr] = px.URL
	f.env[schemas.EnvAnswerTimeout] = "3s"
	rec := &MemoryRecorder{}
	start := time.Now()
	code, tm := f.run(t, Options{Recorder: rec})
	if code != schemas.ExitUnconfirmed || !tm.Submitted || rec.Rec == nil ||
		!strings.Contains(tm.Message, "did not answer within 3s ("+schemas.EnvAnswerTimeout+")") || !strings.HasSuffix(tm.Message, noteUnknown) {
		t.Fatalf("exit %d, submitted %v, record %+v: %s\n%s", code, tm.Submitted, rec.Rec, tm.Message, f.log)
	}
	if el := time.Since(start); el > 60*time.Second {
		t.Fatalf("the executor took %s to give up", el)
	}
	select {
	case c := <-answered:
		if c != http.StatusOK && c != http.StatusNoContent {
			t.Fatalf("OpenBao answered the restore with HTTP %d", c)
		}
	case <-time.After(time.Minute):
		t.Fatal("OpenBao never answered the proxy")
	}
	f.bao.waitActive(30*time.Second, nil)
	f.restored(t)
	f.noSecrets(t, "root")
}
