package fn

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/crossplane/function-sdk-go/resource/composed"

	lockv1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// The SDK converts typed objects through composed.Scheme, so the kinds we
// compose must be registered there before the first call.
func init() { //nolint:gochecknoinits // composed.Scheme is the SDK's global.
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, rbacv1.AddToScheme, batchv1.AddToScheme, lockv1.AddToScheme} {
		if err := add(composed.Scheme); err != nil {
			panic(err)
		}
	}
}
