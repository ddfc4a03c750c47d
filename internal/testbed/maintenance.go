package testbed

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// MaintenanceAnnotation marks a pod that a caller holding the `maintenance`
// verb on its OpenBaoCluster may change or delete past the operator's
// admission policy.
const MaintenanceAnnotation = "openbao.org/maintenance"

// StripMaintenance runs, until the test ends, the stand-in for
// openbao-operator's maintenance reconciler in namespace ns: under the
// operator's identity it removes MaintenanceAnnotation from every managed
// pod whose OpenBaoCluster does not have spec.maintenance.enabled, so that
// the maintenance path stays shut unless the cluster's owner opened it.
func (e *Env) StripMaintenance(t testing.TB, ns string) {
	t.Helper()
	op, err := e.Operator()
	if err != nil {
		t.Fatal(err)
	}
	w := e.watch(t, &corev1.PodList{}, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/managed-by": ManagedBy})
	eachVersion(t, w, func(p *corev1.Pod) {
		if p.Annotations[MaintenanceAnnotation] == "" {
			return
		}
		c := newClusterObject(ns, p.Labels[schemas.LabelOperatorCluster])
		if err := op.Get(context.Background(), client.ObjectKeyFromObject(c), c); err == nil {
			if on, _, _ := unstructured.NestedBool(c.Object, "spec", "maintenance", "enabled"); on {
				return
			}
		}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+MaintenanceAnnotation+`":null}}}`))
		if err := op.Patch(context.Background(), p, patch); client.IgnoreNotFound(err) != nil {
			t.Errorf("stand-in operator: stripping %s from pod %s: %v", MaintenanceAnnotation, p.Name, err)
		}
	})
}
