package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var (
	// SchemeBuilder registers the LockRequest types, so clients and caches
	// can decode them as typed objects. It depends on apimachinery only, so
	// the API stays cheap to import.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the LockRequest types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &LockRequest{}, &LockRequestList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
