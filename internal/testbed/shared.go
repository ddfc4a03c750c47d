package testbed

import (
	"context"
	_ "embed"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

var shared struct {
	mu   sync.Mutex
	opts Options
	env  *Env
	err  error
}

// Main runs the package's tests with one shared control plane, which the
// first test to call Shared starts and Main stops at the end. It exits.
func Main(m *testing.M, opts Options) {
	shared.opts = opts
	code := m.Run()
	shared.mu.Lock()
	if shared.env != nil {
		shared.env.Stop()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Shared returns the package's shared control plane, starting it on first
// use. Tests using it must not assume they are alone: use a namespace of
// their own (Namespace) and unique names for cluster-scoped objects.
func Shared(t testing.TB) *Env {
	t.Helper()
	testbin.SkipShort(t, "a control plane")
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.env != nil {
		return shared.env
	}
	if shared.err != nil {
		t.Fatalf("testbed: the shared control plane failed to start earlier: %v", shared.err)
	}
	// Set before starting: if start calls t.Fatal (via testbin.Path), the
	// goroutine exits here and later tests must not retry.
	shared.err = errors.New("start aborted")
	dir, err := os.MkdirTemp("", "testbed-")
	if err != nil {
		t.Fatal(err)
	}
	e, err := start(t, shared.opts, dir)
	if err != nil {
		if e != nil {
			e.dumpLogs(t)
			e.Stop()
		}
		shared.err = err
		t.Fatalf("testbed: %v", err)
	}
	e.tmp = true
	shared.env, shared.err = e, nil
	return e
}

// Namespace creates a namespace for this test, deleted when it ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: dnsLabel(t.Name(), 40) + "-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs(t)
		}
		_ = e.Client.Delete(context.Background(), ns)
	})
	return ns.Name
}

// dnsLabel turns s into a valid DNS label prefix of at most n characters.
func dnsLabel(s string, n int) string {
	b := make([]byte, 0, len(s))
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b = append(b, byte(r))
		case len(b) > 0 && b[len(b)-1] != '-':
			b = append(b, '-')
		}
		if len(b) >= n {
			break
		}
	}
	out := strings.Trim(string(b), "-")
	if out == "" {
		out = "test"
	}
	return out
}
