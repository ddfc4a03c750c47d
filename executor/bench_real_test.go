package executor

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/s3test"
	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// Benchmarks of whole restores, raw copy against executor, same store and
// same sink, one round per iteration: a raw copy (GET from the store, POST
// to the sink with a plain HTTP client, no checks), the anchor's way (GET
// into a file, then POST the file), the executor in this process (Main),
// and the executor as its own process (the product's binary, built here).
// The rounds interleave the four, each round starting with the next one,
// so load from elsewhere hits them alike. Each reports:
//
//   - raw-MB/s, anchor-MB/s, exec-MB/s, proc-MB/s: bytes over the time of
//     the transfer (for the executor, the "sent … in …" it logs: from the
//     POST's start to OpenBao's answer; for the others, from the GET to the
//     answer);
//   - exec-%-of-raw, proc-%-of-raw, proc-%-of-anchor: the ratios of the
//     totals;
//   - proc-cpu-ns/B: the executor process's CPU time (user and system, the
//     whole run) per byte of snapshot: the cores a Job needs for a rate;
//   - MiB-peak-rss: the executor process's peak resident set (VmHWM; see
//     child) over its whole life, the product binary's start included;
//     MiB-peak-anon and MiB-peak-file split it: the anonymous memory the
//     program allocates, and the pages of the binary that it touched,
//     which are clean and shared with the page cache;
//   - MiB-peak-rss-restoring, MiB-peak-anon-restoring: the same once the
//     product binary has exec'd the executor alone, which then restores:
//     the figure for "RSS stays flat while restoring".
//
//	go test ./executor -run '^$' -bench 'Loopback|SeaweedFS|OpenBao' -benchtime 3x
//
// Sizes: EXECUTOR_BENCH_SIZE (loopback, default 1 GiB),
// EXECUTOR_BENCH_SEAWEEDFS_SIZE (default 512 MiB),
// EXECUTOR_BENCH_OPENBAO_SIZE (the kv data written before the snapshot,
// default 256 MiB). EXECUTOR_BENCH_GOGC and EXECUTOR_BENCH_GOMEMLIMIT, when
// set, are passed to the executor process as GOGC and GOMEMLIMIT.
// The executor process is the product's binary, which execs the executor
// alone beside it, as in the image; its peak RSS is sampled across both.

