package schemas

import (
	"fmt"
	"time"
)

// A fresh-target restore (spec.clusterTemplate) creates the OpenBaoCluster
// it restores into. These are the names and defaults that the function,
// the reconciler and the executor share about it.

// The target lifecycles (spec.targetLifecycle).
const (
	// LifecycleDisposable: the new cluster is deleted cleanupAfterSeconds
	// after the restore ends, and with the restore.
	LifecycleDisposable = "Disposable"
	// LifecycleRetain: it stays, and is the user's.
	LifecycleRetain = "Retain"
)

// DefaultCleanupAfter is how long a Disposable target stays after the
// restore ends when spec.cleanupAfterSeconds is unset: time for a person
// to look at it.
const DefaultCleanupAfter = time.Hour

// AnnotationRestoreOrigin is on a cluster a fresh-target restore created:
// the restore's UID, as openbao-operator writes it. A restore never
// restores into a cluster that does not carry its own.
const AnnotationRestoreOrigin = "openbao.org/restore-origin"

// FreshProfile is the profile of a new cluster unless the template sets
// one, as openbao-operator creates fresh targets.
const FreshProfile = "Development"

// The executor's login into a new cluster, which the function adds to the
// template's self-initialisation: a JWT auth role bound to the executor's
// ServiceAccount, with a policy that allows the restore and nothing else.
const (
	// FreshJWTRole is the JWT auth role (at auth/jwt, the mount that
	// OIDC self-initialisation configures).
	FreshJWTRole = "openbao-restore"
	// FreshPolicy is the ACL policy the role grants.
	FreshPolicy = "openbao-restore"
	// FreshPolicyHCL allows what a fresh-target restore calls: the
	// snapshot-force endpoint (a new cluster always takes another
	// identity) and the capability check of it.
	FreshPolicyHCL = `path "sys/storage/raft/snapshot-force" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
`
	// FreshTokenTTL is the lifetime of the executor's token.
	FreshTokenTTL = "15m"
)

// Why a fresh target failed before the restore (status reasons).
const (
	// ReasonTargetBootstrapTimeout: the new cluster did not come up
	// (initialised, the expected version) within the bootstrap deadline.
	ReasonTargetBootstrapTimeout = "TargetBootstrapTimeout"
	// ReasonTargetConflict: a cluster of that name exists and is not this
	// restore's.
	ReasonTargetConflict = "TargetConflict"
)

// DefaultBootstrapTimeout is how long a new cluster may take to come up,
// openbao-operator's own deadline.
const DefaultBootstrapTimeout = 30 * time.Minute

// EnvFreshTarget tells the executor the cluster is new: its cluster ID
// must differ from the snapshot's before the restore, and match it (or
// have changed) after.
const EnvFreshTarget = "RESTORE_FRESH_TARGET"

// MsgTargetConflict: a fresh-target restore names a cluster that exists
// and is not its own.
func MsgTargetConflict(cluster, namespace string) string {
	return fmt.Sprintf("spec.cluster: OpenBaoCluster %s already exists in namespace %s and was not created by this restore: a restore with spec.clusterTemplate creates its cluster and never restores into another; name a new cluster in spec.cluster, or remove clusterTemplate to restore into %s", cluster, namespace, cluster)
}

// FinalizerRetainTarget holds a Retained fresh-target restore's XR while it
// is deleted, until its new cluster no longer has the XR as its owner, so
// that the garbage collector leaves the cluster alone.
const FinalizerRetainTarget = Group + "/retain-target"
