package executor

import (
	"bufio"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// Benchmarks of the stream path alone: a file-backed S3-style store and an
// OpenBao-shaped sink that reads the body and answers 204, both on loopback
// in this process, so the figures show the executor's own cost (hashing,
// hold-back, HTTP) against a raw GET-to-POST copy of the same bytes.
//
//	go test ./executor -run '^$' -bench 'RawCopy|ExecutorS3' -benchtime 3x
//
// EXECUTOR_BENCH_SIZE sets the object's size in bytes (default 1 GiB).

func benchSize() int64 {
	if v := os.Getenv("EXECUTOR_BENCH_SIZE"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 1 << 30
}

// fileStore serves a snapshot archive around size bytes of data, and
// returns its URL and the archive's size. It serves path-style
// /<bucket>/<key> from one file: HEAD and GET, with an ETag and If-Match,
// which is all the executor asks of S3.
func fileStore(b *testing.B, size int64) (string, int64) {
	path := filepath.Join(b.TempDir(), "snap")
	fh, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	// A snapshot archive around size bytes of random data, stored without
	// compression: OpenBao's data is mostly ciphertext, which gzip cannot
	// shrink either, so the executor's archive check inflates stored blocks.
	w := bufio.NewWriterSize(fh, 1<<20)
	if err := snaptest.Write(w, &randReader{r: rand.New(rand.NewChaCha8([32]byte{1}))}, size, gzip.NoCompression); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	st, err := fh.Stat()
	if err != nil {
		b.Fatal(err)
	}
	_ = fh.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/snaps/big.snap") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		f, err := os.Open(path)
		if err != nil {
			w.WriteHeader(500)
			return
		}
		defer func() { _ = f.Close() }()
		w.Header().Set("ETag", `"bench"`)
		http.ServeContent(w, r, "", time.Unix(0, 0), f)
	}))
	b.Cleanup(srv.Close)
	return srv.URL, st.Size()
}

// randReader reads fast pseudo-random bytes.
type randReader struct{ r *rand.Rand }

func (r *randReader) Read(p []byte) (int, error) {
	for i := 0; i < len(p); i += 8 {
		v := r.r.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return len(p), nil
}

// sink answers like an active OpenBao and discards restore bodies.
func sink(b *testing.B) (string, *atomic.Int64) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sys/health":
			_, _ = w.Write([]byte(`{"initialized":true,"sealed":false,"standby":false,"cluster_id":"c","version":"2.4.0"}`))
		case "/v1/sys/capabilities-self":
			_, _ = w.Write([]byte(`{"sys/storage/raft/snapshot":["update"]}`))
		case "/v1/sys/storage/raft/snapshot":
			n, _ := io.Copy(io.Discard, r.Body)
			got.Store(n)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	b.Cleanup(srv.Close)
	return srv.URL, &got
}

// rss samples the process's resident set while f runs: peak and baseline.
func rss(f func()) (base, peak int64) {
	read := func() int64 {
		b, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				return n << 10
			}
		}
		return 0
	}
	base = read()
	peak = base
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return base, max(peak, read())
		case <-t.C:
			peak = max(peak, read())
		}
	}
}

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time (user + system, of every goroutine of the
// process: store, client and sink alike) per byte moved since start.
func reportCPU(b *testing.B, start time.Duration, bytes int64) {
	b.ReportMetric(float64(cpuTime()-start)/float64(bytes), "cpu-ns/B")
}

func BenchmarkRawCopy(b *testing.B) {
	store, size := fileStore(b, benchSize())
	bao, got := sink(b)
	b.SetBytes(size)
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		resp, err := http.Get(store + "/snaps/big.snap")
		if err != nil {
			b.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, bao+"/v1/sys/storage/raft/snapshot", resp.Body)
		req.ContentLength = size
		out, err := http.DefaultClient.Do(req)
		if err != nil || out.StatusCode != 204 || got.Load() != size {
			b.Fatalf("%v %v %d", err, out, got.Load())
		}
		_ = out.Body.Close()
		_ = resp.Body.Close()
	}
	reportCPU(b, cpu0, size*int64(b.N))
}

func BenchmarkExecutorS3(b *testing.B) {
	store, size := fileStore(b, benchSize())
	bao, got := sink(b)
	d := b.TempDir()
	p := Paths{TokenFile: filepath.Join(d, "token"), CredentialsDir: filepath.Join(d, "creds"), Termination: filepath.Join(d, "term"), JWTFile: filepath.Join(d, "jwt"), KubeDir: d}
	_ = os.WriteFile(p.TokenFile, []byte("t"), 0o600)
	env := map[string]string{
		schemas.EnvEndpoint: store, schemas.EnvBucket: "snaps", schemas.EnvRestoreKey: "big.snap",
		schemas.EnvUsePathStyle: "true", schemas.EnvOpenBaoAddr: bao,
	}
	b.SetBytes(size)
	var worst int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		var code int
		base, peak := rss(func() {
			code = Main(b.Context(), envOf(env), Options{Paths: p, Log: io.Discard, SettleDelay: time.Millisecond, ProgressEvery: time.Hour})
		})
		if code != 0 || got.Load() != size {
			b.Fatalf("exit %d, sink got %d", code, got.Load())
		}
		worst = max(worst, peak-base)
		b.Logf("RSS %s before, peak %s", human(base), human(peak))
	}
	reportCPU(b, cpu0, size*int64(b.N))
	b.ReportMetric(float64(worst)/(1<<20), "MiB-rss-growth")
}
