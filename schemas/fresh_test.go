package schemas_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// TestFreshTargetRules: each rule of a fresh-target restore (the anchor's
// admission rules and ours) names its field, and the valid example passes
// with its lifecycle and cleanup read.
func TestFreshTargetRules(t *testing.T) {
	src := func(s map[string]any) map[string]any { return s["source"].(map[string]any) }
	cases := map[string]struct {
		edit func(s map[string]any)
		want []string
	}{
		"valid":                  {edit: func(map[string]any) {}},
		"no lifecycle":           {edit: func(s map[string]any) { delete(s, "targetLifecycle"); delete(s, "cleanupAfterSeconds") }, want: []string{"spec.targetLifecycle"}},
		"no force":               {edit: func(s map[string]any) { delete(s, "force") }, want: []string{"spec.force"}},
		"no expected version":    {edit: func(s map[string]any) { delete(src(s), "expectedVersion") }, want: []string{"spec.source.expectedVersion"}},
		"other version":          {edit: func(s map[string]any) { src(s)["expectedVersion"] = "2.3.1" }, want: []string{"spec.source.expectedVersion"}},
		"template needs version": {edit: func(s map[string]any) { delete(s["clusterTemplate"].(map[string]any), "version") }, want: []string{"spec.clusterTemplate.version"}},
		"jwt role":               {edit: func(s map[string]any) { s["jwtAuthRole"] = "restore" }, want: []string{"spec.jwtAuthRole"}},
		"token":                  {edit: func(s map[string]any) { s["tokenSecretRef"] = map[string]any{"name": "t"} }, want: []string{"spec.tokenSecretRef"}},
		"override":               {edit: func(s map[string]any) { s["overrideOperationLock"] = true }, want: []string{"spec.overrideOperationLock"}},
		"dry run":                {edit: func(s map[string]any) { s["dryRun"] = true }, want: []string{"spec.dryRun"}},
		"safety snapshot":        {edit: func(s map[string]any) { s["safetySnapshot"] = "BestEffort" }, want: []string{"spec.safetySnapshot"}},
		"safety snapshot off":    {edit: func(s map[string]any) { s["safetySnapshot"] = "Off" }},
		"newest of itself":       {edit: func(s map[string]any) { delete(src(s), "key") }, want: []string{"spec.source"}},
		"newest of another": {edit: func(s map[string]any) {
			delete(src(s), "key")
			src(s)["fromCluster"] = "prod"
		}},
		"cleanup with retain": {edit: func(s map[string]any) { s["targetLifecycle"] = "Retain" }, want: []string{"spec.cleanupAfterSeconds"}},
		"retain":              {edit: func(s map[string]any) { s["targetLifecycle"] = "Retain"; delete(s, "cleanupAfterSeconds") }},
		"bad lifecycle":       {edit: func(s map[string]any) { s["targetLifecycle"] = "Forever" }, want: []string{"spec.targetLifecycle"}},
		"cleanup too long":    {edit: func(s map[string]any) { s["cleanupAfterSeconds"] = 90000 }, want: []string{"spec.cleanupAfterSeconds"}},
		"too many replicas":   {edit: func(s map[string]any) { s["clusterTemplate"].(map[string]any)["replicas"] = 12 }, want: []string{"spec.clusterTemplate.replicas"}},
		"cleanup alone": {edit: func(s map[string]any) {
			delete(s, "clusterTemplate")
			delete(s, "targetLifecycle")
			s["tokenSecretRef"] = map[string]any{"name": "t"}
		}, want: []string{"spec.cleanupAfterSeconds"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := specOf(t, "claim-fresh-target.yaml")
			c.edit(s)
			spec, vs, err := schemas.Validate(s, schemas.Policy{})
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
			if c.want == nil && !spec.Fresh() {
				t.Error("a spec with a clusterTemplate is not Fresh")
			}
		})
	}
}

func TestCleanupDefault(t *testing.T) {
	s := specOf(t, "claim-fresh-target.yaml")
	spec, _, _ := schemas.Validate(s, schemas.Policy{})
	if spec.Cleanup() != time.Hour || spec.TargetLifecycle != schemas.LifecycleDisposable {
		t.Errorf("cleanup %s, lifecycle %s", spec.Cleanup(), spec.TargetLifecycle)
	}
	delete(s, "cleanupAfterSeconds")
	spec, _, _ = schemas.Validate(s, schemas.Policy{})
	if spec.Cleanup() != schemas.DefaultCleanupAfter {
		t.Errorf("default cleanup %s", spec.Cleanup())
	}
	s["cleanupAfterSeconds"] = 0
	spec, _, _ = schemas.Validate(s, schemas.Policy{})
	if spec.Cleanup() != 0 {
		t.Errorf("cleanup 0 read as %s", spec.Cleanup())
	}
}
