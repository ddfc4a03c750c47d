package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

// TestDemo runs `make demo`'s command, the happy scenario, as a person
// would: it must exit 0 and end with its summary (claim to Completed, the
// pods restarted, the data verified), and print the story only: no
// `go test` framing, no stack trace, no harness line.
func TestDemo(t *testing.T) {
	testbin.SkipShort(t, "the whole stack")
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", bin, "./test/demo")
	build.Dir = testbin.Root()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./test/demo: %v\n%s", err, out)
	}
	var out bytes.Buffer
	demo := exec.Command(bin, "--scenario", "happy")
	demo.Stdout, demo.Stderr = &out, &out
	err := demo.Run()
	text := out.String()
	t.Logf("the demo's output:\n%s", text)
	if err != nil {
		t.Fatalf("the demo failed: %v", err)
	}
	summary := regexp.MustCompile(`(?m)^\[ *[0-9.]+s\] SUMMARY: claim to Completed in [0-9.]+m?s; 4 OpenBao pods restarted \(prod-1, prod-2, prod-read-0, prod-0\); data verified: app/db and app/api back from the snapshot, app/new gone$`)
	if !summary.MatchString(text) {
		t.Error("no summary line")
	}
	for _, bad := range []string{"=== RUN", "--- PASS", "goroutine ", "panic", "harness kubelet", "testbed:"} {
		if strings.Contains(text, bad) {
			t.Errorf("the demo's output holds %q", bad)
		}
	}
	for i, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !regexp.MustCompile(`^\[ *[0-9.]+s\] `).MatchString(line) {
			t.Errorf("line %d is not a step of the story: %q", i+1, line)
		}
	}
}