// envSize reads a size in bytes from the environment.
func envSize(name string, def int64) int64 {
	if v := os.Getenv(name); v != "" {
		var n int64
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// restoreSetup is one store and one sink, and how to restore through them.
type restoreSetup struct {
	size int64
	// rawURL is a URL of the snapshot that a plain GET may read.
	rawURL func(b *testing.B) string
	// restoreURL is the sink's sys/storage/raft/snapshot.
	restoreURL string
	token      string
	// env and files configure the executor; files are the token and
	// credentials (written under the benchmark's temporary directory).
	env   map[string]string
	paths Paths
	// settled waits until the sink takes the next restore and checks the
	// last one arrived whole.
	settled func(b *testing.B)
	// settle is the executor's post-restore pause, in process: the sink's
	// own (OpenBao pauses about 5 s), or a token one for the fake sink.
	settle time.Duration
}

// newPaths writes the token and S3 credentials files for the executor.
func newPaths(b *testing.B, token, access, secret string) Paths {
	d := b.TempDir()
	p := Paths{
		TokenFile:      filepath.Join(d, "token"),
		JWTFile:        filepath.Join(d, "jwt"),
		CredentialsDir: filepath.Join(d, "credentials"),
		Termination:    filepath.Join(d, "termination-log"),
		KubeDir:        filepath.Join(d, "sa"),
	}
	if err := os.MkdirAll(p.CredentialsDir, 0o700); err != nil {
		b.Fatal(err)
	}
	files := map[string]string{p.TokenFile: token}
	if access != "" {
		files[filepath.Join(p.CredentialsDir, schemas.KeyAccessKeyID)] = access
		files[filepath.Join(p.CredentialsDir, schemas.KeySecretAccessKey)] = secret
	}
	for f, v := range files {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// rawRestore is the anchor's transfer without its disk: GET the object,
// POST its body as it comes. It returns the transfer's duration.
func (s *restoreSetup) rawRestore(b *testing.B) time.Duration {
	u := s.rawURL(b)
	t0 := time.Now()
	resp, err := http.Get(u) //nolint:noctx // a benchmark
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("raw GET: %v %v", err, resp)
	}
	defer func() { _ = resp.Body.Close() }()
	return s.post(b, "raw", resp.Body, t0)
}

// post sends body as the restore and returns the time since t0 to the
// answer, once OpenBao has settled.
func (s *restoreSetup) post(b *testing.B, what string, body io.Reader, t0 time.Time) time.Duration {
	req, err := http.NewRequest(http.MethodPost, s.restoreURL, body) //nolint:noctx // a benchmark
	if err != nil {
		b.Fatal(err)
	}
	req.ContentLength = s.size
	req.Header.Set("X-Vault-Token", s.token)
	out, err := http.DefaultClient.Do(req)
	el := time.Since(t0)
	if err != nil {
		b.Fatalf("%s POST: %v", what, err)
	}
	msg, _ := io.ReadAll(out.Body)
	_ = out.Body.Close()
	if out.StatusCode != http.StatusNoContent && out.StatusCode != http.StatusOK {
		b.Fatalf("%s POST: HTTP %d %s", what, out.StatusCode, msg)
	}
	s.settled(b)
	return el
}

// anchorRestore is the anchor's way: download the whole object to a file,
// then POST the file (which the transport sends with sendfile). It returns
// the time of both.
func (s *restoreSetup) anchorRestore(b *testing.B) time.Duration {
	u := s.rawURL(b)
	f, err := os.CreateTemp(b.TempDir(), "anchor-")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	t0 := time.Now()
	resp, err := http.Get(u) //nolint:noctx // a benchmark
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("anchor GET: %v %v", err, resp)
	}
	n, err := io.Copy(f, resp.Body)
	_ = resp.Body.Close()
	if err != nil || n != s.size {
		b.Fatalf("anchor download: %d bytes, %v", n, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		b.Fatal(err)
	}
	return s.post(b, "anchor", f, t0)
}

// sentIn is the executor's own report of the transfer's duration.
var sentIn = regexp.MustCompile(`sent \S+ \S+ of \S+ \S+ in (\S+) \(`)

func transferTime(b *testing.B, log string) time.Duration {
	m := sentIn.FindStringSubmatch(log)
	if m == nil {
		b.Fatalf("no transfer time in the executor's log:\n%s", log)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// inProcess runs Main in this process.
func (s *restoreSetup) inProcess(b *testing.B) time.Duration {
	var log bytes.Buffer
	code := Main(b.Context(), envOf(s.env), Options{Paths: s.paths, Log: &log, SettleDelay: s.settle})
	if code != 0 {
		b.Fatalf("executor: exit %d:\n%s", code, log.String())
	}
	s.settled(b)
	return transferTime(b, log.String())
}

// child runs the executor binary as a process; it returns the transfer's
// duration and the process's peak memory.
func (s *restoreSetup) child(b *testing.B, bin string) (time.Duration, procMem) {
	cmd := exec.CommandContext(b.Context(), bin, "restore")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, pathsEnv(s.paths)...)
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v := os.Getenv("EXECUTOR_BENCH_" + k); v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// The peak is the kernel's high-water mark of the process's resident
	// set (VmHWM), read every 10 ms while it runs: the peak comes while
	// the snapshot streams, seconds before the process exits (it then
	// waits for OpenBao to answer again). getrusage's ru_maxrss would be
	// wrong here: Go starts a child with vfork, sharing this (large) test
	// process's memory until the exec, and Linux folds that memory's
	// high-water mark into the child's ru_maxrss. RssAnon and RssFile split
	// the figure: what the program allocates, and the pages of its binary
	// it has touched (clean, shared with the page cache).
	// The exec of the executor alone starts a new memory image (and a new
	// VmHWM): samples taken once /proc/<pid>/exe names it are that
	// image's, its memory while it restores.
	stop := make(chan struct{})
	sampled := make(chan procMem)
	go func() {
		var peak procMem
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			m := procStatus(cmd.Process.Pid)
			peak.take(m)
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); filepath.Base(exe) == "openbao-restore-executor" {
				peak.alone.take(m)
			}
			select {
			case <-stop:
				sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	close(stop)
	peak := <-sampled
	if err != nil {
		b.Fatalf("executor process: %v:\n%s", err, log.String())
	}
	s.settled(b)
	peak.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return transferTime(b, log.String()), peak
}

// mem is a process's memory at its peak, in bytes.
type mem struct {
	hwm        int64 // VmHWM: the resident set's high-water mark
	anon, file int64 // the highest RssAnon and RssFile seen
}

func (m *mem) take(o mem) {
	m.hwm, m.anon, m.file = max(m.hwm, o.hwm), max(m.anon, o.anon), max(m.file, o.file)
}

// procMem is an executor process's memory: over its whole life, and
// while it is the executor alone (after the product's binary has exec'd
// it), which is while it restores.
type procMem struct {
	mem
	alone mem

	cpu time.Duration // user and system time of the whole run
}

// procStatus reads a running process's memory figures.
func procStatus(pid int) mem {
	var m mem
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var n int64
		if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &n); err != nil {
			continue
		}
		switch k {
		case "VmHWM":
			m.hwm = n << 10
		case "RssAnon":
			m.anon = n << 10
		case "RssFile":
			m.file = n << 10
		}
	}
	return m
}

// The executor binary reads its mounts from fixed paths; the benchmark's
// build reads them from these variables instead (see executorBinary).
var pathVars = []string{"BENCH_TOKEN_FILE", "BENCH_JWT_FILE", "BENCH_CREDENTIALS_DIR", "BENCH_TERMINATION", "BENCH_KUBE_DIR"}

func pathsEnv(p Paths) []string {
	vals := []string{p.TokenFile, p.JWTFile, p.CredentialsDir, p.Termination, p.KubeDir}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = pathVars[i] + "=" + v
	}
	return out
}

// executorBinary builds the Job's program as the image has it (`make
// build`: -trimpath, CGO_ENABLED=0): the product's binary, and beside it
// the executor alone (cmd/openbao-restore-executor), which the product
// execs for a restore. One change is made through a build overlay, not in
// the tree: executor.Run gets Paths read from pathVars, because the real
// mount points (/etc/bao/...) cannot be written here. The build cache
// makes every build after the first a link of a few seconds.
func executorBinary(b *testing.B) string {
	t0 := time.Now()
	bin, err := buildExecutor(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built the executor in %s", time.Since(t0).Round(time.Millisecond))
	return bin
}

func buildExecutor(dir string) (string, error) {
	root, err := filepath.Abs(testbin.Root())
	if err != nil {
		return "", err
	}
	const call = "executor.Run(executor.Options{})"
	extra := fmt.Sprintf(`package main

import (
	"os"

	"github.com/openbao-restore/openbao-restore/executor"
)

func benchPaths() executor.Paths {
	return executor.Paths{TokenFile: os.Getenv(%q), JWTFile: os.Getenv(%q), CredentialsDir: os.Getenv(%q), Termination: os.Getenv(%q), KubeDir: os.Getenv(%q)}
}
`, pathVars[0], pathVars[1], pathVars[2], pathVars[3], pathVars[4])
	bin := filepath.Join(dir, "openbao-restore")
	for _, m := range []struct{ pkg, out string }{{".", bin}, {"./cmd/openbao-restore-executor", filepath.Join(dir, "openbao-restore-executor")}} {
		mainGo := filepath.Join(root, m.pkg, "main.go")
		src, err := os.ReadFile(mainGo)
		if err != nil {
			return "", err
		}
		if !bytes.Contains(src, []byte(call)) {
			return "", fmt.Errorf("%s no longer calls %s: update executorBinary", mainGo, call)
		}
		src = bytes.Replace(src, []byte(call), []byte("executor.Run(executor.Options{Paths: benchPaths()})"), 1)
		sub := filepath.Join(dir, filepath.Base(m.out)+".src")
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return "", err
		}
		overlay := map[string]map[string]string{"Replace": {
			mainGo: filepath.Join(sub, "main.go"),
			filepath.Join(root, m.pkg, "zz_bench_paths.go"): filepath.Join(sub, "bench_paths.go"),
		}}
		j, _ := json.Marshal(overlay)
		for name, data := range map[string][]byte{"main.go": src, "bench_paths.go": []byte(extra), "overlay.json": j} {
			if err := os.WriteFile(filepath.Join(sub, name), data, 0o600); err != nil {
				return "", err
			}
		}
		cmd := exec.Command("go", "build", "-trimpath", "-overlay", filepath.Join(sub, "overlay.json"), "-o", m.out, m.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s: %v\n%s", m.pkg, err, out)
		}
	}
	return bin, nil
}

// rounds runs the raw copy, the executor in process and the executor
// process, in turn, once per iteration, and reports the figures.
func rounds(b *testing.B, s *restoreSetup) {
	bin := executorBinary(b)
	var raw, anchor, inproc, proc time.Duration
	var peak procMem
	var cpu time.Duration
	var peaks []string
	n := 0
	mb := func(d time.Duration) float64 { return float64(s.size) / d.Seconds() / 1e6 }
	for b.Loop() {
		// Each round starts with another of the three, so that none is
		// always first after a pause or last before one.
		var r, a, i, d time.Duration
		var m procMem
		steps := []func(){
			func() { r = s.rawRestore(b) },
			func() { a = s.anchorRestore(b) },
			func() { i = s.inProcess(b) },
			func() { d, m = s.child(b, bin) },
		}
		for k := range steps {
			steps[(k+n)%len(steps)]()
		}
		raw, anchor, inproc, proc, cpu = raw+r, anchor+a, inproc+i, proc+d, cpu+m.cpu
		peak.take(m.mem)
		peak.alone.take(m.alone)
		peaks = append(peaks, fmt.Sprintf("raw %.0f, anchor %.0f, exec %.0f, proc %.0f MB/s, proc CPU %.2f ns/B, peak RSS %s (anon %s, file %s), restoring %s (anon %s, file %s)",
			mb(r), mb(a), mb(i), mb(d), float64(m.cpu)/float64(s.size), human(m.hwm), human(m.anon), human(m.file),
			human(m.alone.hwm), human(m.alone.anon), human(m.alone.file)))
		n++
	}
	mbs := func(d time.Duration) float64 { return mb(d) * float64(n) }
	b.ReportMetric(mbs(raw), "raw-MB/s")
	b.ReportMetric(mbs(anchor), "anchor-MB/s")
	b.ReportMetric(mbs(inproc), "exec-MB/s")
	b.ReportMetric(mbs(proc), "proc-MB/s")
	b.ReportMetric(100*raw.Seconds()/inproc.Seconds(), "exec-%-of-raw")
	b.ReportMetric(100*raw.Seconds()/proc.Seconds(), "proc-%-of-raw")
	b.ReportMetric(100*anchor.Seconds()/proc.Seconds(), "proc-%-of-anchor")
	b.ReportMetric(float64(cpu)/float64(s.size)/float64(n), "proc-cpu-ns/B")
	b.ReportMetric(float64(peak.hwm)/(1<<20), "MiB-peak-rss")
	b.ReportMetric(float64(peak.anon)/(1<<20), "MiB-peak-anon")
	b.ReportMetric(float64(peak.file)/(1<<20), "MiB-peak-file")
	b.ReportMetric(float64(peak.alone.hwm)/(1<<20), "MiB-peak-rss-restoring")
	b.ReportMetric(float64(peak.alone.anon)/(1<<20), "MiB-peak-anon-restoring")
	b.Logf("%s per round:\n%s", human(s.size), strings.Join(peaks, "\n"))
}

// BenchmarkLoopback: the file-backed S3-style store and the discarding
// OpenBao-shaped sink of BenchmarkRawCopy, both in this process. The
// executor process's peak RSS over a 1 GiB object is the RSS goal's figure.
func BenchmarkLoopback(b *testing.B) {
	store, size := fileStore(b, benchSize())
	bao, got := sink(b)
	s := &restoreSetup{
		size:       size,
		rawURL:     func(*testing.B) string { return store + "/snaps/big.snap" },
		restoreURL: bao + "/v1/sys/storage/raft/snapshot",
		token:      "t",
		env: map[string]string{
			schemas.EnvProvider: "s3", schemas.EnvEndpoint: store, schemas.EnvBucket: "snaps", schemas.EnvRestoreKey: "big.snap",
			schemas.EnvUsePathStyle: "true", schemas.EnvOpenBaoAddr: bao,
		},
		paths: newPaths(b, "t", "", ""),
		settled: func(b *testing.B) {
			if n := got.Swap(0); n != size {
				b.Fatalf("the sink got %d bytes, want %d", n, size)
			}
		},
		settle: time.Millisecond,
	}
	rounds(b, s)
}

// seaweed starts SeaweedFS and uploads data as key; it returns the server
// and a function that presigns a GET of the key (SeaweedFS checks
// signatures; a presigned URL lets the raw copy use a plain client).
func seaweed(b *testing.B, key string, data []byte) (*s3test.Server, func(*testing.B) string) {
	const access, secret = "AKIABENCH", "bench-secret-key"
	srv := s3test.Start(b, access, secret, "snaps")
	t0 := time.Now()
	srv.Put(b, key, data)
	b.Logf("SeaweedFS: uploaded %s in %s", human(int64(len(data))), time.Since(t0).Round(time.Millisecond))
	cli := s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: access, SecretAccessKey: secret}, nil
		}),
	})
	presign := s3.NewPresignClient(cli)
	return srv, func(b *testing.B) string {
		r, err := presign.PresignGetObject(b.Context(), &s3.GetObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String(key)})
		if err != nil {
			b.Fatal(err)
		}
		return r.URL
	}
}

