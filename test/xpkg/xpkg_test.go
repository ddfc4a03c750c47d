// Package xpkg tests the packages as Crossplane and users get them: built by
// the real `crossplane xpkg build`, with the runtime image embedded.
package xpkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

const version = "v0.0.0-test"

// TestPackages builds the image and all three packages, then checks that
// each package holds what it must and that the embedded image runs.
func TestPackages(t *testing.T) {
	testbin.SkipShort(t, "the image and packages built")
	root := testbin.Root()
	cmd := exec.Command(filepath.Join(root, "hack", "xpkg.sh"), version)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/xpkg.sh: %v\n%s", err, out)
	}
	out := filepath.Join(root, "_output")
	cases := []struct {
		pkg      string
		contains []string
		image    bool
	}{
		{pkg: "function-openbao-restore", contains: []string{"kind: Function", "name: inputs.restore.fn.openbao-restore.io"}, image: true},
		{pkg: "reconciler-openbao-restore", contains: []string{"kind: Provider", "name: lockrequests.restore.openbao-restore.io"}, image: true},
		{pkg: "configuration-openbao-restore", contains: []string{"kind: Configuration", "kind: CompositeResourceDefinition", "kind: Composition", "function-openbao-restore", "reconciler-openbao-restore"}},
	}
	for _, c := range cases {
		t.Run(c.pkg, func(t *testing.T) {
			file := filepath.Join(out, c.pkg+"-"+version+".xpkg")
			pkg, err := packageYAML(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.contains {
				if !strings.Contains(pkg, s) {
					t.Errorf("package.yaml of %s lacks %q", c.pkg, s)
				}
			}
			// Render fixtures must stay out of the package.
			if strings.Contains(pkg, "render.crossplane.io") {
				t.Errorf("package %s contains render fixtures", c.pkg)
			}
			if c.image {
				help, code := runImage(t, file, "/openbao-restore", "--help")
				if code != 0 || !strings.Contains(help, "Usage: openbao-restore") {
					t.Errorf("the image in %s does not run the binary (exit %d): %q", c.pkg, code, help)
				}
				// The executor alone, which /openbao-restore execs for a
				// restore: with no configuration it names what is missing.
				out, code := runImage(t, file, "/openbao-restore-executor")
				if code != schemas.ExitConfig || !strings.Contains(out, schemas.EnvRestoreKey+" is required") {
					t.Errorf("the image in %s does not run the executor alone (exit %d): %q", c.pkg, code, out)
				}
			}
		})
	}
}

// packageYAML finds package.yaml in the layers of an xpkg (a docker
// archive).
func packageYAML(file string) (string, error) {
	layers, err := archiveFiles(file)
	if err != nil {
		return "", err
	}
	for name, b := range layers {
		if !strings.HasSuffix(name, ".tar.gz") {
			continue
		}
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return "", err
		}
		raw, err := io.ReadAll(z)
		if err != nil {
			return "", err
		}
		files, err := tarFiles(raw)
		if err != nil {
			return "", err
		}
		if p, ok := files["package.yaml"]; ok {
			return string(p), nil
		}
	}
	return "", errors.New("no package.yaml in " + file)
}

func archiveFiles(file string) (map[string][]byte, error) {
	b, err := os.ReadFile(file) //nolint:gosec // a test's own output
	if err != nil {
		return nil, err
	}
	return tarFiles(b)
}

func tarFiles(b []byte) (map[string][]byte, error) {
	r := tar.NewReader(bytes.NewReader(b))
	out := map[string][]byte{}
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		c, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		out[h.Name] = c
	}
}

// runImage runs a command in the package's embedded image with buildah,
// no daemon, and returns its output and exit code.
func runImage(t *testing.T, file string, args ...string) (string, int) {
	t.Helper()
	b := []string{"--storage-driver", "vfs"}
	from, err := exec.Command("buildah", append(b, "from", "--quiet", "docker-archive:"+file)...).Output()
	if err != nil {
		t.Fatalf("buildah from %s: %v", file, err)
	}
	ctr := strings.TrimSpace(string(from))
	defer func() { _ = exec.Command("buildah", append(b, "rm", ctr)...).Run() }()
	run := append(append(b, "run", "--isolation", "chroot", ctr, "--"), args...)
	got, err := exec.Command("buildah", run...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("buildah run: %v\n%s", err, got)
	}
	code := 0
	if ee != nil {
		code = ee.ExitCode()
	}
	return string(got), code
}
