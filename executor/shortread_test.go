package executor

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// cutProxy stands on loopback in front of a real S3 server and, for the
// next cuts GETs of one object, sends the whole Content-Length but only
// the first cutAt bytes of the body, then closes the connection cleanly:
// a store or load balancer that dies mid-body.
type cutProxy struct {
	URL   string
	cutAt atomic.Int64
	cuts  atomic.Int32
	gets  atomic.Int32
}

func newCutProxy(t *testing.T, target, objectPath string) *cutProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{}
	rp := &httputil.ReverseProxy{
		// The Host header is part of the request's signature: keep it.
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host },
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method != http.MethodGet || resp.Request.URL.Path != objectPath || resp.StatusCode != http.StatusOK {
				return nil
			}
			p.gets.Add(1)
			if p.cuts.Add(-1) >= 0 {
				// The server closes the connection when the handler ends
				// short of the Content-Length it announced.
				resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
				resp.Body = struct {
					io.Reader
					io.Closer
				}{io.LimitReader(resp.Body, p.cutAt.Load()), resp.Body}
			}
			return nil
		},
	}
	s := httptest.NewServer(rp)
	t.Cleanup(s.Close)
	p.URL = s.URL
	return p
}

func (p *cutProxy) cut(at int64, times int32) {
	p.cutAt.Store(at)
	p.cuts.Store(times)
	p.gets.Store(0)
}

// A body that the object store cuts short (the connection closed cleanly
// before Content-Length bytes) is a network failure: retried by the
// executor, and exit 10 with nothing submitted once the retries are spent;
// never exit 6, which blames the object. The cut surfaces while the POST
// is under way, before the gate: cut at 1000 bytes, some of the body has
// already reached OpenBao, which sees it end far from its end and applies
// nothing; cut 8 bytes before the end, inside the held-back tail, nothing
// past the pass-through part ever left. Either way no record is written,
// so a retry is safe, and a retry that gets the whole body restores once.
// Real OpenBao 2.4.0, real S3 (SeaweedFS) behind the cutting proxy.
func TestStoreCutsBodyShort(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv := s3test.Start(t, "AKIAFAKE", "fake-secret-key", "snaps") // the fixture's mounted credentials
	srv.Put(t, f.key, f.snap)
	const hold = 4096
	if len(f.snap) < 3*hold {
		t.Fatalf("the snapshot has %d bytes, too few to cut before the hold-back of %d", len(f.snap), hold)
	}
	px := newCutProxy(t, srv.URL, "/"+srv.Bucket+"/"+f.key)
	f.env[schemas.EnvEndpoint] = px.URL
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)

	for _, at := range []int64{1000, int64(len(f.snap) - 8)} {
		px.cut(at, 100) // every GET
		rec := &MemoryRecorder{}
		code, tm := f.run(t, Options{Recorder: rec, HoldBack: hold, Retries: 3})
		if code != schemas.ExitTransient || tm.Submitted || rec.Rec != nil || !strings.Contains(tm.Message, "closed the connection") {
			t.Fatalf("cut at %d: exit %d, submitted %v, record %+v: %s\n%s", at, code, tm.Submitted, rec.Rec, tm.Message, f.log)
		}
		if n := px.gets.Load(); n != 3 {
			t.Fatalf("cut at %d: %d GETs, want one per attempt (3)", at, n)
		}
		f.unchanged(t)
	}

	// Cut once, in the tail: the second attempt restores, and records once
	// (a MemoryRecorder refuses a second record, which would be exit 11).
	px.cut(int64(len(f.snap)-8), 1)
	rec := &MemoryRecorder{}
	f.log.Reset()
	code, tm := f.run(t, Options{Recorder: rec, HoldBack: hold, Retries: 3})
	if code != schemas.ExitOK || !tm.Submitted || rec.Rec == nil || px.gets.Load() != 2 || !strings.Contains(f.log.String(), "retrying") {
		t.Fatalf("exit %d, submitted %v, record %+v, %d GETs: %s\n%s", code, tm.Submitted, rec.Rec, px.gets.Load(), tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t, "root")
}