func seaweedEnv(srv *s3test.Server, key, bao string) map[string]string {
	return map[string]string{
		schemas.EnvProvider: "s3", schemas.EnvEndpoint: srv.URL, schemas.EnvBucket: srv.Bucket, schemas.EnvRestoreKey: key,
		schemas.EnvUsePathStyle: "true", schemas.EnvRestoreRegion: "us-east-1", schemas.EnvOpenBaoAddr: bao,
	}
}

// randomData is a snapshot archive around n incompressible bytes, stored
// without compression (see fileStore).
func randomData(b *testing.B, n int64) []byte {
	var out bytes.Buffer
	if err := snaptest.Write(&out, rand.Reader, n, gzip.NoCompression); err != nil {
		b.Fatal(err)
	}
	return out.Bytes()
}

// BenchmarkSeaweedFS: a real S3 server (SeaweedFS, on loopback, checking
// signatures) as the store, and the discarding sink in this process.
func BenchmarkSeaweedFS(b *testing.B) {
	data := randomData(b, envSize("EXECUTOR_BENCH_SEAWEEDFS_SIZE", 512<<20))
	size := int64(len(data))
	const key = "clusters/prod/big.snap"
	srv, rawURL := seaweed(b, key, data)
	bao, got := sink(b)
	s := &restoreSetup{
		size:       size,
		rawURL:     rawURL,
		restoreURL: bao + "/v1/sys/storage/raft/snapshot",
		token:      "t",
		env:        seaweedEnv(srv, key, bao),
		paths:      newPaths(b, "t", srv.AccessKey, srv.SecretKey),
		settled: func(b *testing.B) {
			if n := got.Swap(0); n != size {
				b.Fatalf("the sink got %d bytes, want %d", n, size)
			}
		},
		settle: time.Millisecond,
	}
	rounds(b, s)
}

