package executor

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// node fakes one OpenBao node's unauthenticated health and leader answers.
func node(t *testing.T, code int, body string, leader *string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sys/health":
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		case "/v1/sys/leader":
			_, _ = fmt.Fprintf(w, `{"leader_address":%q}`, *leader)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestFindLeader(t *testing.T) {
	b := newBao(&Config{})
	var leaderAddr string
	active := node(t, 200, `{"initialized":true,"cluster_id":"c1"}`, &leaderAddr)
	standby := node(t, 429, `{"initialized":true,"standby":true}`, &leaderAddr)
	sealed := node(t, 503, `{"initialized":true,"sealed":true}`, &leaderAddr)
	leaderAddr = active.URL

	// A standby first: its leader is followed and verified.
	got, h, err := b.findLeader(t.Context(), []string{sealed.URL, standby.URL})
	if err != nil || got != active.URL || h.ClusterID != "c1" {
		t.Fatalf("got %s %v %v", got, h, err)
	}
	// Only sealed and standby-without-leader: ExitLeader (retried inside).
	leaderAddr = ""
	if _, _, err := b.findLeader(t.Context(), []string{sealed.URL, standby.URL}); ExitCode(err) != schemas.ExitLeader {
		t.Fatalf("no leader: %v", err)
	}
	// Nothing reachable: transient.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	if _, _, err := b.findLeader(t.Context(), []string{dead.URL}); ExitCode(err) != schemas.ExitTransient {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestCandidates(t *testing.T) {
	// openbao-operator's names: the headless Service is the cluster's
	// name, also while the voters live in a blue/green StatefulSet.
	r := &run{cfg: &Config{ClusterName: "prod", StatefulSet: "prod-b2", Namespace: "vault", Replicas: 2}}
	c := r.candidates(t.Context())
	if len(c) != 2 || c[1] != "https://prod-b2-1.prod.vault.svc:8200" {
		t.Fatalf("%v", c)
	}
	r.cfg.OpenBaoAddr = "http://x:1"
	if c := r.candidates(t.Context()); len(c) != 1 || c[0] != "http://x:1" {
		t.Fatalf("%v", c)
	}
}

// In a cluster the candidates are the pods' IPs, http without TLS; when
// the API cannot list them, the headless service names. (The listing
// itself runs against a real API server in recorder_apiserver_test.go.)
func TestCandidatesFromPods(t *testing.T) {
	pods := `{"items":[{"metadata":{"name":"prod-0","ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"prod","uid":"u","controller":true}]},"status":{"podIP":"10.0.0.7"}}]}`
	fail := false
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail || r.URL.Path != "/api/v1/namespaces/vault/pods" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(pods))
	}))
	t.Cleanup(api.Close)
	r := &run{cfg: &Config{StatefulSet: "prod", Namespace: "vault", Replicas: 1}, opts: Options{Log: io.Discard},
		kube: &KubeAPI{Base: api.URL, Token: func() (string, error) { return "t", nil }, Client: api.Client()}}
	if c := r.candidates(t.Context()); len(c) != 1 || c[0] != "http://10.0.0.7:8200" {
		t.Fatalf("%v", c)
	}
	r.cfg.TLSServerName = "prod.vault.svc"
	if c := r.candidates(t.Context()); len(c) != 1 || c[0] != "https://10.0.0.7:8200" {
		t.Fatalf("with TLS: %v", c)
	}
	fail = true
	if c := r.candidates(t.Context()); len(c) != 1 || c[0] != "https://prod-0.prod.vault.svc:8200" {
		t.Fatalf("fallback: %v", c)
	}
}
