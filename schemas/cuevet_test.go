package schemas_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/input/v1beta1"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// Tests of the contract as platform teams use it: the pinned cue CLI vets
// claims with #ValidClaim, from this module and from a module that
// depends on it.

// knownDifferences are the rules the function enforces that `cue vet`
// cannot: the example, and why. Listed, never skipped silently.
var knownDifferences = map[string]string{
	// Whether a restore needs jwtAuthRole or tokenSecretRef depends on the
	// cluster's OIDC self-initialisation, which cue vet cannot see.
	"no-auth": "authentication needs the cluster (schemas.ResolveAuth)",
	// Whether spec.cluster exists, and is this restore's own, only the
	// function sees (fn's decideTarget).
	"template-foreign-cluster": "the cluster's existence needs the cluster (fn.decideTarget)",
	// A cron expression's meaning needs a cron parser: cue vet checks its
	// five fields, the function parses it.
	"drill/bad-cron": "a cron expression's meaning needs a cron parser (schemas.ValidateDrill)",
	// A required field left out: cue vet names it, as incomplete, in its
	// own words.
	"drill/template-without-version": "a missing field is incomplete to cue vet, which names it in its own words",
}

// vet runs `cue vet -c -d '#ValidClaim'` in schemas/ on a file.
func vet(t *testing.T, file string, tags ...string) (string, error) {
	t.Helper()
	args := []string{"vet", "-c", "-d", "#ValidClaim"}
	for _, tag := range tags {
		args = append(args, "-t", tag)
	}
	cmd := exec.Command(testbin.Path(t, "cue"), append(args, ".", file)...) //nolint:gosec // the pinned tool
	cmd.Dir = filepath.Join(testbin.Root(), "schemas")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// defaultPolicy is the function Input's default policy, which #ValidClaim
// applies by default.
func defaultPolicy() schemas.Policy {
	return schemas.Policy{AllowedImages: []string{v1beta1.DefaultExecutorImage}}
}

// Every example, valid and invalid: cue vet and the function give the same
// verdict, and cue vet names each field the function names, in the
// function's words for the rules and refused fields.
func TestCUEVetAgreesWithTheFunction(t *testing.T) {
	root := testbin.Root()
	files, _ := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	invalid, _ := filepath.Glob(filepath.Join(root, "examples", "invalid", "*.yaml"))
	drills, _ := filepath.Glob(filepath.Join(root, "examples", "invalid-drill", "*.yaml"))
	files = append(append(files, invalid...), drills...)
	vetted := 0
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // fixtures
		if err != nil {
			t.Fatal(err)
		}
		var o map[string]any
		if err := yaml.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		validate := schemas.Validate
		switch k, _ := o["kind"].(string); k {
		case schemas.ClaimKind, schemas.XRKind:
		case schemas.DrillClaimKind, schemas.DrillXRKind:
			validate = func(spec map[string]any, p schemas.Policy) (*schemas.Spec, []schemas.Violation, error) {
				_, vs, err := schemas.ValidateDrill(spec, p)
				return nil, vs, err
			}
		default:
			continue // not a restore (XRD, Composition, functions)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if filepath.Base(filepath.Dir(f)) == "invalid-drill" {
			name = "drill/" + name
		}
		vetted++
		t.Run(name, func(t *testing.T) {
			out, err := vet(t, f)
			_, vs, verr := validate(o["spec"].(map[string]any), defaultPolicy())
			if verr != nil {
				t.Fatal(verr)
			}
			if why, ok := knownDifferences[name]; ok && err == nil && len(vs) > 0 {
				t.Logf("cue vet accepts what the function refuses (%v), a known difference: %s", vs, why)
				return
			}
			if (err == nil) != (len(vs) == 0) {
				t.Fatalf("cue vet says valid=%v, the function found %d violations %v\n%s", err == nil, len(vs), vs, out)
			}
			for _, v := range vs {
				if !strings.Contains(out, v.Path) {
					t.Errorf("cue vet does not name %s (the function: %s)\n%s", v.Path, v.Message, out)
				}
				want := v.Message // a rule's or a refusal's words, whole
				if m := shapeFix.FindStringSubmatch(v.Message); m != nil {
					want = m[1] // a shape's fix (the function adds the value)
				}
				if _, known := knownDifferences[name]; !known && !strings.Contains(out, want) {
					t.Errorf("cue vet does not say %q\n%s", want, out)
				}
			}
			if why, ok := knownDifferences[name]; ok {
				t.Logf("known difference: %s", why)
			}
		})
	}
	if vetted < 15 {
		t.Fatalf("only %d examples vetted", vetted)
	}
}

// shapeFix is the fix in the function's message for a value that breaks
// its field's own constraint.
var shapeFix = regexp.MustCompile(`^spec\.[^:]*: invalid value .*?: (.*)$`)