// BenchmarkOpenBao: SeaweedFS as the store and a real OpenBao 2.4.0 (one
// Raft node) as the sink, restoring a real snapshot of random kv data
// (values of 512 KiB, encrypted by the barrier, so incompressible). Each
// restore is of the same snapshot into the same cluster; after each one
// the benchmark waits until the node is active again (OpenBao pauses about
// 5 s), outside the measured transfer.
func BenchmarkOpenBao(b *testing.B) {
	c, snap := filledBao(b, envSize("EXECUTOR_BENCH_OPENBAO_SIZE", 256<<20))
	const key = "clusters/prod/bao.snap"
	srv, rawURL := seaweed(b, key, snap)
	addr := c.Nodes[0].Addr
	s := &restoreSetup{
		size:       int64(len(snap)),
		rawURL:     rawURL,
		restoreURL: addr + "/v1/sys/storage/raft/snapshot",
		token:      c.RootToken,
		env:        seaweedEnv(srv, key, addr),
		paths:      newPaths(b, c.RootToken, srv.AccessKey, srv.SecretKey),
		settled:    func(b *testing.B) { c.Leader(b) },
		settle:     5 * time.Second,
	}
	rounds(b, s)
}

// filledBao is a one-node OpenBao holding about want bytes of kv data,
// and its snapshot.
func filledBao(b *testing.B, want int64) (*baotest.Cluster, []byte) {
	c := baotest.Start(b, 1)
	t0 := time.Now()
	fillBao(b, c, want)
	snap := c.Snapshot(b)
	b.Logf("OpenBao: wrote %s of kv data and took a %s snapshot in %s", human(want), human(int64(len(snap))), time.Since(t0).Round(time.Millisecond))
	return c, snap
}

