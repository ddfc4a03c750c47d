package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// child is a process the harness runs (Crossplane core, the registry), in
// its own process group, stopped when the test ends. Its output goes to a
// log file in the harness's directory.
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startChild starts bin with args and extra environment. The process dies
// with the test binary (Pdeathsig), and the testbed's watchdog also finds
// it through the inherited environment marker.
func startChild(t testing.TB, dir, name string, env []string, bin string, args ...string) *child {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath) //nolint:gosec // the test's own directory
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // pinned tools
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	c := &child{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- %s log tail ----\n%s", name, c.tail(4000))
		}
		c.stop(5 * time.Second)
	})
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) stop(grace time.Duration) {
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (c *child) tail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitLine waits until the child's log has a line starting with prefix and
// returns the rest of that line.
func (c *child) waitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(c.log); err == nil {
			s := bufio.NewScanner(f)
			for s.Scan() {
				if rest, ok := strings.CutPrefix(s.Text(), prefix); ok {
					_ = f.Close()
					return rest
				}
			}
			_ = f.Close()
		}
		if c.exited() {
			t.Fatalf("%s exited:\n%s", c.name, c.tail(3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s printed no %q within %s:\n%s", c.name, prefix, timeout, c.tail(3000))
	return ""
}

// run runs a command to completion and fails the test on error.
func run(t testing.TB, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...) //nolint:gosec // pinned tools
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}
