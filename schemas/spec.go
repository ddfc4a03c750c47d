package schemas

import "time"

// Spec is an OpenBaoRestore spec after validation, with every default
// applied. It mirrors #Spec in restore.cue, which is the source of truth;
// TestSpecMirrorsCUE keeps the two in step.
type Spec struct {
	Cluster               string     `json:"cluster"`
	Source                Source     `json:"source"`
	JWTAuthRole           string     `json:"jwtAuthRole,omitempty"`
	TokenSecretRef        *SecretRef `json:"tokenSecretRef,omitempty"`
	Image                 string     `json:"image,omitempty"`
	Force                 bool       `json:"force"`
	OverrideOperationLock bool       `json:"overrideOperationLock"`
	DryRun                bool       `json:"dryRun"`
	SafetySnapshot        string     `json:"safetySnapshot,omitempty"`
	// ClusterTemplate is the new cluster's spec (a fresh-target restore);
	// nil for a restore into an existing cluster.
	ClusterTemplate     map[string]any `json:"clusterTemplate,omitempty"`
	TargetLifecycle     string         `json:"targetLifecycle,omitempty"`
	CleanupAfterSeconds *int64         `json:"cleanupAfterSeconds,omitempty"`
}

// Fresh reports a fresh-target restore: one into a new cluster it creates.
func (s *Spec) Fresh() bool { return s.ClusterTemplate != nil }

// Cleanup is how long a Disposable target stays after the restore ends.
func (s *Spec) Cleanup() time.Duration {
	if s.CleanupAfterSeconds == nil {
		return DefaultCleanupAfter
	}
	return time.Duration(*s.CleanupAfterSeconds) * time.Second
}

// Source is the snapshot to restore.
type Source struct {
	Key               string `json:"key,omitempty"`
	FromCluster       string `json:"fromCluster,omitempty"`
	ExpectedDigest    string `json:"expectedDigest,omitempty"`
	ExpectedSize      int64  `json:"expectedSize,omitempty"`
	ExpectedClusterID string `json:"expectedClusterID,omitempty"`
	ExpectedVersion   string `json:"expectedVersion,omitempty"`
	Target            Target `json:"target"`
}

// Target is where the snapshot is kept.
type Target struct {
	Provider             string     `json:"provider"`
	Endpoint             string     `json:"endpoint,omitempty"`
	Bucket               string     `json:"bucket"`
	PathPrefix           string     `json:"pathPrefix,omitempty"`
	CredentialsSecretRef *SecretRef `json:"credentialsSecretRef,omitempty"`
	Region               string     `json:"region"`
	RoleARN              string     `json:"roleArn,omitempty"`
	UsePathStyle         bool       `json:"usePathStyle"`
	GCS                  *GCS       `json:"gcs,omitempty"`
	Azure                *Azure     `json:"azure,omitempty"`
	InsecureSkipVerify   bool       `json:"insecureSkipVerify"`
	PartSize             int64      `json:"partSize"`
	Concurrency          int64      `json:"concurrency"`
}

// SecretRef names a Secret in the restore's namespace.
type SecretRef struct {
	Name string `json:"name"`
}

// GCS settings.
type GCS struct {
	Project string `json:"project,omitempty"`
}

// Azure settings.
type Azure struct {
	StorageAccount string `json:"storageAccount,omitempty"`
	Container      string `json:"container,omitempty"`
}

// Policy is the operator's policy on top of the contract (the function's
// Input sets it).
type Policy struct {
	AllowInsecureEndpoints bool     `json:"allowInsecureEndpoints"`
	AllowedImages          []string `json:"allowedImages"`
}

// Auth is how the executor authenticates to OpenBao.
type Auth struct {
	// Method is jwt or token.
	Method string `json:"method"`
	// Role is the JWT auth role.
	Role string `json:"role,omitempty"`
}

// Violation is one broken rule: the field and a message that says the fix.
type Violation struct {
	Path    string `json:"path"`
	Message string `json:"msg"`
}

func (v Violation) Error() string { return v.Message }
