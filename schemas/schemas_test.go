package schemas_test

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func specOf(t testing.TB, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testbin.Root(), "examples", file)) //nolint:gosec // fixtures
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	return o["spec"].(map[string]any)
}

func TestValidExamples(t *testing.T) {
	for _, f := range []string{"claim.yaml", "xr.yaml", "xr-namespaced.yaml", "xr-completed.yaml"} {
		t.Run(f, func(t *testing.T) {
			s, vs, err := schemas.Validate(specOf(t, f), schemas.Policy{})
			if err != nil || len(vs) > 0 {
				t.Fatalf("Validate: %v %v", err, vs)
			}
			if s.Source.Target.PartSize != 10485760 || s.Source.Target.Concurrency != 3 {
				t.Errorf("bounded defaults not applied: %+v", s.Source.Target)
			}
			if s.Source.Target.Region == "" || s.Source.Target.Provider == "" {
				t.Errorf("defaults not applied: %+v", s.Source.Target)
			}
		})
	}
}

// TestInvalidExamples checks every invalid example is refused, at the right
// field, with a message that names the field.
func TestInvalidExamples(t *testing.T) {
	want := map[string][]string{
		"azure-no-account":           {"spec.source.target.azure.storageAccount"},
		"bad-digest":                 {"spec.source.expectedDigest"},
		"bad-provider":               {"spec.cluster", "spec.source.target.provider"},
		"custom-image":               {"spec.image"},
		"key-traversal":              {"spec.source.key", "spec.source.key"},
		"link-local-endpoint":        {"spec.source.target.endpoint"},
		"localhost-endpoint":         {"spec.source.target.endpoint", "spec.source.target.endpoint"},
		"override-without-force":     {"spec.overrideOperationLock"},
		"dry-run-override":           {"spec.overrideOperationLock"},
		"secret-namespace":           {"spec.source.target.credentialsSecretRef.namespace"},
		"system-secret":              {"spec.tokenSecretRef.name"},
		"unsupported-field":          {"spec.source.target.workloadIdentity"},
		"template-without-force":     {"spec.force"},
		"template-version-mismatch":  {"spec.source.expectedVersion"},
		"template-with-token":        {"spec.tokenSecretRef"},
		"lifecycle-without-template": {"spec.targetLifecycle"},
		"from-cluster-with-key":      {"spec.source.fromCluster"},
		"from-cluster-without-force": {"spec.source.fromCluster"},
		// Auth needs the cluster: ResolveAuth, not Validate, refuses it.
		"no-auth": nil,
		// The cluster exists and is not the restore's own: the function,
		// which sees it, refuses it (fn TestFreshTargetConflict, e2e).
		"template-foreign-cluster": nil,
	}
	invalidCorpus(t, "invalid", want, func(spec map[string]any) ([]schemas.Violation, error) {
		_, vs, err := schemas.Validate(spec, schemas.Policy{})
		return vs, err
	})
}

