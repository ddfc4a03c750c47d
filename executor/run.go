// Package executor is the restore Job's program: it streams a snapshot from
// an object store into the active OpenBao node, checking size, digest and
// cluster pins while the bytes flow, and holding back the snapshot's tail
// until every check has passed, so that nothing is ever applied on bad input
// and the restore is sent at most once.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Options tune a run. The zero value is the production behaviour.
type Options struct {
	Paths    Paths     // zero: DefaultPaths()
	Log      io.Writer // zero: os.Stderr
	Recorder Recorder  // zero: a KubeAPI when RESTORE_LOCK_REQUEST_NAME is set
	Source   Source    // zero: built from the configuration

	HoldBack      int           // zero: DefaultHoldBack
	Retries       int           // attempts of each step before the submission; zero: 5
	RetryDelay    time.Duration // first back-off; doubles up to 15 s; zero: 1 s
	SettleDelay   time.Duration // pause after the restore (OpenBao sleeps 5 s); zero: 5 s
	AfterTimeout  time.Duration // how long to wait for the node to answer again; zero: 2 min
	ProgressEvery time.Duration // zero: 10 s
}

func (o *Options) defaults() {
	if o.Paths == (Paths{}) {
		o.Paths = DefaultPaths()
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.HoldBack == 0 {
		o.HoldBack = DefaultHoldBack
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Second
	}
	if o.SettleDelay == 0 {
		o.SettleDelay = 5 * time.Second
	}
	if o.AfterTimeout == 0 {
		o.AfterTimeout = 2 * time.Minute
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 10 * time.Second
	}
}

// Run is the restore Job's program: Main on the process's environment,
// stopped by SIGTERM or an interrupt; it returns the exit code.
func Run(opts Options) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return Main(ctx, os.Getenv, opts)
}

// Main runs one restore and returns the process exit code (schemas.Exit*).
// It always writes the termination message.
func Main(ctx context.Context, env func(string) string, opts Options) int {
	opts.defaults()
	r := &run{opts: opts, start: time.Now()}
	err := r.run(ctx, env)
	code := ExitCode(err)
	recorded := errors.Is(err, ErrAlreadySubmitted)
	if recorded {
		code = schemas.ExitUnconfirmed
	}
	tm := &r.tm
	tm.ExitCode = code
	tm.Duration = time.Since(r.start).Round(time.Millisecond).String()
	if err != nil {
		tm.Message = err.Error()
		if tm.DryRun {
			tm.Checks = append(tm.Checks, schemas.Check{Name: r.step, Passed: false, Message: tm.Message})
			tm.Message = "dry run: the check " + r.step + " failed: " + tm.Message
		}
	}
	note := submissionNote(code, tm.Submitted, recorded)
	if tm.StepDown != nil {
		note = "No snapshot was sent: a step-down run only asks the leader to step down"
	}
	tm.Message = withSubmission(tm.Message, note)
	if err != nil {
		r.logf("FAILED (exit %d): %s", code, tm.Message)
	} else {
		r.logf("%s", tm.Message)
	}
	if werr := writeTermination(opts.Paths.Termination, tm); werr != nil {
		r.logf("cannot write the termination message to %s: %v", opts.Paths.Termination, werr)
	}
	return code
}

type run struct {
	// kube lists the cluster's pods, when the executor runs in a cluster.
	kube  *KubeAPI
	opts  Options
	start time.Time
	tm    schemas.TerminationMessage
	cfg   *Config
	bao   *bao
	logMu sync.Mutex
	// step is the check under way (schemas.Check*), named in a dry run's
	// report when it fails.
	step string
	// chosen is the snapshot chosen for a restore with no key (newest.go).
	chosen *Chosen
}

// pass ends the check under way, in a dry run's report, and names the next.
func (r *run) pass(message, next string) {
	if r.tm.DryRun {
		r.tm.Checks = append(r.tm.Checks, schemas.Check{Name: r.step, Passed: true, Message: message})
	}
	r.step = next
}

func (r *run) logf(format string, args ...any) {
	// The progress ticker, the transport's goroutine (the gate, the end of
	// the body) and the run itself all log: one line at a time.
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.opts.Log, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// retry runs a step before the submission, again on the given codes (always
// ExitTransient), with a doubling back-off, a bounded number of times.
func (r *run) retry(ctx context.Context, what string, f func() error, codes ...int) error {
	delay := r.opts.RetryDelay
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		c := ExitCode(err)
		again := c == schemas.ExitTransient
		for _, k := range codes {
			again = again || c == k
		}
		if !again || isFinal(err) || attempt >= r.opts.Retries {
			return err
		}
		r.logf("%s failed (attempt %d of %d): %v; retrying in %s", what, attempt, r.opts.Retries, err, delay)
		select {
		case <-ctx.Done():
			return transient(ctx.Err(), "%s", what)
		case <-time.After(delay):
		}
		delay = min(2*delay, 15*time.Second)
	}
}

