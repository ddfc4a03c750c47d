package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// chartRBAC are the templates of Crossplane's Helm chart that grant core and
// the RBAC manager their permissions (rbacManager.deploy=true).
var chartRBAC = []string{"clusterrole.yaml", "clusterrolebinding.yaml",
	"rbac-manager-allowed-provider-permissions.yaml", "rbac-manager-clusterrole.yaml",
	"rbac-manager-clusterrolebinding.yaml", "rbac-manager-managed-clusterroles.yaml"}

// renderChartRBAC renders those templates from the module cache with the
// chart's defaults, without helm: the only template constructs they use are
// the chart name, the release namespace, the labels helper and a few
// if/else/end lines, all of which resolve statically. Anything else left
// over fails the test, so a chart change cannot slip through unrendered.
func renderChartRBAC(t testing.TB, mod string) []byte {
	t.Helper()
	dir := filepath.Join(mod, "cluster", "charts", "crossplane", "templates")
	var out strings.Builder
	for _, f := range chartRBAC {
		b, err := os.ReadFile(filepath.Join(dir, f)) //nolint:gosec // module cache
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		skipping := false
		for _, line := range strings.Split(string(b), "\n") {
			trim := strings.TrimSpace(line)
			switch {
			case trim == "{{- if not .Values.serviceAccount.create }}":
				skipping = true // the chart creates its ServiceAccount
				continue
			case skipping && trim == "{{- else }}":
				skipping = false
				continue
			case skipping:
				continue
			case strings.Contains(line, `include "crossplane.labels"`),
				trim == "{{- if .Values.rbacManager.deploy }}",
				trim == "{{- if not .Values.rbacManager.skipAggregatedClusterRoles }}",
				trim == "{{- end }}", trim == "{{- end}}":
				continue
			}
			line = strings.ReplaceAll(line, `{{ template "crossplane.name" . }}`, "crossplane")
			line = strings.ReplaceAll(line, "{{ .Release.Namespace }}", xpNamespace)
			if strings.Contains(line, "{{") {
				t.Fatalf("chart template %s: cannot render %q", f, line)
			}
			out.WriteString(line + "\n")
		}
	}
	return []byte(out.String())
}