// invalidCorpus checks that every example of examples/<dir> is refused at
// the fields want names for it, each message naming its field.
func invalidCorpus(t *testing.T, dir string, want map[string][]string, validate func(map[string]any) ([]schemas.Violation, error)) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testbin.Root(), "examples", dir, "*.yaml"))
	if len(files) != len(want) {
		t.Fatalf("%d examples in examples/%s, %d expectations", len(files), dir, len(want))
	}
	for _, f := range files {
		n := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(n, func(t *testing.T) {
			vs, err := validate(specOf(t, dir+"/"+n+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vs {
				got = append(got, v.Path)
				if !strings.Contains(v.Message, v.Path) {
					t.Errorf("message %q does not name its field %s", v.Message, v.Path)
				}
			}
			if diff := cmp.Diff(want[n], got); diff != "" {
				t.Errorf("violations (-want +got):\n%s\n%v", diff, vs)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	base := func(endpoint, image string) map[string]any {
		s := specOf(t, "claim.yaml")
		tgt := s["source"].(map[string]any)["target"].(map[string]any)
		tgt["endpoint"] = endpoint
		if image != "" {
			s["image"] = image
		}
		return s
	}
	cases := []struct {
		name     string
		endpoint string
		image    string
		policy   schemas.Policy
		bad      bool
	}{
		{name: "https", endpoint: "https://s3.example.com"},
		{name: "http in-cluster svc", endpoint: "http://minio.storage.svc:9000"},
		{name: "http in-cluster fqdn", endpoint: "http://minio.storage.svc.cluster.local:9000"},
		{name: "http outside", endpoint: "http://s3.example.com", bad: true},
		{name: "localhost https", endpoint: "https://localhost:9000", bad: true},
		{name: "loopback ip", endpoint: "https://127.0.0.1:9000", bad: true},
		{name: "ipv6 loopback", endpoint: "https://[::1]:9000", bad: true},
		{name: "metadata", endpoint: "https://169.254.169.254", bad: true},
		{name: "ipv6 link-local", endpoint: "https://[fe80::1]:9000", bad: true},
		{name: "not a url", endpoint: "s3.example.com", bad: true},
		{name: "test bed allows loopback http", endpoint: "http://127.0.0.1:9000", policy: schemas.Policy{AllowInsecureEndpoints: true}},
		{name: "image on allow-list", endpoint: "https://s3.example.com", image: "reg/x:1", policy: schemas.Policy{AllowedImages: []string{"reg/x:1"}}},
		{name: "image refused by default", endpoint: "https://s3.example.com", image: "reg/x:1", bad: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, vs, err := schemas.Validate(base(c.endpoint, c.image), c.policy)
			if err != nil {
				t.Fatal(err)
			}
			if (len(vs) > 0) != c.bad {
				t.Errorf("violations %v, want bad=%v", vs, c.bad)
			}
		})
	}
}

func TestValidateDoesNotChangeInput(t *testing.T) {
	s := specOf(t, "invalid/secret-namespace.yaml")
	before, _ := yaml.Marshal(s)
	_, _, _ = schemas.Validate(s, schemas.Policy{})
	after, _ := yaml.Marshal(s)
	if string(before) != string(after) {
		t.Errorf("Validate changed its input:\n%s\n%s", before, after)
	}
}

func TestResolveAuth(t *testing.T) {
	s := &schemas.Spec{}
	if _, v := schemas.ResolveAuth(s, false); v == nil {
		t.Error("no auth and no OIDC must be refused")
	}
	if a, v := schemas.ResolveAuth(s, true); v != nil || a.Role != schemas.DefaultJWTRole {
		t.Errorf("OIDC default role: %+v %v", a, v)
	}
	s.TokenSecretRef = &schemas.SecretRef{Name: "t"}
	if a, _ := schemas.ResolveAuth(s, true); a.Method != "token" {
		t.Errorf("token: %+v", a)
	}
	s.JWTAuthRole = "r"
	if a, _ := schemas.ResolveAuth(s, false); a.Method != "jwt" || a.Role != "r" {
		t.Errorf("jwt: %+v", a)
	}
}

// TestSpecMirrorsCUE keeps the Go Spec's JSON names equal to #Spec's fields.
func TestSpecMirrorsCUE(t *testing.T) {
	ctx := cuecontext.New()
	v, err := schemas.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var check func(path string, cv cue.Value, gt reflect.Type)
	check = func(path string, cv cue.Value, gt reflect.Type) {
		for gt.Kind() == reflect.Pointer {
			gt = gt.Elem()
		}
		var cueFields, goFields []string
		it, _ := cv.Fields(cue.Optional(true))
		for it.Next() {
			cueFields = append(cueFields, it.Selector().Unquoted())
		}
		byName := map[string]reflect.StructField{}
		for i := range gt.NumField() {
			f := gt.Field(i)
			n := strings.Split(f.Tag.Get("json"), ",")[0]
			goFields = append(goFields, n)
			byName[n] = f
		}
		sort.Strings(cueFields)
		sort.Strings(goFields)
		if diff := cmp.Diff(cueFields, goFields); diff != "" {
			t.Errorf("%s: fields of #Spec (-) and Spec (+) differ:\n%s", path, diff)
		}
		it, _ = cv.Fields(cue.Optional(true))
		for it.Next() {
			n := it.Selector().Unquoted()
			f, ok := byName[n]
			ft := f.Type
			for ok && ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ok && ft.Kind() == reflect.Struct {
				check(path+"."+n, it.Value(), ft)
			}
		}
	}
	check("spec", v.LookupPath(cue.ParsePath("#Spec")), reflect.TypeOf(schemas.Spec{}))
}
