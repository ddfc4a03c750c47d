package testbed

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

// Crossplane turns an XRD into the claim and XR CRDs; its generator is
// internal, so the tests wrap the XRD's schema the same way, roughly.

// xrdFile is the part of a CompositeResourceDefinition the wrapping reads.
type xrdFile struct {
	Spec struct {
		Group      string                                        `json:"group"`
		Names      apiextensionsv1.CustomResourceDefinitionNames `json:"names"`
		ClaimNames apiextensionsv1.CustomResourceDefinitionNames `json:"claimNames"`
		Versions   []struct {
			Name   string                                   `json:"name"`
			Schema apiextensionsv1.CustomResourceValidation `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// Crossplane's own fields in a claim's spec (open objects here).
var crossplaneClaimFields = []string{"compositionRef", "compositionRevisionRef", "compositionSelector", "compositionUpdatePolicy",
	"compositeDeletePolicy", "resourceRef", "writeConnectionSecretToRef", "publishConnectionDetailsTo"}

// Crossplane's own fields in an XR's spec (objects; resourceRefs is never
// written here).
var crossplaneXRFields = []string{"claimRef", "compositionRef", "compositionRevisionRef", "compositionSelector",
	"compositionUpdatePolicy", "writeConnectionSecretToRef", "publishConnectionDetailsTo", "crossplane"}

// readXRD reads the XRD at file (relative to the repository root) and
// returns it with a copy of its first version's schema, status fields kept
// when unknown.
func readXRD(t testing.TB, file string) (xrdFile, *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testbin.Root(), file)) //nolint:gosec // repository file
	if err != nil {
		t.Fatal(err)
	}
	var x xrdFile
	if err := yaml.Unmarshal(b, &x); err != nil {
		t.Fatal(err)
	}
	s := x.Spec.Versions[0].Schema.OpenAPIV3Schema.DeepCopy()
	status := s.Properties["status"]
	status.XPreserveUnknownFields = ptr.To(true)
	s.Properties["status"] = status
	return x, s
}

// wrappedCRD is the CRD serving schema s under names, with a status
// subresource.
func wrappedCRD(x xrdFile, names apiextensionsv1.CustomResourceDefinitionNames, scope apiextensionsv1.ResourceScope,
	s *apiextensionsv1.JSONSchemaProps) *apiextensionsv1.CustomResourceDefinition {
	names.ListKind = names.Kind + "List"
	names.Singular = strings.ToLower(names.Kind)
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: names.Plural + "." + x.Spec.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: x.Spec.Group, Names: names, Scope: scope,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: x.Spec.Versions[0].Name, Served: true, Storage: true,
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: s},
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			}},
		},
	}
}

// ClaimCRD wraps the schema of the XRD at file (relative to the repository
// root) into its namespaced claim CRD, as Crossplane does: the XRD's schema
// plus Crossplane's claim spec fields (open objects), unknown status fields
// kept, a status subresource.
func ClaimCRD(t testing.TB, file string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	x, s := readXRD(t, file)
	spec := s.Properties["spec"]
	for _, f := range crossplaneClaimFields {
		spec.Properties[f] = apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}
	}
	s.Properties["spec"] = spec
	return wrappedCRD(x, x.Spec.ClaimNames, apiextensionsv1.NamespaceScoped, s)
}

// XRCRD wraps the schema of the XRD at file (relative to the repository
// root) into the XR's CRD of this scope, roughly as Crossplane does: its
// spec fields, a status subresource, unknown status fields kept, and
// status.conditions a list map keyed by type.
func XRCRD(t testing.TB, file string, scope apiextensionsv1.ResourceScope) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	x, s := readXRD(t, file)
	spec := s.Properties["spec"]
	for _, f := range crossplaneXRFields {
		if _, ok := spec.Properties[f]; !ok {
			spec.Properties[f] = apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}
		}
	}
	s.Properties["spec"] = spec
	status := s.Properties["status"]
	if status.Properties == nil {
		status.Properties = map[string]apiextensionsv1.JSONSchemaProps{}
	}
	status.Properties["conditions"] = apiextensionsv1.JSONSchemaProps{
		Type: "array", XListType: ptr.To("map"), XListMapKeys: []string{"type"},
		Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
			Type: "object", Required: []string{"type", "status", "reason", "lastTransitionTime"},
			Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"type": {Type: "string"}, "status": {Type: "string"}, "reason": {Type: "string"},
				"message": {Type: "string"}, "lastTransitionTime": {Type: "string", Format: "date-time"},
			},
		}},
	}
	s.Properties["status"] = status
	return wrappedCRD(x, x.Spec.Names, scope, s)
}

// InstallCRDObjects installs these CRDs (through files in a temporary
// directory, as InstallCRDs reads them) and waits until they are served.
func (e *Env) InstallCRDObjects(t testing.TB, crds ...*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	dir := t.TempDir()
	for i, c := range crds {
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)+".yaml"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.InstallCRDs(t, dir)
}

// ExampleSpec is the spec of the fixture examples/<file> (an XR or a
// claim), read afresh so that the caller may change it.
func ExampleSpec(t testing.TB, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testbin.Root(), "examples", file)) //nolint:gosec // repository fixture
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	spec, ok := o["spec"].(map[string]any)
	if !ok {
		t.Fatalf("examples/%s has no spec", file)
	}
	return spec
}
