package executor

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// storeProxy stands between the executor and the fixture's S3 server, as a
// broken proxy or a misbehaving store would: HEAD passes unchanged; the
// body of each GET is passed through change (with a Content-Length to
// match), and written in 1 KiB pieces, calling sent with the bytes written
// so far after each. The fixture points the executor at it.
func storeProxy(t *testing.T, f *fixture, change func([]byte) []byte, sent func(int)) {
	target, err := url.Parse(f.s3.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Query().Has("list-type") {
			rp.ServeHTTP(w, r)
			return
		}
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = target.Scheme, target.Host, ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if resp.StatusCode == http.StatusOK && change != nil {
			body = change(body)
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(resp.StatusCode)
		for n := 0; n < len(body); {
			k := min(1024, len(body)-n)
			if _, err := w.Write(body[n : n+k]); err != nil {
				return
			}
			n += k
			if sent != nil {
				sent(n)
			}
		}
	}))
	t.Cleanup(px.Close)
	f.env[schemas.EnvEndpoint] = px.URL
}