// Every field with a @fix attribute ends its value with error() of the
// same words, so that cue vet says what the function says.
func TestFixIsTheError(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testbin.Root(), "schemas", "restore.cue"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile("restore.cue", b, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	fields := 0
	ast.Walk(f, func(n ast.Node) bool {
		fd, ok := n.(*ast.Field)
		if !ok {
			return true
		}
		for _, a := range fd.Attrs {
			key, body := a.Split()
			if key != "fix" {
				continue
			}
			fields++
			fix, err := literal.Unquote(body)
			if err != nil {
				t.Errorf("%v: @fix(%s) is not one string", fd.Pos(), body)
				continue
			}
			or, ok := fd.Value.(*ast.BinaryExpr)
			call, _ := func() (*ast.CallExpr, bool) {
				if !ok {
					return nil, false
				}
				c, ok := or.Y.(*ast.CallExpr)
				return c, ok
			}()
			if call == nil || fmt.Sprint(call.Fun) != "error" || len(call.Args) != 1 {
				t.Errorf("%v: the value does not end with | error(%q)", fd.Pos(), fix)
				continue
			}
			lit, _ := call.Args[0].(*ast.BasicLit)
			if got, err := literal.Unquote(lit.Value); err != nil || got != fix {
				t.Errorf("%v: error(%s) differs from @fix(%q)", fd.Pos(), lit.Value, fix)
			}
		}
		return true
	}, nil)
	if fields < 17 {
		t.Errorf("only %d fields with @fix", fields)
	}
}

// The policy's default is the Input's; tags change it as the Input would.
func TestCUEVetPolicyTags(t *testing.T) {
	root := filepath.Join(testbin.Root(), "examples", "invalid")
	if out, err := vet(t, filepath.Join(root, "localhost-endpoint.yaml"), "allowInsecureEndpoints=true"); err != nil {
		t.Errorf("allowInsecureEndpoints=true: %v\n%s", err, out)
	}
	if out, err := vet(t, filepath.Join(root, "custom-image.yaml"), "allowedImages=docker.io/attacker/exfiltrate:latest"); err != nil {
		t.Errorf("allowedImages: %v\n%s", err, out)
	}
	if out, err := vet(t, filepath.Join(root, "custom-image.yaml")); err == nil || !strings.Contains(out, "spec.image") {
		t.Errorf("the default policy allowed a custom image: %v\n%s", err, out)
	}
	// #DefaultExecutorImage is the Input's default image.
	out, err := exec.Command(testbin.Path(t, "cue"), "export", "-e", "#DefaultExecutorImage", "--out", "text", filepath.Join(testbin.Root(), "schemas")).CombinedOutput() //nolint:gosec // the pinned tool
	if err != nil || strings.TrimSpace(string(out)) != v1beta1.DefaultExecutorImage {
		t.Errorf("#DefaultExecutorImage %q (%v), the Input's default %q", out, err, v1beta1.DefaultExecutorImage)
	}
}

// The module's layout is one `cue mod` accepts, and a platform's own module
// that depends on it (examples/platform, with this module vendored as a
// release would be) vets and exports its claims; the function accepts
// them, and a bad value in the platform's config fails cue vet naming the
// field, in the function's words.
func TestCUEModuleConsumer(t *testing.T) {
	bin := testbin.Path(t, "cue")
	root := testbin.Root()
	run := func(dir string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...) //nolint:gosec // the pinned tool
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(filepath.Join(root, "schemas"), "mod", "tidy", "--check"); err != nil {
		t.Fatalf("cue mod tidy --check: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(root, "examples", "platform"))); err != nil {
		t.Fatal(err)
	}
	vendor := filepath.Join(dir, "cue.mod", "pkg", "github.com", "openbao-restore", "openbao-restore", "schemas")
	if err := os.MkdirAll(vendor, 0o755); err != nil {
		t.Fatal(err)
	}
	srcs, _ := filepath.Glob(filepath.Join(root, "schemas", "*.cue"))
	srcs = append(srcs, filepath.Join(root, "schemas", "cue.mod", "module.cue"))
	for _, s := range srcs {
		b, err := os.ReadFile(s) //nolint:gosec // the module's own files
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(vendor, strings.TrimPrefix(s, filepath.Join(root, "schemas")+"/"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run(dir, "vet", "-c", "./..."); err != nil {
		t.Fatalf("cue vet in the platform's module: %v\n%s", err, out)
	}
	out, err := run(dir, "export", "-e", "stream", "--out", "text")
	if err != nil {
		t.Fatalf("cue export: %v\n%s", err, out)
	}
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("%d claims exported:\n%s", len(docs), out)
	}
	for _, d := range docs {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(d), &o); err != nil {
			t.Fatal(err)
		}
		if _, vs, err := schemas.Validate(o["spec"].(map[string]any), defaultPolicy()); err != nil || len(vs) > 0 {
			t.Errorf("the function refuses an exported claim: %v %v\n%s", vs, err, d)
		}
	}
	// A bad request in the platform's config.
	p := filepath.Join(dir, "restores.cue")
	b, err := os.ReadFile(p) //nolint:gosec // the copy made above
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), `{cluster: "prod", snapshot: "2026-12-04-120000"`, `{cluster: "prod", snapshot: "../../etc/passwd"`, 1)
	if bad == string(b) {
		t.Fatal("examples/platform/restores.cue changed: update this test's bad request")
	}
	if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(dir, "vet", "-c", "./...")
	if err == nil || !strings.Contains(out, "spec.source.key must not contain a '..' segment") {
		t.Fatalf("a bad key passed cue vet in the platform's module: %v\n%s", err, out)
	}
}

// KCL users (and kubectl explain) see the XRD's schema: every field of the
// spec has a description, and the CEL rules of #Admission are there.
func TestXRDDescribesEveryField(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testbin.Root(), "package", "configuration", "xrd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var xrd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]map[string]any `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &xrd); err != nil {
		t.Fatal(err)
	}
	spec := xrd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	rules := 0
	var walk func(s map[string]any, path string)
	walk = func(s map[string]any, path string) {
		if rs, ok := s["x-kubernetes-validations"].([]any); ok {
			rules += len(rs)
		}
		props, _ := s["properties"].(map[string]any)
		for k, v := range props {
			p, _ := v.(map[string]any)
			if d, _ := p["description"].(string); d == "" {
				t.Errorf("%s.%s has no description", path, k)
			}
			walk(p, path+"."+k)
		}
	}
	walk(spec, "spec")
	// The immutability rule, the refused fields and #Admission.
	if rules < 1+6+9 {
		t.Errorf("%d CEL rules on the spec", rules)
	}
}