func (r *run) run(ctx context.Context, env func(string) string) error {
	// Known before the configuration, so that even its failure is
	// reported as a dry run's; LoadConfig parses it the same way.
	r.step = schemas.CheckConfig
	r.tm.DryRun, _ = strconv.ParseBool(env(schemas.EnvDryRun))
	cfg, err := LoadConfig(env, r.opts.Paths)
	if err != nil {
		return err
	}
	r.cfg = cfg
	r.bao = newBao(cfg)
	switch cfg.Mode {
	case schemas.ModeStepDown:
		return r.stepDown(ctx, env)
	case schemas.ModeReadCheck:
		return r.readCheck(ctx, env)
	}
	r.tm.SnapshotKey = cfg.Key
	r.tm.Endpoint = cfg.RestoreEndpoint()
	if cfg.DryRun {
		r.logf("DRY RUN: every check of a restore runs, the whole snapshot is read and checked, and nothing is sent to OpenBao")
		if err := r.inClusterKube(env); err != nil {
			return err
		}
	}
	r.pass("the environment and mounted files are valid", schemas.CheckObject)

	// 1. A recorded submission ends everything before any work. A dry
	// run holds no lock and records nothing, so it has none to check.
	rec := r.opts.Recorder
	if rec == nil && cfg.LockRequestName != "" && !cfg.DryRun {
		kr, err := NewInClusterRecorder(env, r.opts.Paths.KubeDir, cfg.Namespace, cfg.LockRequestName, cfg.RequestUID)
		if err != nil {
			return err
		}
		rec, r.kube = kr, kr
	}
	switch {
	case cfg.DryRun:
		rec = nil
	case rec == nil:
		r.logf("WARNING: %s is not set: the submission is not recorded, so nothing stops a second run from restoring again", schemas.EnvLockRequestName)
	default:
		if err := r.retry(ctx, "checking the lock request", func() error { return rec.Check(ctx) }); err != nil {
			if errors.Is(err, ErrAlreadySubmitted) {
				return fail(schemas.ExitUnconfirmed, err, "not sending the snapshot")
			}
			return err
		}
	}

	// 2. The object: it exists and has an acceptable size.
	src := r.opts.Source
	if src == nil {
		if src, err = newSource(ctx, cfg); err != nil {
			return err
		}
	}
	if cfg.Newest {
		if err := r.chooseNewest(ctx, src, rec); err != nil {
			return err
		}
	}
	var info ObjectInfo
	err = r.retry(ctx, "HEAD "+src.URL(cfg.Key), func() (err error) { info, err = src.Stat(ctx, cfg.Key); return err })
	if errors.Is(err, errNoObject) {
		return notFound(ctx, src, cfg.Key, cfg.PathPrefix)
	}
	if err != nil {
		return err
	}
	if err := r.sameAsChosen(src.URL(cfg.Key), info); err != nil {
		return err
	}
	if err := checkSize(src.URL(cfg.Key), info.Size, cfg.ExpectedSize); err != nil {
		return err
	}
	r.tm.SnapshotSize, r.tm.SnapshotVersion = info.Size, info.ETag
	r.logf("snapshot %s: %d bytes", src.URL(cfg.Key), info.Size)
	r.pass(fmt.Sprintf("%s exists: %d bytes%s", src.URL(cfg.Key), info.Size, etag(info)), schemas.CheckLeader)

	// 3. The active node.
	var addr string
	var before *health
	err = r.retry(ctx, "finding the active OpenBao node", func() (err error) {
		addr, before, err = r.bao.findLeader(ctx, r.candidates(ctx))
		return err
	}, schemas.ExitLeader)
	if err != nil {
		return err
	}
	r.tm.ClusterIDBefore = before.ClusterID
	r.logf("active node %s: cluster_id %s, version %s", addr, before.ClusterID, before.Version)
	r.pass(fmt.Sprintf("the active node is %s: cluster_id %s, version %s", addr, before.ClusterID, before.Version), schemas.CheckAuth)

	// 4. Authenticate, and check the token may use this restore's endpoint.
	token := cfg.Token
	if cfg.AuthMethod == "jwt" {
		err = r.retry(ctx, "JWT login", func() (err error) { token, err = r.bao.loginJWT(ctx, addr, cfg.JWTRole, cfg.JWT); return err })
		if err != nil {
			return err
		}
	}
	r.pass("authenticated with "+cfg.AuthMethod, schemas.CheckCapability)
	path := "sys/storage/raft/" + cfg.RestoreEndpoint()
	if err := r.retry(ctx, "capabilities check", func() error { return r.bao.canUpdate(ctx, addr, token, path) }); err != nil {
		return err
	}
	caps := "the token may update " + path
	if cfg.SafetySnapshot != schemas.SafetyOff {
		// The safety snapshot reads the cluster's state first.
		err := r.retry(ctx, "capabilities check", func() error { return r.bao.canRead(ctx, addr, token, snapshotPath) })
		switch {
		case err == nil:
			caps += " and read " + snapshotPath + " (the safety snapshot)"
		case cfg.SafetySnapshot == schemas.SafetyRequired:
			return safetyRequired(err)
		case ExitCode(err) != schemas.ExitAuth:
			return err
		default:
			r.logf("WARNING: %v: the restore goes on without a safety snapshot (%s=%s)", err, schemas.EnvSafetySnapshot, cfg.SafetySnapshot)
			r.tm.Safety = &schemas.SafetySnapshot{Skipped: err.Error()}
		}
	}
	r.pass(caps, schemas.CheckClusterPin)

	// 5. Cluster pins, where the cluster can tell.
	if err := r.pinCluster(addr, before.ClusterID); err != nil {
		return err
	}
	if cfg.ExpectedVersion != "" && strings.TrimPrefix(before.Version, "v") != strings.TrimPrefix(cfg.ExpectedVersion, "v") {
		return fail(schemas.ExitVerification, nil, "the cluster at %s runs OpenBao %s, but %s pins %s: refusing to restore", addr, before.Version, schemas.EnvExpectedVersion, cfg.ExpectedVersion)
	}
	r.pass(pinsMessage(cfg), schemas.CheckSnapshot)
	if cfg.DryRun {
		return r.dryRun(ctx, src, info, addr)
	}

	// 6. The safety snapshot: the cluster's state as it is, stored before
	// anything can change it.
	if cfg.SafetySnapshot != schemas.SafetyOff && r.tm.Safety == nil {
		if err := r.safetySnapshot(ctx, src, addr, token, before.ClusterID); err != nil {
			return err
		}
	}

	// 7. Stream, check, record, release: retried only while the tail has
	// not been released, which is exactly while nothing can have been applied.
	var submitted bool
	attempt := 0
	err = r.retry(ctx, "streaming the snapshot", func() (err error) {
		if attempt++; attempt > 1 {
			// The leader may have changed (that is often why the stream
			// broke): find it again, and re-apply the cluster pin.
			var h *health
			if addr, h, err = r.bao.findLeader(ctx, r.candidates(ctx)); err != nil {
				return err
			}
			if err := r.pinCluster(addr, h.ClusterID); err != nil {
				return err
			}
		}
		submitted, err = r.stream(ctx, src, info, addr, token, rec)
		if submitted && err != nil {
			return final(err)
		}
		return err
	}, schemas.ExitLeader)
	r.tm.Submitted = submitted
	if err != nil {
		return err
	}

	// 8. After the restore: wait for the node, report seal and identity.
	return r.confirm(ctx, addr)
}

