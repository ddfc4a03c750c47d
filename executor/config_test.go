package executor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// testPaths writes the mounted files into a temporary directory.
func testPaths(t *testing.T, files map[string]string) Paths {
	t.Helper()
	d := t.TempDir()
	p := Paths{
		TokenFile:      filepath.Join(d, "restore", "token"),
		JWTFile:        filepath.Join(d, "tokens", "openbao-token"),
		CredentialsDir: filepath.Join(d, "credentials"),
		Termination:    filepath.Join(d, "termination-log"),
		KubeDir:        filepath.Join(d, "sa"),
	}
	for _, dir := range []string{filepath.Dir(p.TokenFile), filepath.Dir(p.JWTFile), p.CredentialsDir, p.KubeDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range files {
		var f string
		switch name {
		case "token":
			f = p.TokenFile
		case "jwt":
			f = p.JWTFile
		default:
			f = filepath.Join(p.CredentialsDir, name)
		}
		if err := os.WriteFile(f, []byte(v), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func baseEnv() map[string]string {
	return map[string]string{
		schemas.EnvExecutorMode:  "restore",
		schemas.EnvProvider:      "s3",
		schemas.EnvBucket:        "snaps",
		schemas.EnvRestoreKey:    "clusters/prod/a.snap",
		schemas.EnvOpenBaoAddr:   "http://127.0.0.1:8200",
		schemas.EnvEndpoint:      "http://127.0.0.1:9000",
		schemas.EnvUsePathStyle:  "true",
		schemas.EnvRestoreRegion: "eu-west-1",
	}
}

func TestLoadConfigOK(t *testing.T) {
	p := testPaths(t, map[string]string{"token": "s.supersecret\n", "accessKeyId": "AKIDSECRET", "secretAccessKey": "SKSECRET\n", "sessionToken": "STSECRET"})
	env := baseEnv()
	env[schemas.EnvRestoreForce] = "true"
	env[schemas.EnvExpectedDigest] = "sha256:" + strings.Repeat("AB", 32)
	env[schemas.EnvExpectedSize] = "1234"
	env[schemas.EnvRegion] = "us-west-2"
	c, err := LoadConfig(envOf(env), p)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Force || c.RestoreEndpoint() != "snapshot-force" || c.Region != "eu-west-1" || !c.UsePathStyle || c.ExpectedSize != 1234 ||
		c.ExpectedDigest != strings.Repeat("ab", 32) || c.Token.reveal() != "s.supersecret" || c.Creds.SecretAccessKey.reveal() != "SKSECRET" || c.AuthMethod != "token" {
		t.Fatalf("unexpected config %+v", c)
	}
	// Nothing secret shows in any rendering of the config.
	j, _ := json.Marshal(c)
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", *c), fmt.Sprintf("%#v", *c), string(j)} {
		for _, secret := range []string{"supersecret", "AKIDSECRET", "SKSECRET", "STSECRET"} {
			if strings.Contains(s, secret) {
				t.Fatalf("secret %s leaked in %s", secret, s)
			}
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	p := testPaths(t, map[string]string{"token": "t"})
	env := baseEnv()
	delete(env, schemas.EnvRestoreRegion)
	delete(env, schemas.EnvProvider)
	c, err := LoadConfig(envOf(env), p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Provider != "s3" || c.Region != "us-east-1" || c.Force || c.RestoreEndpoint() != "snapshot" || c.AnswerTimeout != DefaultAnswerTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	for v, want := range map[string]time.Duration{"90s": 90 * time.Second, "10m": 10 * time.Minute, "600": 600 * time.Second} {
		env[schemas.EnvAnswerTimeout] = v
		if c, err := LoadConfig(envOf(env), p); err != nil || c.AnswerTimeout != want {
			t.Fatalf("%s=%s: %v %v", schemas.EnvAnswerTimeout, v, c.AnswerTimeout, err)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(map[string]string)
		files map[string]string
		want  string
	}{
		{"no key", func(e map[string]string) { delete(e, schemas.EnvRestoreKey) }, nil, schemas.EnvRestoreKey},
		{"no bucket", func(e map[string]string) { delete(e, schemas.EnvBucket) }, nil, schemas.EnvBucket},
		{"bad provider", func(e map[string]string) { e[schemas.EnvProvider] = "ftp" }, nil, schemas.EnvProvider},
		{"bad force", func(e map[string]string) { e[schemas.EnvRestoreForce] = "yes please" }, nil, schemas.EnvRestoreForce},
		{"bad digest", func(e map[string]string) { e[schemas.EnvExpectedDigest] = "abc" }, nil, schemas.EnvExpectedDigest},
		{"digest without prefix", func(e map[string]string) { e[schemas.EnvExpectedDigest] = strings.Repeat("ab", 32) }, nil, schemas.EnvExpectedDigest},
		{"size too large", func(e map[string]string) { e[schemas.EnvExpectedSize] = "9999999999999" }, nil, schemas.EnvExpectedSize},
		{"size zero", func(e map[string]string) { e[schemas.EnvExpectedSize] = "0" }, nil, schemas.EnvExpectedSize},
		{"bad mode", func(e map[string]string) { e[schemas.EnvExecutorMode] = "backup" }, nil, schemas.EnvExecutorMode},
		{"bad addr", func(e map[string]string) { e[schemas.EnvOpenBaoAddr] = "ftp://x" }, nil, schemas.EnvOpenBaoAddr},
		{"no addr no replicas", func(e map[string]string) { delete(e, schemas.EnvOpenBaoAddr) }, nil, schemas.EnvClusterReplicas},
		{"bad replicas", func(e map[string]string) { e[schemas.EnvClusterReplicas] = "-1" }, nil, schemas.EnvClusterReplicas},
		{"no token file", func(map[string]string) {}, map[string]string{}, "token file"},
		{"empty token file", func(map[string]string) {}, map[string]string{"token": "\n"}, "is empty"},
		{"jwt without role", func(e map[string]string) { e[schemas.EnvAuthMethod] = "jwt" }, map[string]string{"jwt": "x"}, schemas.EnvJWTAuthRole},
		{"jwt without file", func(e map[string]string) { e[schemas.EnvJWTAuthRole] = "restore" }, map[string]string{}, "JWT file"},
		{"bad auth", func(e map[string]string) { e[schemas.EnvAuthMethod] = "ldap" }, nil, schemas.EnvAuthMethod},
		{"half keys", func(map[string]string) {}, map[string]string{"token": "t", "accessKeyId": "a"}, "secretAccessKey"},
		{"bad caCert", func(map[string]string) {}, map[string]string{"token": "t", "caCert": "not pem"}, "caCert"},
		{"bad TLS CA", func(e map[string]string) { e[schemas.EnvTLSCAPath] = "/nonexistent/ca.crt" }, nil, schemas.EnvTLSCAPath},
		{"role without file", func(e map[string]string) { e[schemas.EnvAWSRoleARN] = "arn:aws:iam::1:role/x" }, nil, schemas.EnvAWSWebIdentityFile},
		{"answer timeout not a duration", func(e map[string]string) { e[schemas.EnvAnswerTimeout] = "soon" }, nil, schemas.EnvAnswerTimeout},
		{"answer timeout zero", func(e map[string]string) { e[schemas.EnvAnswerTimeout] = "0" }, nil, schemas.EnvAnswerTimeout},
		{"answer timeout negative", func(e map[string]string) { e[schemas.EnvAnswerTimeout] = "-5m" }, nil, schemas.EnvAnswerTimeout},
		{"azure without key", func(e map[string]string) { e[schemas.EnvProvider] = "azure" }, nil, "accountKey"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := tc.files
			if files == nil {
				files = map[string]string{"token": "t"}
			}
			env := baseEnv()
			tc.edit(env)
			_, err := LoadConfig(envOf(env), testPaths(t, files))
			if err == nil {
				t.Fatal("no error")
			}
			if ExitCode(err) != schemas.ExitConfig {
				t.Fatalf("exit %d, want %d: %v", ExitCode(err), schemas.ExitConfig, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message %q does not name %q", err, tc.want)
			}
		})
	}
}

func TestMainConfigErrorWritesTermination(t *testing.T) {
	p := testPaths(t, map[string]string{})
	var log strings.Builder
	code := Main(t.Context(), envOf(baseEnv()), Options{Paths: p, Log: &log})
	if code != schemas.ExitConfig {
		t.Fatalf("exit %d", code)
	}
	var tm schemas.TerminationMessage
	b, err := os.ReadFile(p.Termination)
	if err != nil || json.Unmarshal(b, &tm) != nil {
		t.Fatalf("termination message: %v %s", err, b)
	}
	if tm.ExitCode != schemas.ExitConfig || tm.Submitted || !strings.Contains(tm.Message, "token file") {
		t.Fatalf("termination message %+v", tm)
	}
}
