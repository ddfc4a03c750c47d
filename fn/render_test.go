package fn

import (
	"bytes"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

var update = flag.Bool("update", false, "rewrite the golden files under examples/golden")

// renderCase is one run of `crossplane render` over the examples.
type renderCase struct {
	name     string
	xr       string
	observed string
	required bool
	// v2Only: Crossplane v1 has no namespaced XRs.
	v2Only bool
}

func renderCases(t *testing.T) []renderCase {
	cs := []renderCase{
		{name: "initial", xr: "xr.yaml", required: true},
		{name: "namespaced", xr: "xr-namespaced.yaml", required: true, v2Only: true},
		{name: "no-cluster", xr: "xr.yaml"},
		{name: "lock-waiting", xr: "xr.yaml", observed: "observed/lock-waiting.yaml", required: true},
		{name: "lock-held", xr: "xr.yaml", observed: "observed/lock-held.yaml", required: true},
		{name: "job-running", xr: "xr.yaml", observed: "observed/job-running.yaml", required: true},
		{name: "submitted", xr: "xr.yaml", observed: "observed/submitted.yaml", required: true},
		{name: "job-complete", xr: "xr.yaml", observed: "observed/job-complete.yaml", required: true},
		{name: "job-failed-before", xr: "xr.yaml", observed: "observed/job-failed-before.yaml", required: true},
		{name: "job-failed-after", xr: "xr.yaml", observed: "observed/job-failed-after.yaml", required: true},
		{name: "completed", xr: "xr-completed.yaml", observed: "observed/job-complete.yaml", required: true},
		{name: "failed", xr: "xr-failed.yaml", observed: "observed/job-failed-before.yaml", required: true},
		{name: "unknown", xr: "xr-unknown.yaml", observed: "observed/job-failed-after.yaml", required: true},
		{name: "dry-run", xr: "xr-dry-run.yaml", required: true},
		{name: "fresh-target", xr: "xr-fresh-target.yaml"},
	}
	invalid, err := filepath.Glob(filepath.Join(testbin.Root(), "examples", "invalid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range invalid {
		n := strings.TrimSuffix(filepath.Base(f), ".yaml")
		cs = append(cs, renderCase{name: "invalid-" + n, xr: "invalid/" + n + ".yaml", required: true})
	}
	return cs
}

// serve runs the function on a loopback port for the real CLI to call.
func serve(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	fnv1.RegisterFunctionRunnerServiceServer(s, &Function{Log: logging.NewNopLogger()})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestRenderGolden runs the real crossplane CLIs, v2.2.1 (required
// resources) and v1.20.0 (extra resources, the older protocol), over every
// example, and compares the output with examples/golden.
func TestRenderGolden(t *testing.T) {
	root := testbin.Root()
	ex := filepath.Join(root, "examples")
	addr := serve(t)

	fns, err := os.ReadFile(filepath.Join(ex, "functions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fnsFile := filepath.Join(t.TempDir(), "functions.yaml")
	target := "render.crossplane.io/runtime: Development\n    render.crossplane.io/runtime-development-target: " + addr
	if err := os.WriteFile(fnsFile, bytes.Replace(fns, []byte("render.crossplane.io/runtime: Development"), []byte(target), 1), 0o600); err != nil {
		t.Fatal(err)
	}

	clis := []struct {
		tool, flag string
		v1         bool
	}{
		{tool: "crossplane", flag: "--required-resources"},
		{tool: "crossplane-v1", flag: "--extra-resources", v1: true},
	}
	for _, cli := range clis {
		bin := testbin.Path(t, cli.tool)
		for _, c := range renderCases(t) {
			if cli.v1 && c.v2Only {
				continue
			}
			t.Run(cli.tool+"/"+c.name, func(t *testing.T) {
				comp := "composition.yaml"
				if c.v2Only {
					comp = "composition-namespaced.yaml"
				}
				args := []string{"render", filepath.Join(ex, c.xr), filepath.Join(ex, comp), fnsFile, "-r"}
				if c.required {
					args = append(args, cli.flag+"="+filepath.Join(ex, "required", "cluster.yaml"))
				}
				if c.observed != "" {
					args = append(args, "--observed-resources="+filepath.Join(ex, c.observed))
				}
				cmd := exec.Command(bin, args...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				got, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s %s: %v\n%s", cli.tool, strings.Join(args, " "), err, stderr.String())
				}
				// The CLIs add different metadata of their own, so each
				// has its own golden files.
				golden := filepath.Join(ex, "golden", cli.tool, c.name+".yaml")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, got, 0o644); err != nil { //nolint:gosec // a checked-in fixture
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run: go test ./fn -run TestRenderGolden -update)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s render of %s differs from %s (-want +got):\n%s", cli.tool, c.name, golden, diff)
				}
			})
		}
	}
}
