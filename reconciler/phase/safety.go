package phase

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Safety is status.safetySnapshot: the executor's safety snapshot of the
// cluster's state before the restore, and how to restore it (the undo).
type Safety struct {
	schemas.SafetySnapshot `json:",inline"`
	// UndoClaim is a ready-made restore of the safety snapshot, its
	// digest, size and cluster ID pinned, for kubectl apply.
	UndoClaim string `json:"undoClaim,omitempty"`
	// Undo is the one command that applies it.
	Undo string `json:"undo,omitempty"`
}

// Origin is what the undo is built from: the restore as its user made it.
type Origin struct {
	// APIVersion and Kind of what the user created: the claim of a legacy
	// XR, or the namespaced XR itself.
	APIVersion, Kind string
	Name, Namespace  string
	// Spec is the XR's spec.
	Spec map[string]any
}

// safety is the safety snapshot the Job's pods report (the last one), with
// its undo; nil when none was taken or skipped. cur is the status's: kept
// as it is while the report is the same, so that the undo claim is built
// once, not on every reconcile of the restart.
func safety(cur *Safety, f Facts) *Safety {
	if f.Job == nil {
		return nil
	}
	var s *schemas.SafetySnapshot
	for _, p := range f.Job.Pods {
		if p.Termination != nil && p.Termination.Safety != nil {
			s = p.Termination.Safety
		}
	}
	if s == nil {
		return nil
	}
	if cur != nil && cur.SafetySnapshot == *s {
		return cur
	}
	out := &Safety{SafetySnapshot: *s}
	if s.Skipped == "" && f.Origin.Kind != "" {
		out.UndoClaim, out.Undo = undo(f.Origin, *s)
	}
	return out
}

// The XR spec fields Crossplane owns, which an undo does not copy; the
// composition chosen stays, so the undo runs the way the restore did.
var crossplaneFields = []string{"claimRef", "resourceRefs", "compositionRevisionRef", "writeConnectionSecretToRef", "publishConnectionDetailsTo"}

// undo builds the claim that restores the safety snapshot into the same
// cluster, pinned to it: the restore's spec with the key, digest, size and
// cluster ID of the safety snapshot, and no dry run or lock override.
func undo(o Origin, s schemas.SafetySnapshot) (claim, command string) {
	spec := runtime.DeepCopyJSON(o.Spec)
	for _, f := range crossplaneFields {
		delete(spec, f)
	}
	unstructured.RemoveNestedField(spec, "crossplane", "resourceRefs")
	unstructured.RemoveNestedField(spec, "crossplane", "compositionRevisionRef")
	delete(spec, "dryRun")
	delete(spec, "overrideOperationLock")
	_ = unstructured.SetNestedField(spec, s.Key, "source", "key")
	_ = unstructured.SetNestedField(spec, "sha256:"+s.SHA256, "source", "expectedDigest")
	_ = unstructured.SetNestedField(spec, s.Size, "source", "expectedSize")
	if s.ClusterID != "" {
		_ = unstructured.SetNestedField(spec, s.ClusterID, "source", "expectedClusterID")
	} else {
		unstructured.RemoveNestedField(spec, "source", "expectedClusterID")
	}
	name := o.Name
	if len(name) > 58 {
		name = strings.TrimRight(name[:58], "-.")
	}
	name += "-undo"
	b, err := yaml.Marshal(map[string]any{
		"apiVersion": o.APIVersion, "kind": o.Kind,
		"metadata": map[string]any{"name": name, "namespace": o.Namespace},
		"spec":     spec,
	})
	if err != nil {
		return "", ""
	}
	group := strings.SplitN(o.APIVersion, "/", 2)[0]
	return string(b), fmt.Sprintf("kubectl get %s.%s %s -n %s -o jsonpath='{.status.safetySnapshot.undoClaim}' | kubectl apply -f -",
		strings.ToLower(o.Kind), group, o.Name, o.Namespace)
}

// undoHint ends a message with the undo, when there is one.
func undoHint(s *Safety) string {
	if s == nil || s.Undo == "" {
		return ""
	}
	return fmt.Sprintf("; the state before the restore is in the safety snapshot %s (undo: %s)", s.URL, s.Undo)
}

// origin is what the user created: the claim of a legacy XR, or the
// namespaced XR.
func (r *Reconciler) origin(xr *unstructured.Unstructured, spec map[string]any, ns string) Origin {
	o := Origin{APIVersion: xr.GetAPIVersion(), Kind: xr.GetKind(), Name: xr.GetName(), Namespace: ns, Spec: spec}
	if r.namespaced() {
		return o
	}
	ref, _, _ := unstructured.NestedStringMap(xr.Object, "spec", "claimRef")
	if ref["name"] == "" {
		return Origin{} // an XR without a claim: no claim to undo with
	}
	o.APIVersion, o.Kind, o.Name = ref["apiVersion"], ref["kind"], ref["name"]
	return o
}
