package testbed

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// The identities the stand-in for openbao-operator's installation gives
// the actors its admission policy names.
const (
	// OperatorUser is the stand-in operator's identity: it owns the
	// StatefulSets, Services and PodDisruptionBudgets of the clusters.
	OperatorUser = "system:serviceaccount:openbao-operator-system:openbao-operator-controller"
	// kcmUser is kube-controller-manager's own identity (the StatefulSet
	// controller creates the managed pods, the garbage collector and the
	// namespace controller delete them).
	kcmUser = "system:kube-controller-manager"
	// kubeletUser is kwok's identity, as the kubelet of NodeName: it
	// removes the pods of its node once they terminate.
	kubeletUser = "system:node:" + NodeName
	// ManagedBy is the value of app.kubernetes.io/managed-by on the
	// objects the operator manages.
	ManagedBy = "openbao-operator"
	// PolicyMessage is what the policy says when it refuses.
	PolicyMessage = "Direct modification of OpenBao-managed resources is prohibited"
)

//go:embed assets/operator-policy.yaml
var operatorPolicy []byte

// installOperatorPolicy installs the stand-in for the operator's admission
// policy and waits until the API server enforces it: a policy takes effect
// a moment after it is created.
func (e *Env) installOperatorPolicy(ctx context.Context) error {
	if err := e.ApplyYAML(ctx, operatorPolicy); err != nil {
		return fmt.Errorf("operator policy: %w", err)
	}
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "testbed-policy-probe",
		Labels: map[string]string{"app.kubernetes.io/managed-by": ManagedBy, schemas.LabelOperatorCluster: "probe"}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), PolicyMessage) {
			return nil
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("operator policy probe: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the operator policy was not enforced within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Operator is a client with the stand-in operator's identity, the one the
// policy lets change managed objects.
func (e *Env) Operator() (client.Client, error) {
	e.operatorOnce.Do(func() {
		cfg, err := e.AddUser(OperatorUser, "system:masters")
		if err != nil {
			e.operatorErr = err
			return
		}
		e.operator, e.operatorErr = client.New(cfg, client.Options{Scheme: e.Scheme})
	})
	return e.operator, e.operatorErr
}
