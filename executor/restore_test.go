package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/schemas"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// The happy path against a real OpenBao, with every pin set, then a second
// run that finds the submission record and does not send again.
func TestRestoreS3(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	f.env[schemas.EnvExpectedSize] = strconv.Itoa(len(f.snap))
	f.env[schemas.EnvExpectedClusterID] = f.bao.health().ClusterID
	f.env[schemas.EnvExpectedVersion] = "2.4.0"
	rec := &MemoryRecorder{}
	// A small hold-back makes most of the body go out before the checks,
	// as with a real, large snapshot.
	code, tm := f.run(t, Options{Recorder: rec, HoldBack: 4096})
	if code != schemas.ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, tm.Message, f.log)
	}
	f.restored(t)
	if !tm.Submitted || tm.Sealed == nil || *tm.Sealed || tm.SHA256 != strings.TrimPrefix(digestOf(f.snap), "sha256:") ||
		tm.SnapshotSize != int64(len(f.snap)) || tm.Endpoint != "snapshot" || tm.ClusterIDBefore == "" || tm.ClusterIDAfter != tm.ClusterIDBefore {
		t.Fatalf("termination message %+v", tm)
	}
	if rec.Rec == nil || rec.Rec.Digest != digestOf(f.snap) || rec.Rec.Target != f.bao.Addr || rec.Rec.Endpoint != "snapshot" || rec.Rec.Pod != "restore-pod" {
		t.Fatalf("record %+v", rec.Rec)
	}
	f.noSecrets(t, "root")

	// Second run: the record exists, so no POST at all.
	f.bao.put("foo", "v3")
	code, tm = f.run(t, Options{Recorder: rec})
	if code != schemas.ExitUnconfirmed || tm.Submitted {
		t.Fatalf("second run: exit %d %+v", code, tm)
	}
	if got := f.bao.get("foo"); got != "v3" {
		t.Fatalf("second run changed the data: foo=%s", got)
	}
}

func TestRestoreForceDefaultHoldBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvRestoreForce] = "true"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitOK || tm.Endpoint != "snapshot-force" {
		t.Fatalf("exit %d: %+v\n%s", code, tm, f.log)
	}
	f.restored(t)
}

func TestMissingKeyListsNearest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvRestoreKey] = "clusters/prod/2026-11-26-12000.snap"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitSnapshot || !strings.Contains(tm.Message, f.key) || !strings.Contains(tm.Message, "not found") || tm.Submitted {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

func TestDigestPinMismatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedDigest] = "sha256:" + strings.Repeat("0", 64)
	code, tm := f.run(t, Options{HoldBack: 4096, Recorder: &MemoryRecorder{}})
	if code != schemas.ExitVerification || !strings.Contains(tm.Message, "digest mismatch") || tm.Submitted {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

func TestSizePinMismatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedSize] = strconv.Itoa(len(f.snap) + 8)
	code, tm := f.run(t, Options{})
	if code != schemas.ExitVerification || tm.Submitted {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

func TestClusterIDPinMismatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedClusterID] = "00000000-0000-0000-0000-000000000000"
	code, tm := f.run(t, Options{})
	if code != schemas.ExitVerification || !strings.Contains(tm.Message, "cluster_id") || tm.Submitted {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

// A token that may not restore is refused before anything is sent, on
// either endpoint; update on snapshot does not allow snapshot-force.
func TestTokenWithoutCapability(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	weak := f.bao.token(`path "secret/*" { capabilities = ["read"] }`)
	f.setToken(t, weak)
	code, tm := f.run(t, Options{})
	if code != schemas.ExitAuth || !strings.Contains(tm.Message, "may not restore") {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
	f.noSecrets(t, weak)

	snapOnly := f.bao.token(`path "sys/storage/raft/snapshot" { capabilities = ["update"] }`)
	f.setToken(t, snapOnly)
	f.env[schemas.EnvRestoreForce] = "true"
	code, tm = f.run(t, Options{})
	if code != schemas.ExitAuth || !strings.Contains(tm.Message, "snapshot-force") {
		t.Fatalf("force with a snapshot-only token: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)

	f.setToken(t, "not-a-token")
	code, tm = f.run(t, Options{})
	if code != schemas.ExitAuth {
		t.Fatalf("bad token: exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

// A stream cut 8 bytes short in transit (a proxy or store that drops the
// end) is caught by the byte count, and the held-back tail never leaves:
// OpenBao, which would apply a body missing only its last 8 bytes, sees
// one cut far earlier and applies nothing. Both endpoints, both hold-backs.
func TestStreamCutInTransit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cut := func(r io.Reader) io.Reader { return io.LimitReader(r, int64(len(f.snap)-8)) }
	for _, force := range []string{"false", "true"} {
		for _, hold := range []int{64, 4096, 0} {
			f.env[schemas.EnvRestoreForce] = force
			code, tm := f.run(t, Options{WrapBody: cut, HoldBack: hold, Retries: 1})
			if code != schemas.ExitVerification || tm.Submitted {
				t.Fatalf("force=%s hold=%d: exit %d: %s", force, hold, code, tm.Message)
			}
			f.unchanged(t)
		}
	}
}

// A bit flipped in transit: caught by the digest pin, nothing applied.
func TestBitFlipInTransitWithPin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	flip := func(r io.Reader) io.Reader { return &flipper{r: r, at: int64(len(f.snap) - 4)} }
	code, tm := f.run(t, Options{WrapBody: flip, HoldBack: 64})
	if code != schemas.ExitVerification || tm.Submitted {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

type flipper struct {
	r  io.Reader
	n  int64
	at int64
}

func (f *flipper) Read(p []byte) (int, error) {
	k, err := f.r.Read(p)
	for i := 0; i < k; i++ {
		if f.n+int64(i) == f.at {
			p[i] ^= 0x01
		}
	}
	f.n += int64(k)
	return k, err
}

// Damaged snapshots stored as such (no pins): OpenBao refuses them on both
// endpoints and the data stays. The last-8-bytes case is the one OpenBao
// would apply; only a size or digest pin catches it, so it is pinned here.
func TestDamagedSnapshots(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	half := f.snap[:len(f.snap)/2]
	flipped := append([]byte{}, f.snap...)
	flipped[100] ^= 0x40 // inside the gzip stream near the first tar header
	short8 := f.snap[:len(f.snap)-8]
	f.s3.put(t, "damaged/half.snap", half)
	f.s3.put(t, "damaged/flipped.snap", flipped)
	f.s3.put(t, "damaged/short8.snap", short8)
	for _, force := range []string{"false", "true"} {
		f.env[schemas.EnvRestoreForce] = force
		delete(f.env, schemas.EnvExpectedSize)
		for _, k := range []string{"damaged/half.snap", "damaged/flipped.snap"} {
			f.env[schemas.EnvRestoreKey] = k
			code, tm := f.run(t, Options{Recorder: &MemoryRecorder{}})
			if code != schemas.ExitSnapshot || !strings.Contains(tm.Message, "refused") {
				t.Fatalf("%s force=%s: exit %d: %s", k, force, code, tm.Message)
			}
			f.unchanged(t)
		}
		f.env[schemas.EnvRestoreKey] = "damaged/short8.snap"
		f.env[schemas.EnvExpectedSize] = strconv.Itoa(len(f.snap))
		code, tm := f.run(t, Options{})
		if code != schemas.ExitVerification || tm.Submitted {
			t.Fatalf("short8 force=%s: exit %d: %s", force, code, tm.Message)
		}
		f.unchanged(t)
	}
}
