package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
)

// child is a process the harness runs (Crossplane core, the registry), as
// the testbed runs its control-plane helpers: its own process group, stopped
// when the test ends, its output in a log file in the harness's directory.
type child struct{ *testbed.Process }

// startChild starts bin with args and extra environment. The process dies
// with the test binary (Pdeathsig), and the testbed's watchdog also finds
// it through the inherited environment marker.
func startChild(t testing.TB, dir, name string, env []string, bin string, args ...string) *child {
	t.Helper()
	return &child{testbed.StartProcess(t, dir, name, env, bin, args...)}
}

// waitLine waits until the child's log has a line starting with prefix and
// returns the rest of that line.
func (c *child) waitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(c.LogPath()); err == nil {
			s := bufio.NewScanner(f)
			for s.Scan() {
				if rest, ok := strings.CutPrefix(s.Text(), prefix); ok {
					_ = f.Close()
					return rest
				}
			}
			_ = f.Close()
		}
		if c.Exited() {
			t.Fatalf("%s exited:\n%s", c.Name(), c.Tail(3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s printed no %q within %s:\n%s", c.Name(), prefix, timeout, c.Tail(3000))
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
