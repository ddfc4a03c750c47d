package restart

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/internal/testca"
)

// The health gates verify an https answer with the CA and server name of
// the executor's submission record, while they connect to the pod's IP,
// which the certificate never names (as openbao-operator issues it). The
// server here is Go's TLS stack answering as OpenBao's sys/health does;
// executor's TestRestoreOverTLSByServerName verifies a real OpenBao's
// certificate of the same shape.
func TestProbeVerifiesTLS(t *testing.T) {
	testbin.SkipShort(t, "a TLS server")
	ca := testca.New(t)
	srv := ca.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"initialized":true,"sealed":false,"standby":true}`))
	}), "openbao-cluster-prod.local", "*.prod.vault.svc", "*.vault.svc")
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, err := NewProber("{{.Scheme}}://{{.IP}}:"+port, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	other := testca.New(t)

	for _, c := range []struct {
		name string
		tls  *TLS
		err  string // "" for a verified answer
	}{
		{name: "the record's CA and name", tls: &TLS{CA: ca.PEM, ServerName: "prod.vault.svc"}},
		{name: "a per-pod name", tls: &TLS{CA: ca.PEM, ServerName: "prod-1.prod.vault.svc"}},
		{name: "a name the certificate lacks", tls: &TLS{CA: ca.PEM, ServerName: "prod.other.svc"}, err: `does not verify under "prod.other.svc"`},
		{name: "another CA", tls: &TLS{CA: other.PEM, ServerName: "prod.vault.svc"}, err: "does not verify"},
		{name: "a CA that is not PEM", tls: &TLS{CA: []byte("nope"), ServerName: "prod.vault.svc"}, err: "holds no PEM certificate"},
		{name: "no record: not verified, as before", tls: nil},
	} {
		h := p.Probe(t.Context(), Target{Scheme: "https", IP: host, Name: "prod-1", Namespace: "vault", Cluster: "prod", TLS: c.tls})
		switch {
		case c.err == "" && (h.Err != "" || !h.Initialized || !h.Standby):
			t.Errorf("%s: %+v, want a verified standby", c.name, h)
		case c.err != "" && !strings.Contains(h.Err, c.err):
			t.Errorf("%s: %+v, want an error with %q", c.name, h, c.err)
		}
	}
}