// candidates are the addresses probed for the active node: the override;
// else each StatefulSet pod by its IP, listed through the Kubernetes API
// (https when the cluster has TLS, which the Job says with TLS_CA_PATH or
// TLS_SERVER_NAME, else http); else, when the API cannot list them, each
// pod by its DNS name under the cluster's headless Service, which
// openbao-operator names after the cluster (<statefulset>-<i>.<cluster>.
// <namespace>.svc, a name its certificates carry), over TLS on 8200.
func (r *run) candidates(ctx context.Context) []string {
	if r.cfg.OpenBaoAddr != "" {
		return []string{r.cfg.OpenBaoAddr}
	}
	if r.kube != nil {
		addrs, err := r.kube.PodAddresses(ctx, r.cfg.Namespace, r.cfg.StatefulSet, r.cfg.Replicas, r.scheme())
		if err == nil && len(addrs) > 0 {
			return addrs
		}
		r.logf("the pods of StatefulSet %s could not be listed (%v); trying its headless service instead", r.cfg.StatefulSet, err)
	}
	service := r.cfg.ClusterName
	if service == "" {
		service = r.cfg.StatefulSet
	}
	out := make([]string, 0, r.cfg.Replicas)
	for i := 0; i < r.cfg.Replicas; i++ {
		out = append(out, fmt.Sprintf("https://%s-%d.%s.%s.svc:8200", r.cfg.StatefulSet, i, service, r.cfg.Namespace))
	}
	return out
}
