package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is one control-plane helper (kube-controller-manager, kube-scheduler,
// kwok) run as a child process in its own process group, so that stopping it
// also stops anything it forked, and so that a Ctrl-C on the terminal reaches
// only the test binary, which then shuts its children down in order.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	// stopped: stop was called, so an exit is expected.
	stopped atomic.Bool
}

func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Pdeathsig kills the child if the test binary dies without cleaning up
	// (a test timeout panics and exits without running cleanups).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has already ended (a crash at start).
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.stopped.Store(true)
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Reap anything the leader left behind in its group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// childPIDs lists the direct children of this process, from /proc.
func childPIDs() []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// reaperMarker is set in this process's environment, so that every process
// the control plane starts (envtest's etcd and kube-apiserver included)
// inherits it, and the watchdog can find them all after we die.
const reaperMarker = "OPENBAO_RESTORE_TESTBED"

// startReaper marks this process's environment with id and starts a
// watchdog that, if this test binary dies without stopping its control
// plane, kills every process carrying the mark. envtest starts etcd and
// kube-apiserver without a parent-death signal, and a test timeout exits
// without running cleanups, so they would otherwise outlive the test.
func startReaper(dir, id string) (*proc, error) {
	if err := os.Setenv(reaperMarker, id); err != nil {
		return nil, err
	}
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done
for f in /proc/[0-9]*/environ; do
  grep -qszxF '%s=%s' "$f" || continue
  p=${f#/proc/}; p=${p%%/environ}
  [ "$p" = $$ ] || kill -KILL "$p" 2>/dev/null
done
exit 0`, os.Getpid(), reaperMarker, id)
	logPath := filepath.Join(dir, "reaper.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig here: it must outlive us to do its job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, err
	}
	p := &proc{name: "reaper", log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(p.done) }()
	return p, nil
}

// Process is a child process a test runs besides the control plane
// (Crossplane core, a registry, the binary under test), run like the
// control-plane helpers: its own process group, killed with the test binary,
// its output in a log file.
type Process struct{ p *proc }

// StartProcess starts bin with args and extra environment, its output in
// dir/name.log. It is stopped when the test ends (SIGTERM, SIGKILL after 5 s),
// and the tail of its log is logged if the test failed.
func StartProcess(t testing.TB, dir, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p, err := startProc(dir, name, bin, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- %s log tail ----\n%s", name, p.tail(4000))
		}
		p.stop(5 * time.Second)
	})
	return &Process{p: p}
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.p.name }

// LogPath is the path of the process's log file.
func (p *Process) LogPath() string { return p.p.log }

// Exited reports whether the process has already ended.
func (p *Process) Exited() bool { return p.p.exited() }

// Tail returns the last n bytes of the process's log.
func (p *Process) Tail(n int) string { return p.p.tail(n) }

// Child is the test binary run again as a separate process, for tests that
// SIGKILL a component and start it again (the child's TestMain decides from
// its environment what to run). Each start logs to its own file.
type Child struct {
	t      testing.TB
	dir    string
	env    []string
	p      *proc
	Starts int
}

// StartChild starts the test binary (running no tests) with extra
// environment. It is killed when the test ends, and the tail of its last
// log is logged if the test failed.
func StartChild(t testing.TB, env []string) *Child {
	t.Helper()
	c := &Child{t: t, dir: t.TempDir(), env: env}
	c.Start()
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("---- child (start %d) log tail ----\n%s", c.Starts, c.p.tail(8000))
		}
	})
	return c
}

// Start starts the child again (after Kill).
func (c *Child) Start() {
	c.t.Helper()
	c.Starts++
	p, err := startProc(c.dir, fmt.Sprintf("child-%d", c.Starts), os.Args[0], c.env, "-test.run=^$")
	if err != nil {
		c.t.Fatal(err)
	}
	c.p = p
}

// PID is the process id of the child's current start.
func (c *Child) PID() int { return c.p.cmd.Process.Pid }

// Kill SIGKILLs the child's process group and waits for it: no cleanup, no
// lease release, perhaps mid-write.
func (c *Child) Kill() {
	_ = syscall.Kill(-c.p.cmd.Process.Pid, syscall.SIGKILL)
	<-c.p.done
}
