// Package v1alpha1 holds the LockRequest API: a restore's request for its
// OpenBaoCluster's operation lock, and the executor's submission record.
//
// +kubebuilder:object:generate=true
// +groupName=restore.openbao-restore.io
// +versionName=v1alpha1
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion of the LockRequest API.
var GroupVersion = schema.GroupVersion{Group: "restore.openbao-restore.io", Version: "v1alpha1"}

// LockRequestSpec is what the function composes. It is immutable: a new
// holder means a new request.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable; delete the request and compose a new one"
type LockRequestSpec struct {
	// Cluster is the OpenBaoCluster, in this namespace, whose lock is wanted.
	// +kubebuilder:validation:MinLength=1
	Cluster string `json:"cluster"`

	// Operation is always Restore.
	// +kubebuilder:validation:Enum=Restore
	Operation string `json:"operation"`

	// Holder is the value written to operationLock.holder:
	// openbaorestore/<name>/<uid>.
	// +kubebuilder:validation:MinLength=1
	Holder string `json:"holder"`

	// Restore identifies the restore this request belongs to.
	Restore RestoreRef `json:"restore"`

	// Override clears a foreign Backup or Upgrade lock (never another
	// restore's). Set only when the restore has force and
	// overrideOperationLock.
	// +optional
	Override bool `json:"override,omitempty"`
}

// RestoreRef names the restore (claim or namespaced XR) and its composite.
type RestoreRef struct {
	// APIVersion and Kind of the composite resource.
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Name of the composite resource.
	Name string `json:"name"`
	// Namespace of a namespaced composite; empty for a legacy XR.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// UID of the composite resource.
	UID string `json:"uid"`
	// ClaimName is the claim's name, for a legacy XR with a claim.
	// +optional
	ClaimName string `json:"claimName,omitempty"`
}

// LockRequestStatus is written by the reconciler, except Submission, which
// the executor writes once.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.submission) || has(self.submission)",message="a submission record is never removed"
type LockRequestStatus struct {
	// State is Waiting, Held or Released.
	// +optional
	// +kubebuilder:validation:Enum=Waiting;Held;Released
	State string `json:"state,omitempty"`
	// HeldBy is the holder of the cluster's lock as last seen.
	// +optional
	HeldBy string `json:"heldBy,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	AcquiredAt *metav1.Time `json:"acquiredAt,omitempty"`
	// Submission records the executor's single destructive call. It is
	// written once, with a resourceVersion precondition, just before the
	// call; a pod that finds it set never submits.
	// +optional
	Submission *Submission `json:"submission,omitempty"`
	// Chosen is the snapshot the executor chose for a restore with no key:
	// the newest object under the target's path prefix. It is written
	// once, before the object is read, so that a retried pod restores the
	// same object.
	// +optional
	Chosen *Chosen `json:"chosen,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Submission is the executor's record of its restore call.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a submission record is written once"
type Submission struct {
	// Pod that submitted, and its UID.
	Pod    string `json:"pod"`
	PodUID string `json:"podUID,omitempty"`
	// Target is the OpenBao address the snapshot was sent to.
	Target string `json:"target"`
	// Digest is sha256:<hex> of the snapshot, and Size its length.
	Digest string `json:"digest,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Endpoint is snapshot or snapshot-force.
	Endpoint    string      `json:"endpoint"`
	SubmittedAt metav1.Time `json:"submittedAt"`
	// TLSCA is the CA bundle (PEM) the executor verified OpenBao's
	// certificate against, and TLSServerName the name it verified: public
	// data, with which the reconciler's health gates verify the pods.
	// +kubebuilder:validation:MaxLength=65536
	TLSCA string `json:"tlsCA,omitempty"`
	// +kubebuilder:validation:MaxLength=253
	TLSServerName string `json:"tlsServerName,omitempty"`
}

// Chosen is the object a restore with no key restores.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a choice is written once"
type Chosen struct {
	// Key is the object's key, ETag its version tag as the store gave it
	// (the GCS generation), Size its length in bytes.
	// +kubebuilder:validation:MinLength=1
	Key      string      `json:"key"`
	ETag     string      `json:"etag,omitempty"`
	Size     int64       `json:"size,omitempty"`
	ChosenAt metav1.Time `json:"chosenAt"`
}

// The root rule below: a rule on status runs only when status exists before
// and after a write, so it takes one at the root to keep a write that drops
// status as a whole from erasing the submission record.

// LockRequest asks for an OpenBaoCluster's operation lock.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=openbao-restore
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Holder",type=string,JSONPath=`.spec.holder`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.submission) || (has(self.status) && has(self.status.submission))",message="status.submission: a submission record is never removed"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.chosen) || (has(self.status) && has(self.status.chosen))",message="status.chosen: a choice is never removed"
type LockRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LockRequestSpec   `json:"spec"`
	Status LockRequestStatus `json:"status,omitempty"`
}

// LockRequestList lists LockRequests.
// +kubebuilder:object:root=true
type LockRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LockRequest `json:"items"`
}
