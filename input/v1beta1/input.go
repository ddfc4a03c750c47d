// Package v1beta1 contains the input type for the OpenBao restore function.
// +kubebuilder:object:generate=true
// +groupName=restore.fn.openbao-restore.io
// +versionName=v1beta1
package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of the Input's knobs.
const (
	DefaultExecutorImage           = "ghcr.io/openbao-restore/openbao-restore:v0.1.0"
	DefaultBackoffLimit            = int32(2)
	DefaultActiveDeadlineSeconds   = int64(2400)
	DefaultTTLSecondsAfterFinished = int32(86400)
)

// Pod security modes.
const (
	// PodSecurityPinned runs the executor as UID and GID 65532.
	PodSecurityPinned = "Pinned"
	// PodSecurityNone sets no UID or GID: OpenShift assigns them.
	PodSecurityNone = "None"
)

// Input configures the restore function: the operator's knobs.
// +kubebuilder:object:root=true
// +kubebuilder:storageversion
// +kubebuilder:resource:categories=crossplane
type Input struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// ExecutorImage runs the restore Job. Defaults to this project's image.
	// +optional
	ExecutorImage string `json:"executorImage,omitempty"`

	// AllowedImages are the images spec.image may name. A custom image sees
	// the restore's token and storage credentials, so none is allowed by
	// default; ExecutorImage always is.
	// +optional
	AllowedImages []string `json:"allowedImages,omitempty"`

	// BackoffLimit is how often the Job retries failures that happened
	// before the snapshot was submitted (transient ones only). Default 2.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// ActiveDeadlineSeconds bounds the Job's run. Default 2400.
	// +kubebuilder:validation:Minimum=60
	// +optional
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// TTLSecondsAfterFinished deletes the finished Job after this long.
	// Default 86400.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// Resources of the executor container. Default requests 100m/128Mi,
	// limits 500m/512Mi.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// PodSecurity is Pinned (run as UID/GID 65532) or None (the platform
	// assigns UIDs, as OpenShift does). Default Pinned.
	// +kubebuilder:validation:Enum=Pinned;None
	// +optional
	PodSecurity string `json:"podSecurity,omitempty"`

	// AllowInsecureEndpoints allows plain http and loopback or link-local
	// object store endpoints. For test beds only.
	// +optional
	AllowInsecureEndpoints bool `json:"allowInsecureEndpoints,omitempty"`

	// SafetySnapshot is the platform's default for a restore's
	// spec.safetySnapshot: Required (no safety snapshot, no restore),
	// BestEffort (restore without one, and say so) or Off. Default Required.
	// +kubebuilder:validation:Enum=Required;BestEffort;Off
	// +optional
	SafetySnapshot string `json:"safetySnapshot,omitempty"`

	// RestoreComposition is the Composition of the restores a drill
	// composes (its runs); unset, the restore XRD's default.
	// +optional
	RestoreComposition string `json:"restoreComposition,omitempty"`
}
