package executor

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// A drill's read check against a real OpenBao: paths that hold data pass;
// a path the data lacks, one the token may not read, and a missing mode
// setting each fail with the path named, and nothing is restored.
func TestReadCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t) // foo and bar are written
	f.env[schemas.EnvExecutorMode] = schemas.ModeReadCheck
	delete(f.env, schemas.EnvRestoreKey)
	if code, tm := f.run(t, Options{}); code != schemas.ExitConfig || !strings.Contains(tm.Message, schemas.EnvReadPaths) {
		t.Fatalf("no paths: exit %d: %s", code, tm.Message)
	}

	f.env[schemas.EnvReadPaths] = "secret/data/foo,/secret/data/bar/"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitOK || len(tm.ReadCheck) != 2 || !tm.ReadCheck[0].OK || !tm.ReadCheck[1].OK || tm.Submitted {
		t.Fatalf("both present: exit %d: %+v\n%s", code, tm, f.log)
	}

	f.env[schemas.EnvReadPaths] = "secret/data/foo,secret/data/app/missing"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || !strings.Contains(tm.Message, "secret/data/app/missing (not found") || tm.ReadCheck[1].OK {
		t.Fatalf("a missing path: exit %d: %s", code, tm.Message)
	}

	// A token limited to foo: bar is refused, and said so.
	code2, b := f.bao.req("POST", "/v1/sys/policies/acl/foo-only", "root", `{"policy":"path \"secret/data/foo\" { capabilities = [\"read\"] }"}`)
	if code2 != 204 {
		t.Fatalf("policy: %d %s", code2, b)
	}
	code2, b = f.bao.req("POST", "/v1/auth/token/create", "root", `{"policies":["foo-only"],"no_default_policy":true}`)
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if code2 != 200 || json.Unmarshal(b, &tok) != nil {
		t.Fatalf("token: %d %s", code2, b)
	}
	f.setToken(t, tok.Auth.ClientToken)
	f.env[schemas.EnvReadPaths] = "secret/data/foo,secret/data/bar"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || !strings.Contains(tm.Message, "secret/data/bar (permission denied") || !tm.ReadCheck[0].OK {
		t.Fatalf("a refused path: exit %d: %s", code, tm.Message)
	}
	f.noSecrets(t, tok.Auth.ClientToken)
}
