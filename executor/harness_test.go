package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// baoServer is a real OpenBao 2.4.0 dev server with Raft storage on
// loopback: initialised, unsealed, kv-v2 at secret/, root token "root".
type baoServer struct {
	t    testing.TB
	Addr string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	hc   *http.Client
}

// freePortPair finds a loopback port p with p+1 also free (the dev listener
// puts its cluster port next to its API port).
func freePortPair(t testing.TB) int { return testbin.FreePorts(t, 1) }

func startBao(t testing.TB) *baoServer { return startBaoSealed(t, "") }

// baoTLS is a TLS listener beside the dev server's plain one, whose
// certificate names no IP address, as openbao-operator configures OpenBao;
// the server then advertises it as its api_addr, so the leader the
// executor finds is that listener. Addr is set when the server runs.
type baoTLS struct {
	CertFile, KeyFile string
	Addr              string
}

// startBaoSealed starts a dev server whose seal is a static key in keyFile
// (32 bytes), so that two clusters can share a seal key; "" keeps dev mode's
// own Shamir seal, a different one per server.
func startBaoSealed(t testing.TB, keyFile string) *baoServer { return startBaoWith(t, keyFile, nil) }

// startBaoWith is startBaoSealed with a TLS listener if tl is set.
func startBaoWith(t testing.TB, keyFile string, tl *baoTLS) *baoServer {
	t.Helper()
	bin := testbin.Path(t, "openbao")
	dir := t.TempDir()
	var cmd *exec.Cmd
	var logBuf *bytes.Buffer
	var addr string
	// A port can be taken between the probe and the bind: try a few.
	for attempt := 0; attempt < 3; attempt++ {
		p := freePortPair(t)
		addr = fmt.Sprintf("http://127.0.0.1:%d", p)
		raftDir := filepath.Join(dir, fmt.Sprintf("raft%d", attempt))
		if err := os.MkdirAll(raftDir, 0o700); err != nil {
			t.Fatal(err)
		}
		apiAddr := addr
		if tl != nil {
			tl.Addr = fmt.Sprintf("https://127.0.0.1:%d", p+2)
			apiAddr = tl.Addr
		}
		hcl := fmt.Sprintf("storage \"raft\" {\n  path = %q\n  node_id = \"node1\"\n  performance_multiplier = 1\n}\napi_addr = %q\ncluster_addr = \"https://127.0.0.1:%d\"\n", raftDir, apiAddr, p+1)
		if tl != nil {
			hcl += fmt.Sprintf("listener \"tcp\" {\n  address = \"127.0.0.1:%d\"\n  tls_cert_file = %q\n  tls_key_file = %q\n}\n", p+2, tl.CertFile, tl.KeyFile)
		}
		if keyFile != "" {
			hcl += fmt.Sprintf("seal \"static\" {\n  current_key_id = \"1\"\n  current_key = \"file://%s\"\n}\n", keyFile)
		}
		conf := filepath.Join(dir, "raft.hcl")
		if err := os.WriteFile(conf, []byte(hcl), 0o600); err != nil {
			t.Fatal(err)
		}
		logBuf = &bytes.Buffer{}
		cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id=root", fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", p), "-dev-no-store-token", "-config="+conf)
		cmd.Stdout, cmd.Stderr = logBuf, logBuf
		cmd.Env = append(os.Environ(), "HOME="+dir, "BAO_ADDR=", "VAULT_ADDR=")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		s := &baoServer{t: t, Addr: addr, cmd: cmd, log: logBuf, hc: &http.Client{Timeout: 10 * time.Second}}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		if s.waitActive(30*time.Second, exited) {
			s.waitKV()
			return s
		}
	}
	t.Fatalf("OpenBao did not become active:\n%s", logBuf.String())
	return nil
}

func (s *baoServer) waitActive(d time.Duration, exited chan struct{}) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := s.hc.Get(s.Addr + "/v1/sys/health")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// waitKV waits until kv-v2 accepts writes (its mount upgrades after start).
func (s *baoServer) waitKV() {
	for range 100 {
		if code, _ := s.req("POST", "/v1/secret/data/_probe", "root", `{"data":{"value":"x"}}`); code == 200 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("kv-v2 never became writable:\n%s", s.log.String())
}

func (s *baoServer) req(method, path, token, body string) (int, []byte) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.Addr+path, rd)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *baoServer) put(key, value string) {
	s.t.Helper()
	if code, b := s.req("POST", "/v1/secret/data/"+key, "root", fmt.Sprintf(`{"data":{"value":%q}}`, value)); code != 200 {
		s.t.Fatalf("put %s: %d %s", key, code, b)
	}
}

// get returns the secret's value, or "<missing>".
func (s *baoServer) get(key string) string {
	s.t.Helper()
	code, b := s.req("GET", "/v1/secret/data/"+key, "root", "")
	if code == 404 {
		return "<missing>"
	}
	var r struct {
		Data struct {
			Data map[string]string `json:"data"`
		} `json:"data"`
	}
	if code != 200 || json.Unmarshal(b, &r) != nil {
		s.t.Fatalf("get %s: %d %s", key, code, b)
	}
	return r.Data.Data["value"]
}

func (s *baoServer) snapshot() []byte {
	s.t.Helper()
	code, b := s.req("GET", "/v1/sys/storage/raft/snapshot", "root", "")
	if code != 200 || len(b) == 0 {
		s.t.Fatalf("snapshot: %d", code)
	}
	return b
}

func (s *baoServer) health() health {
	s.t.Helper()
	_, b := s.req("GET", "/v1/sys/health", "", "")
	var h health
	_ = json.Unmarshal(b, &h)
	return h
}

