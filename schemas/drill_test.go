package schemas_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestInvalidDrillExamples: every invalid drill example is refused at its
// field, with a message that names it (test/admission tries them at
// admission, the e2e on Crossplane).
func TestInvalidDrillExamples(t *testing.T) {
	want := map[string][]string{
		"both-triggers":            {"spec.schedule"},
		"bad-cron":                 {"spec.schedule"},
		"four-field-schedule":      {"spec.schedule"},
		"reads-without-token":      {"spec.tokenSecretRef"},
		"system-token":             {"spec.tokenSecretRef.name"},
		"template-without-version": {"spec.clusterTemplate.version"},
	}
	invalidCorpus(t, "invalid-drill", want, func(spec map[string]any) ([]schemas.Violation, error) {
		_, vs, err := schemas.ValidateDrill(spec, schemas.Policy{})
		return vs, err
	})
}

// TestDrillRules: the example drill is valid with its defaults; each rule
// names its field.
func TestDrillRules(t *testing.T) {
	cases := map[string]struct {
		edit func(s map[string]any)
		want []string
	}{
		"valid":               {edit: func(map[string]any) {}},
		"both triggers":       {edit: func(s map[string]any) { s["everySuccessfulBackups"] = 3 }, want: []string{"spec.schedule"}},
		"no trigger":          {edit: func(s map[string]any) { delete(s, "schedule") }, want: []string{"spec.schedule"}},
		"every 3 backups":     {edit: func(s map[string]any) { delete(s, "schedule"); s["everySuccessfulBackups"] = 3 }},
		"four fields":         {edit: func(s map[string]any) { s["schedule"] = "0 3 * *" }, want: []string{"spec.schedule"}},
		"bad cron":            {edit: func(s map[string]any) { s["schedule"] = "61 3 * * 0" }, want: []string{"spec.schedule"}},
		"reads without token": {edit: func(s map[string]any) { delete(s, "tokenSecretRef") }, want: []string{"spec.tokenSecretRef"}},
		"token without reads": {edit: func(s map[string]any) { delete(s, "readPaths") }, want: []string{"spec.tokenSecretRef"}},
		"no checks":           {edit: func(s map[string]any) { delete(s, "readPaths"); delete(s, "tokenSecretRef") }},
		"root token":          {edit: func(s map[string]any) { s["tokenSecretRef"] = map[string]any{"name": "prod-root-token"} }, want: []string{"spec.tokenSecretRef.name"}},
		"leading slash":       {edit: func(s map[string]any) { s["readPaths"] = []any{"/secret/data/x"} }, want: []string{"spec.readPaths.0"}},
		"no template version": {edit: func(s map[string]any) { delete(s["clusterTemplate"].(map[string]any), "version") }, want: []string{"spec.clusterTemplate.version"}},
		"bad endpoint": {edit: func(s map[string]any) {
			s["source"].(map[string]any)["target"].(map[string]any)["endpoint"] = "ftp://x"
		}, want: []string{"spec.source.target.endpoint"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := specOf(t, "claim-drill.yaml")
			c.edit(s)
			spec, vs, err := schemas.ValidateDrill(s, schemas.Policy{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vs {
				got = append(got, v.Path)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Fatalf("violations (-want +got):\n%s\n%v", diff, vs)
			}
			if c.want == nil && (spec.HistoryLimit != 10 || spec.Version() != "2.4.0") {
				t.Errorf("defaults: %+v", spec)
			}
		})
	}
}

func TestDrillNext(t *testing.T) {
	s, vs, err := schemas.ValidateDrill(specOf(t, "claim-drill.yaml"), schemas.Policy{})
	if s == nil {
		t.Fatalf("%v %v", vs, err)
	}
	from := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC) // a Saturday
	if got, want := s.Next(from), time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next run %s, want %s", got, want)
	}
}

// TestDrillPolicy: the function's policy reaches the target's rules (a
// loopback http endpoint is refused, unless the Input allows it).
func TestDrillPolicy(t *testing.T) {
	s := specOf(t, "claim-drill.yaml")
	s["source"].(map[string]any)["target"].(map[string]any)["endpoint"] = "http://127.0.0.1:9000"
	if _, vs, _ := schemas.ValidateDrill(s, schemas.Policy{}); len(vs) != 2 {
		t.Errorf("default policy: %v, want plain http and localhost refused", vs)
	}
	if spec, vs, _ := schemas.ValidateDrill(s, schemas.Policy{AllowInsecureEndpoints: true}); spec == nil || len(vs) != 0 {
		t.Errorf("insecure endpoints allowed: %v", vs)
	}
}
