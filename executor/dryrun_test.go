package executor

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// postCounter forwards to OpenBao at addr and counts the restore POSTs.
func postCounter(t *testing.T, addr string) (string, *atomic.Int64) {
	target, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var posts atomic.Int64
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/sys/storage/raft/snapshot") {
			posts.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(px.Close)
	return px.URL, &posts
}

// checks is the report's names and verdicts, as "name:ok" or "name:FAILED".
func checks(tm schemas.TerminationMessage) string {
	var out []string
	for _, c := range tm.Checks {
		v := "ok"
		if !c.Passed {
			v = "FAILED"
		}
		out = append(out, c.Name+":"+v)
	}
	return strings.Join(out, " ")
}

// dryFixture is a fixture for a dry run against SeaweedFS (real S3),
// whose OpenBao is behind a proxy that counts the restore requests.
func dryFixture(t *testing.T) (*fixture, *s3test.Server, *atomic.Int64) {
	f, srv := safetyFixture(t)
	delete(f.env, schemas.EnvSafetySnapshot)
	px, posts := postCounter(t, f.bao.Addr)
	f.env[schemas.EnvOpenBaoAddr] = px
	f.env[schemas.EnvDryRun] = "true"
	return f, srv, posts
}

// A dry run of a good snapshot, with every pin, against a real OpenBao
// and a real S3 (SeaweedFS): every check passes and is reported, the archive's metadata with
// it, and OpenBao receives no restore request; the data is unchanged and
// nothing is recorded. With force, the capability checked is
// snapshot-force's.
func TestDryRun(t *testing.T) {
	t.Parallel()
	f, _, posts := dryFixture(t)
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	f.env[schemas.EnvExpectedClusterID] = f.bao.health().ClusterID
	f.env[schemas.EnvExpectedVersion] = "2.4.0"
	rec := &MemoryRecorder{}
	code, tm := f.run(t, Options{Recorder: rec, HoldBack: 64})
	const all = "configuration:ok object:ok leader:ok auth:ok capability:ok clusterPin:ok snapshot:ok"
	if code != schemas.ExitOK || !tm.DryRun || tm.Submitted || checks(tm) != all {
		t.Fatalf("exit %d, dry run %v, submitted %v, checks %s: %s\n%s", code, tm.DryRun, tm.Submitted, checks(tm), tm.Message, f.log)
	}
	if !strings.HasPrefix(tm.Message, "dry run: every check passed; a restore would send "+f.key) || !strings.HasSuffix(tm.Message, noteNothing) {
		t.Fatalf("message %q", tm.Message)
	}
	if tm.Archive == nil || tm.Archive.StateSize == 0 || tm.SHA256 != strings.TrimPrefix(digestOf(f.snap), "sha256:") || tm.SnapshotVersion == "" {
		t.Fatalf("report %+v", tm)
	}
	if !strings.Contains(tm.Checks[5].Message, "cluster_id "+f.bao.health().ClusterID) || !strings.Contains(tm.Checks[4].Message, "sys/storage/raft/snapshot") {
		t.Fatalf("checks %+v", tm.Checks)
	}
	f.env[schemas.EnvRestoreForce] = "true"
	if code, tm = f.run(t, Options{Recorder: rec}); code != schemas.ExitOK || !strings.Contains(tm.Checks[4].Message, "snapshot-force") {
		t.Fatalf("force: exit %d, checks %+v", code, tm.Checks)
	}
	// A safety snapshot's read capability is checked too; none is taken.
	f.env[schemas.EnvSafetySnapshot] = schemas.SafetyRequired
	if code, tm = f.run(t, Options{Recorder: rec}); code != schemas.ExitOK || !strings.Contains(tm.Checks[4].Message, "read sys/storage/raft/snapshot (the safety snapshot)") || tm.Safety != nil {
		t.Fatalf("safety: exit %d, checks %+v, safety %+v", code, tm.Checks, tm.Safety)
	}
	if n := posts.Load(); n != 0 || rec.Rec != nil {
		t.Fatalf("%d restore requests reached OpenBao, record %+v", n, rec.Rec)
	}
	f.unchanged(t)
	f.noSecrets(t, "root")
}

// A dry run that fails names the check: a damaged archive (the member),
// a token without the capability (the path), a cluster pin; nothing is
// sent and the data is unchanged.
func TestDryRunFails(t *testing.T) {
	t.Parallel()
	f, srv, posts := dryFixture(t)
	srv.Put(t, "damaged/member.snap", damagedState(t, f.snap))
	good := f.env[schemas.EnvRestoreKey]

	f.env[schemas.EnvRestoreKey] = "damaged/member.snap"
	code, tm := f.run(t, Options{})
	want := "configuration:ok object:ok leader:ok auth:ok capability:ok clusterPin:ok snapshot:FAILED"
	if code != schemas.ExitVerification || checks(tm) != want ||
		!strings.HasPrefix(tm.Message, "dry run: the check snapshot failed: the snapshot archive is not sound: the SHA-256 of its member state.bin") {
		t.Fatalf("damaged: exit %d, checks %s: %s", code, checks(tm), tm.Message)
	}

	f.env[schemas.EnvRestoreKey] = good
	f.setToken(t, f.bao.token(`path "secret/*" { capabilities = ["read"] }`))
	code, tm = f.run(t, Options{})
	want = "configuration:ok object:ok leader:ok auth:ok capability:FAILED"
	if code != schemas.ExitAuth || checks(tm) != want || !strings.Contains(tm.Message, "dry run: the check capability failed") ||
		!strings.Contains(tm.Message, "sys/storage/raft/snapshot") {
		t.Fatalf("capability: exit %d, checks %s: %s", code, checks(tm), tm.Message)
	}

	f.setToken(t, "root")
	f.env[schemas.EnvExpectedVersion] = "2.3.0"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitVerification || !strings.HasSuffix(checks(tm), "clusterPin:FAILED") {
		t.Fatalf("pin: exit %d, checks %s: %s", code, checks(tm), tm.Message)
	}
	if n := posts.Load(); n != 0 {
		t.Fatalf("%d restore requests reached OpenBao", n)
	}
	f.unchanged(t)
}