// token creates a token with a policy of the given HCL.
func (s *baoServer) token(policy string) string {
	s.t.Helper()
	name := fmt.Sprintf("p%d", time.Now().UnixNano())
	j, _ := json.Marshal(map[string]string{"policy": policy})
	if code, b := s.req("PUT", "/v1/sys/policies/acl/"+name, "root", string(j)); code != 204 && code != 200 {
		s.t.Fatalf("policy: %d %s", code, b)
	}
	code, b := s.req("POST", "/v1/auth/token/create", "root", fmt.Sprintf(`{"policies":[%q]}`, name))
	var r struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if code != 200 || json.Unmarshal(b, &r) != nil {
		s.t.Fatalf("token create: %d %s", code, b)
	}
	return r.Auth.ClientToken
}

// s3Store is the fixture's object store: SeaweedFS (internal/s3test), a
// real S3 server that checks signatures, on loopback.
type s3Store struct {
	*s3test.Server
}

func startS3(t testing.TB) *s3Store {
	return &s3Store{s3test.Start(t, "AKIAFAKE", "fake-secret-key", "snaps")}
}

func (s *s3Store) put(t testing.TB, key string, data []byte) { s.Put(t, key, data) }

// fixture is one real OpenBao and one object store, with a snapshot taken
// while secret/foo=v1, uploaded, and then the data changed (foo=v2, bar=new).
type fixture struct {
	bao   *baoServer
	s3    *s3Store
	snap  []byte
	key   string
	paths Paths
	env   map[string]string
	log   *bytes.Buffer
}

func newFixture(t *testing.T) *fixture { return newFixtureSealed(t, "") }

func newFixtureSealed(t *testing.T, keyFile string) *fixture { return newFixtureWith(t, keyFile, nil) }

// newFixtureWith is newFixtureSealed whose OpenBao also listens with TLS if
// tl is set; the executor is pointed at that listener.
func newFixtureWith(t *testing.T, keyFile string, tl *baoTLS) *fixture {
	t.Helper()
	b := startBaoWith(t, keyFile, tl)
	s := startS3(t)
	b.put("foo", "v1")
	snap := b.snapshot()
	key := "clusters/prod/2026-11-26-120000.snap"
	s.put(t, key, snap)
	s.put(t, "clusters/prod/2026-11-25-120000.snap", snap)
	b.put("foo", "v2")
	b.put("bar", "new")
	f := &fixture{bao: b, s3: s, snap: snap, key: key, log: &bytes.Buffer{}}
	f.paths = testPaths(t, map[string]string{"token": "root\n", "accessKeyId": "AKIAFAKE", "secretAccessKey": "fake-secret-key"})
	f.env = map[string]string{
		schemas.EnvExecutorMode:  "restore",
		schemas.EnvProvider:      "s3",
		schemas.EnvEndpoint:      s.URL,
		schemas.EnvBucket:        s.Bucket,
		schemas.EnvRestoreKey:    key,
		schemas.EnvUsePathStyle:  "true",
		schemas.EnvOpenBaoAddr:   b.Addr,
		schemas.EnvAuthMethod:    "token",
		schemas.EnvPodName:       "restore-pod",
		schemas.EnvRestoreRegion: "us-east-1",
	}
	if tl != nil {
		f.env[schemas.EnvOpenBaoAddr] = tl.Addr
	}
	return f
}

func (f *fixture) setToken(t *testing.T, tok string) {
	if err := os.Chmod(f.paths.TokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.paths.TokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

// run runs the executor and returns its exit code and termination message.
func (f *fixture) run(t *testing.T, o Options) (int, schemas.TerminationMessage) {
	t.Helper()
	o.Paths = f.paths
	o.Log = f.log
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = 50 * time.Millisecond
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	code := Main(ctx, envOf(f.env), o)
	var tm schemas.TerminationMessage
	b, err := os.ReadFile(f.paths.Termination)
	if err != nil || json.Unmarshal(b, &tm) != nil {
		t.Fatalf("termination message: %v %s", err, b)
	}
	if tm.ExitCode != code {
		t.Fatalf("termination exit %d != %d", tm.ExitCode, code)
	}
	if err := statesSubmission(tm); err != nil {
		t.Fatal(err)
	}
	t.Logf("exit %d: %s", code, tm.Message)
	return code, tm
}

// unchanged asserts that the data written after the snapshot is intact,
// and waits out a possible restore pause first so a late apply would show.
func (f *fixture) unchanged(t *testing.T) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	f.bao.waitActive(15*time.Second, nil)
	if foo, bar := f.bao.get("foo"), f.bao.get("bar"); foo != "v2" || bar != "new" {
		t.Fatalf("the cluster changed: foo=%s bar=%s\nexecutor log:\n%s", foo, bar, f.log.String())
	}
}

func (f *fixture) restored(t *testing.T) {
	t.Helper()
	if foo, bar := f.bao.get("foo"), f.bao.get("bar"); foo != "v1" || bar != "<missing>" {
		t.Fatalf("not restored: foo=%s bar=%s\nexecutor log:\n%s", foo, bar, f.log.String())
	}
}

// noSecrets asserts the log and the termination message show no secret.
func (f *fixture) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	tm, _ := os.ReadFile(f.paths.Termination)
	for _, s := range append(secrets, "fake-secret-key") {
		if strings.Contains(f.log.String(), s) || strings.Contains(string(tm), s) {
			t.Fatalf("secret %q leaked:\n%s\n%s", s, f.log.String(), tm)
		}
	}
}
