// Package testbin finds the pinned tools and servers that tests run, building
// them on first use through hack/tool.sh (cached outside the clone by
// version). Tests never skip for want of a binary; only the unit tier
// (go test -short, make unit) skips every test that needs one.
package testbin

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	paths = map[string]string{}
)

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Path returns the path of the named tool (see hack/tool.sh), building it if
// needed, or fails the test.
func Path(t testing.TB, name string) string {
	t.Helper()
	SkipShort(t, "the pinned "+name)
	mu.Lock()
	defer mu.Unlock()
	if p, ok := paths[name]; ok {
		return p
	}
	cmd := exec.Command(filepath.Join(Root(), "hack", "tool.sh"), name)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("hack/tool.sh %s: %v\n%s", name, err, msg)
	}
	p := strings.TrimSpace(string(out))
	paths[name] = p
	return p
}

// SkipShort skips a test that needs what (a server, a tool, a build) in the
// unit tier (go test -short, make unit), which runs only pure tests.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s: run 'make integration' or 'make test' (the unit tier, go test -short, runs no servers, tools or builds)", what)
	}
}

// Run runs a command and returns its combined output.
func Run(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
