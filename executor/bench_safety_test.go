package executor

import (
	"encoding/json"
	"io"
	"os"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// BenchmarkSafetySnapshot: what a safety snapshot costs a restore. A real
// OpenBao 2.4.0 (one Raft node) filled with random kv data
// (EXECUTOR_BENCH_SAFETY_SIZE, default 256 MiB) restores its own snapshot
// from SeaweedFS, each time with a required safety snapshot first: the
// GET of the cluster's state streamed into SeaweedFS in 8 MiB parts. It
// reports the safety snapshot's seconds and MB/s, the whole run's seconds
// (the safety snapshot, the restore, OpenBao's 5 s pause and its return),
// the safety snapshot's share of the run, and a plain GET of OpenBao's
// snapshot into memory (plain-get-s), OpenBao's own pace.
//
//	EXECUTOR_BENCH_SAFETY_SIZE=1073741824 go test ./executor -run '^$' -bench SafetySnapshot -benchtime 2x
func BenchmarkSafetySnapshot(b *testing.B) {
	c, snap := filledBao(b, envSize("EXECUTOR_BENCH_SAFETY_SIZE", 256<<20))
	// OpenBao's own pace: a plain GET of its snapshot into memory, which
	// bounds the safety snapshot's (OpenBao gzips as it reads its data).
	t0 := time.Now()
	_ = c.Snapshot(b)
	plain := time.Since(t0)
	const key = "clusters/prod/bao.snap"
	srv, _ := seaweed(b, key, snap)
	env := seaweedEnv(srv, key, c.Nodes[0].Addr)
	env[schemas.EnvSafetySnapshot] = schemas.SafetyRequired
	env[schemas.EnvClusterNamespace], env[schemas.EnvClusterName], env[schemas.EnvRestoreRequestName] = "bench", "prod", "r"
	paths := newPaths(b, c.RootToken, srv.AccessKey, srv.SecretKey)
	var safety, total time.Duration
	var size int64
	for b.Loop() {
		if code := Main(b.Context(), envOf(env), Options{Paths: paths, Log: io.Discard, ProgressEvery: time.Hour}); code != schemas.ExitOK {
			b.Fatalf("exit %d", code)
		}
		var tm schemas.TerminationMessage
		raw, err := os.ReadFile(paths.Termination)
		if err != nil || json.Unmarshal(raw, &tm) != nil || tm.Safety == nil {
			b.Fatalf("termination message %s (%v)", raw, err)
		}
		s, _ := time.ParseDuration(tm.Safety.Duration)
		d, _ := time.ParseDuration(tm.Duration)
		safety, total, size = safety+s, total+d, tm.Safety.Size
		c.Leader(b)
	}
	n := float64(b.N)
	b.ReportMetric(plain.Seconds(), "plain-get-s")
	b.ReportMetric(safety.Seconds()/n, "safety-s")
	b.ReportMetric(float64(size)/(safety.Seconds()/n)/1e6, "safety-MB/s")
	b.ReportMetric(total.Seconds()/n, "run-s")
	b.ReportMetric(100*safety.Seconds()/total.Seconds(), "safety-%-of-run")
	b.Logf("safety snapshot %s: %.2f s of a %.2f s run", human(size), safety.Seconds()/n, total.Seconds()/n)
}