// fillBao writes about total bytes of random data into kv-v2, in values of
// 512 KiB (base64 of 384 KiB; OpenBao's Raft entries are at most 1 MiB),
// from a few writers at once.
func fillBao(b *testing.B, c *baotest.Cluster, total int64) {
	const value = 512 << 10
	n := int((total + value - 1) / value)
	c.Put(b, "warmup", "x") // waits for kv-v2's upgrade
	addr := c.Nodes[c.Leader(b)].Addr
	jobs := make(chan int)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			raw := make([]byte, value/4*3)
			for i := range jobs {
				if _, err := rand.Read(raw); err != nil {
					errs <- err
					return
				}
				body, _ := json.Marshal(map[string]any{"data": map[string]string{"value": base64.StdEncoding.EncodeToString(raw)}})
				req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/v1/secret/data/bench/%05d", addr, i), bytes.NewReader(body)) //nolint:noctx // a benchmark
				req.Header.Set("X-Vault-Token", c.RootToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				msg, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("write %d: HTTP %d %s", i, resp.StatusCode, msg)
					return
				}
			}
		})
	}
	var failed error
	for i := 0; i < n && failed == nil; i++ {
		select {
		case jobs <- i:
		case failed = <-errs:
		}
	}
	close(jobs)
	wg.Wait()
	if failed == nil && len(errs) > 0 {
		failed = <-errs
	}
	if failed != nil {
		b.Fatal(failed)
	}
}
