package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// SchemeBuilder registers the LockRequest types, so clients and caches
	// can decode them as typed objects.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the LockRequest types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() {
	SchemeBuilder.Register(&LockRequest{}, &LockRequestList{})
}

// Compile-time check that the generated deepcopy makes both runtime.Objects.
var (
	_ runtime.Object = &LockRequest{}
	_ runtime.Object = &LockRequestList{}
)
