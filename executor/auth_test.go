package executor

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// signJWT makes an RS256 JWT, as a projected ServiceAccount token would be.
func signJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	in := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	h := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// JWT login with a role, against OpenBao's jwt auth method configured with
// a static public key: restores; a role that does not exist fails with
// ExitAuth before anything is sent.
func TestJWTLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	b := f.bao
	steps := []struct{ method, path, body string }{
		{"POST", "/v1/sys/auth/jwt", `{"type":"jwt"}`},
		{"POST", "/v1/auth/jwt/config", fmt.Sprintf(`{"jwt_validation_pubkeys":[%q]}`, pub)},
		{"PUT", "/v1/sys/policies/acl/restore", `{"policy":"path \"sys/storage/raft/snapshot\" { capabilities = [\"update\"] }"}`},
		{"POST", "/v1/auth/jwt/role/restore", `{"role_type":"jwt","bound_audiences":["openbao"],"user_claim":"sub","token_policies":["restore"]}`},
	}
	for _, s := range steps {
		if code, out := b.req(s.method, s.path, "root", s.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, code, out)
		}
	}
	jwt := signJWT(t, key, map[string]any{"sub": "system:serviceaccount:ns:restore", "aud": "openbao", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	if err := os.WriteFile(f.paths.JWTFile, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env[schemas.EnvAuthMethod] = "jwt"
	f.env[schemas.EnvJWTAuthRole] = "nope"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitAuth || !strings.Contains(tm.Message, "nope") {
		t.Fatalf("wrong role: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)

	f.env[schemas.EnvJWTAuthRole] = "restore"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	f.noSecrets(t, jwt, jwt[len(jwt)-40:])
}

// OpenBao dies mid-stream: the tail was never sent, so nothing can have been
// applied; the executor retries (the server stays down) and exits
// ExitTransient with submitted=false.
func TestOpenBaoDownMidStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var killed atomic.Bool
	storeProxy(t, f, nil, func(n int) {
		if n >= 8192 && !killed.Swap(true) {
			_ = f.bao.cmd.Process.Signal(syscall.SIGKILL)
			time.Sleep(300 * time.Millisecond)
		}
	})
	rec := &MemoryRecorder{}
	code, tm := f.run(t, Options{HoldBack: 4096, Recorder: rec})
	t.Log(f.log.String())
	if code != schemas.ExitTransient || tm.Submitted || rec.Rec != nil || !killed.Load() {
		t.Fatalf("exit %d: %+v (record %v)\n%s", code, tm, rec.Rec, f.log)
	}
}
