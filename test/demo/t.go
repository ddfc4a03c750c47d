package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
)

// demoT is the testing.TB the demo gives the harness. It embeds a nil
// testing.TB only to have the interface's unexported method; every method
// the interface exports is its own, so the nil is never called.
type demoT struct {
	testing.TB
	ctx context.Context
	out *printer

	mu       sync.Mutex
	failures []string
	skipped  bool
	cleanups []func()
}

func newDemoT(ctx context.Context, out *printer) *demoT { return &demoT{ctx: ctx, out: out} }

// play runs f as a test body: Fatal and Skip end it (runtime.Goexit), and
// a panic is reported as a failure, never as a stack trace.
func (t *demoT) play(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				t.fail(fmt.Sprintf("panic: %v", p))
			}
		}()
		f()
	}()
	select {
	case <-done:
	case <-t.ctx.Done():
		// Interrupted: the cleanups stop everything the body started.
	}
}

// cleanup runs the cleanups, last first, as testing does.
func (t *demoT) cleanup() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

func (t *demoT) fail(msg string) {
	t.mu.Lock()
	t.failures = append(t.failures, msg)
	t.mu.Unlock()
	t.out.story("FAILED: " + msg)
}

func (t *demoT) failureCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.failures)
}

func (t *demoT) firstFailure() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.failures) == 0 {
		return ""
	}
	return t.failures[0]
}

func (t *demoT) Helper()                           {}
func (t *demoT) Name() string                      { return "demo" }
func (t *demoT) Context() context.Context          { return t.ctx }
func (t *demoT) Attr(string, string)               {}
func (t *demoT) Output() io.Writer                 { return t.out.harness() }
func (t *demoT) Log(args ...any)                   { t.out.line(fmt.Sprint(args...)) }
func (t *demoT) Logf(format string, args ...any)   { t.out.line(fmt.Sprintf(format, args...)) }
func (t *demoT) Error(args ...any)                 { t.fail(fmt.Sprint(args...)) }
func (t *demoT) Errorf(format string, args ...any) { t.fail(fmt.Sprintf(format, args...)) }
func (t *demoT) Fail()                             { t.fail("failed") }
func (t *demoT) FailNow()                          { t.Fail(); runtime.Goexit() }
func (t *demoT) Fatal(args ...any)                 { t.Error(args...); runtime.Goexit() }
func (t *demoT) Fatalf(format string, args ...any) { t.Errorf(format, args...); runtime.Goexit() }
func (t *demoT) Skip(args ...any)                  { t.Log(args...); t.SkipNow() }
func (t *demoT) Skipf(format string, args ...any)  { t.Logf(format, args...); t.SkipNow() }

func (t *demoT) SkipNow() {
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	t.fail("a step of the harness skipped itself (see --verbose)")
	runtime.Goexit()
}

func (t *demoT) Skipped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}

func (t *demoT) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.failures) > 0
}

func (t *demoT) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

func (t *demoT) TempDir() string {
	d, err := os.MkdirTemp("", "openbao-restore-demo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func (t *demoT) ArtifactDir() string { return t.TempDir() }

func (t *demoT) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}

func (t *demoT) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chdir(old) })
}
