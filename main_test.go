package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// The restore command execs the executor alone when it lies next to the
// binary, as in the image, with the same environment; without it, the
// restore runs in this process. (The Job starts the image with
// EXECUTOR_MODE=restore and no arguments, as openbao-operator's does.)
func TestRestoreExecsTheExecutorAlone(t *testing.T) {
	testbin.SkipShort(t, "a build of the binary")
	dir := t.TempDir()
	bin := filepath.Join(dir, "openbao-restore")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mode := schemas.ModeRestore
	run := func() (int, string) {
		cmd := exec.Command(bin)
		// No other setting: the executor refuses the configuration.
		cmd.Env = []string{schemas.EnvExecutorMode + "=" + mode, "STAND_IN=here"}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}

	// Alone: the executor runs in this process and refuses the config,
	// in each of its modes (never the function's server).
	for _, mode = range []string{schemas.ModeStepDown, schemas.ModeReadCheck, schemas.ModeRestore} {
		code, out := run()
		if code != schemas.ExitConfig || strings.Contains(out, "stand-in") {
			t.Fatalf("%s without the executor binary: exit %d, output:\n%s", mode, code, out)
		}
	}

	// With a stand-in executor beside it: exec'd, with the environment.
	script := "#!/bin/sh\necho \"stand-in $0 $# $STAND_IN $" + schemas.EnvExecutorMode + "\"\nexit 42\n"
	if err := os.WriteFile(filepath.Join(dir, ExecutorBinary), []byte(script), 0o755); err != nil { //nolint:gosec // a test script
		t.Fatal(err)
	}
	code, out := run()
	want := "stand-in " + filepath.Join(dir, ExecutorBinary) + " 0 here restore"
	if code != 42 || strings.TrimSpace(out) != want {
		t.Fatalf("with the executor binary: exit %d, output %q, want exit 42 and %q", code, out, want)
	}
}
