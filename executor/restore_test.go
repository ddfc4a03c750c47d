package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
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
	if a := tm.Archive; a == nil || a.StateSize == 0 || a.Index == 0 || a.ID == "" {
		t.Fatalf("archive %+v", tm.Archive)
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
// end, and ends the body cleanly) is caught by the byte count, and the
// held-back tail never leaves: OpenBao, which would apply a body missing
// only its last 8 bytes, sees one cut far earlier and applies nothing.
// Both endpoints, several hold-backs.
func TestStreamCutInTransit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	storeProxy(t, f, func(b []byte) []byte { return b[:len(b)-8] }, nil)
	for _, force := range []string{"false", "true"} {
		for _, hold := range []int{64, 4096, 0} {
			f.env[schemas.EnvRestoreForce] = force
			code, tm := f.run(t, Options{HoldBack: hold, Retries: 1})
			if code != schemas.ExitVerification || tm.Submitted {
				t.Fatalf("force=%s hold=%d: exit %d: %s", force, hold, code, tm.Message)
			}
			f.unchanged(t)
		}
	}
}

// A bit flipped in transit where only the digest pin can see it (the gzip
// header's modification time, which no checksum covers): caught by the
// pin, nothing applied. A bit flipped in the data is the archive check's
// (TestDamagedSnapshots).
func TestBitFlipInTransitWithPin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.env[schemas.EnvExpectedDigest] = digestOf(f.snap)
	storeProxy(t, f, func(b []byte) []byte {
		b = append([]byte{}, b...)
		b[4] ^= 0x01 // MTIME, the gzip header's bytes 4-7
		return b
	}, nil)
	code, tm := f.run(t, Options{HoldBack: 64})
	if code != schemas.ExitVerification || tm.Submitted || !strings.Contains(tm.Message, "digest mismatch") {
		t.Fatalf("exit %d: %s", code, tm.Message)
	}
	f.unchanged(t)
}

// Damaged snapshots stored as such, with no pin: the executor's archive
// check refuses each while it streams (exit 6, nothing submitted, the
// fault named), on both endpoints, and OpenBao never receives a whole
// body: a proxy in front of it counts what arrived. Before the check,
// OpenBao itself refused the first two and applied the third (a body
// missing only its gzip trailer).
func TestDamagedSnapshots(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	flipped := append([]byte{}, f.snap...)
	flipped[100] ^= 0x40 // inside the gzip stream near the first tar header
	damaged := map[string]struct {
		data []byte
		want string
	}{
		"damaged/half.snap":     {f.snap[:len(f.snap)/2], "it ends early"},
		"damaged/flipped.snap":  {flipped, "damaged"},
		"damaged/short8.snap":   {f.snap[:len(f.snap)-8], "it ends early, at its end"},
		"damaged/member.snap":   {damagedState(t, f.snap), "the SHA-256 of its member state.bin does not match SHA256SUMS"},
		"damaged/not-a-tar.snp": {[]byte("not a snapshot at all, just some text"), "not a gzip stream"},
	}
	px, bodies := countingProxy(t, f.bao.Addr)
	f.env[schemas.EnvOpenBaoAddr] = px
	for key, d := range damaged {
		f.s3.put(t, key, d.data)
	}
	for _, force := range []string{"false", "true"} {
		f.env[schemas.EnvRestoreForce] = force
		for key, d := range damaged {
			f.env[schemas.EnvRestoreKey] = key
			code, tm := f.run(t, Options{Recorder: &MemoryRecorder{}, HoldBack: 64})
			if code != schemas.ExitVerification || tm.Submitted || !strings.Contains(tm.Message, d.want) {
				t.Fatalf("%s force=%s: exit %d: %s", key, force, code, tm.Message)
			}
			if got := bodies(); got >= int64(len(d.data)) {
				t.Fatalf("%s force=%s: OpenBao received %d bytes of a %d-byte body", key, force, got, len(d.data))
			}
			f.unchanged(t)
		}
	}
}

// damagedState is snap with one bit of its state.bin flipped, packed again
// with its original SHA256SUMS: a whole gzip stream and tar, whose data
// does not match its sums.
func damagedState(t *testing.T, snap []byte) []byte {
	ms, err := snaptest.Unpack(snap)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		if ms[i].Name == "state.bin" {
			ms[i].Data = append([]byte{}, ms[i].Data...)
			ms[i].Data[len(ms[i].Data)/2] ^= 0x01
		}
	}
	return snaptest.Pack(ms...)
}

// countingProxy forwards to OpenBao at addr; its function waits for the
// next restore request to end and returns how many body bytes it passed.
func countingProxy(t *testing.T, addr string) (string, func() int64) {
	target, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	done := make(chan int64, 16)
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/sys/storage/raft/snapshot") {
			c := &countingReadCloser{ReadCloser: r.Body}
			r.Body = c
			defer func() { done <- c.n.Load() }()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(px.Close)
	return px.URL, func() int64 {
		select {
		case n := <-done:
			return n
		case <-time.After(30 * time.Second):
			t.Fatal("no restore request reached the proxy")
			return 0
		}
	}
}

type countingReadCloser struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n.Add(int64(k))
	return k, err
}
