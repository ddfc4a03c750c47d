package kubelet

import (
	"context"
	"errors"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// AdoptNamespaces sends every pod created from now on in these namespaces
// to this node, for pods whose templates a test does not write (a Job that
// Crossplane composes, a StatefulSet an operator creates): a
// MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, served by
// Kubernetes 1.36) adds the node's toleration and a kubernetes.io/hostname
// nodeSelector to each pod at creation. It returns once the apiserver
// applies the policy (checked with a dry-run pod), and a function that
// removes it; Stop removes it too. Pods that set spec.nodeName are left
// alone. A later call replaces the namespaces of an earlier one.
func (k *Kubelet) AdoptNamespaces(ctx context.Context, namespaces ...string) (undo func(context.Context) error, err error) {
	if len(namespaces) == 0 {
		return nil, errors.New("no namespace to adopt")
	}
	name := "harness-kubelet-adopt-" + k.opts.Node
	tol := fmt.Sprintf(`Object.spec.tolerations{key: %q, operator: "Equal", value: "true", effect: "NoSchedule"}`, TaintKey)
	expr := fmt.Sprintf(`[
  has(object.spec.tolerations) ?
    JSONPatch{op: "add", path: "/spec/tolerations/-", value: %[1]s} :
    JSONPatch{op: "add", path: "/spec/tolerations", value: [%[1]s]},
  has(object.spec.nodeSelector) ?
    JSONPatch{op: "add", path: "/spec/nodeSelector/kubernetes.io~1hostname", value: %[2]q} :
    JSONPatch{op: "add", path: "/spec/nodeSelector", value: {"kubernetes.io/hostname": %[2]q}}
]`, tol, k.opts.Node)
	policy := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
						Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
				},
			}}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "unbound",
				Expression: `!has(object.spec.nodeName) || object.spec.nodeName == ""`}},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: expr},
			}},
			FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: name,
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: corev1.LabelMetadataName,
					Operator: metav1.LabelSelectorOpIn, Values: namespaces}},
			}},
		},
	}
	ar := k.cs.AdmissionregistrationV1()
	undo = func(ctx context.Context) error {
		err1 := ar.MutatingAdmissionPolicyBindings().Delete(ctx, name, metav1.DeleteOptions{})
		err2 := ar.MutatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err1) {
			err1 = nil
		}
		if apierrors.IsNotFound(err2) {
			err2 = nil
		}
		return errors.Join(err1, err2)
	}
	// Replace an earlier policy of this node (other namespaces).
	if err := undo(ctx); err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.unadopt = undo
	k.mu.Unlock()
	if _, err := ar.MutatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("mutating admission policy: %w", err)
	}
	if _, err := ar.MutatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		_ = undo(ctx)
		return nil, fmt.Errorf("mutating admission policy binding: %w", err)
	}
	// The apiserver picks policies up asynchronously: wait until a dry-run
	// pod comes back mutated.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "harness-adopt-probe-", Namespace: namespaces[0]},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "probe"}}},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := k.cs.CoreV1().Pods(namespaces[0]).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && got.Spec.NodeSelector[corev1.LabelHostname] == k.opts.Node {
			return undo, nil
		}
		if time.Now().After(deadline) {
			_ = undo(ctx)
			return nil, fmt.Errorf("the adoption policy was not applied within 30 s (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			_ = undo(ctx)
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
