package schemas

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The names every part of the system agrees on. The function composes
// objects with them, the reconciler watches them, and the executor reads them;
// none of those packages defines its own copy.

const (
	// Group of the restore claim (OpenBaoRestore) and the legacy XR
	// (XOpenBaoRestore). It is this project's own, so it can sit beside
	// openbao-operator's openbao.org CRDs.
	Group   = "restore.openbao-restore.io"
	Version = "v1alpha1"

	ClaimKind = "OpenBaoRestore"
	XRKind    = "XOpenBaoRestore"

	// LockRequestKind is the namespaced request for a cluster's operation
	// lock. The function composes it; the reconciler answers it; the
	// executor writes its submission record on it.
	LockRequestKind     = "LockRequest"
	LockRequestResource = "lockrequests"

	// The OpenBaoCluster of openbao-operator, whose status.operationLock is
	// the lock itself.
	ClusterGroup    = "openbao.org"
	ClusterVersion  = "v1alpha1"
	ClusterKind     = "OpenBaoCluster"
	ClusterResource = "openbaoclusters"

	// OperationRestore is the value of operationLock.operation for a restore.
	OperationRestore = "Restore"

	// HolderPrefix starts operationLock.holder for a restore, as in
	// openbao-operator ("openbaorestore/<name>"). We append the restore's UID
	// so a recreated restore with the same name never inherits a lock.
	HolderPrefix = "openbaorestore/"

	// AcknowledgeAnnotation resolves an Unknown restore: "<uid>/Resume" or
	// "<uid>/Abandon", with openbao-operator's name and values.
	AcknowledgeAnnotation = "openbao.org/restore-acknowledge"
)

// Holder is the operationLock.holder of the restore with this name and UID.
func Holder(name, uid string) string { return HolderPrefix + name + "/" + uid }

// VoterStatefulSet is the StatefulSet of an OpenBaoCluster's voters, as
// openbao-operator names it: the cluster's name, or
// <cluster>-<status.blueGreen.blueRevision> while a blue/green upgrade
// has moved them.
func VoterStatefulSet(cluster, blueRevision string) string {
	if blueRevision == "" {
		return cluster
	}
	return cluster + "-" + blueRevision
}

// ReadReplicaStatefulSet is the StatefulSet of an OpenBaoCluster's read
// replicas (non-voters), if it has any.
func ReadReplicaStatefulSet(cluster string) string { return cluster + "-read" }

// Phases of a restore, as in openbao-operator.
const (
	PhasePending    = "Pending"
	PhaseValidating = "Validating"
	PhaseRunning    = "Running"
	PhaseCompleted  = "Completed"
	PhaseFailed     = "Failed"
	PhaseUnknown    = "Unknown"
)

// States of a lock request.
const (
	LockWaiting  = "Waiting"
	LockHeld     = "Held"
	LockReleased = "Released"
)

// Executor exit codes. 0 to 6 keep bao-backup's meanings, so our Job spec and
// openbao-operator's image stay interchangeable; 10 and 11 are ours. The
// Job's podFailurePolicy retries only ExitTransient: every other failure
// fails the Job at once, because it is either permanent or may have reached
// OpenBao.
const (
	ExitOK           = 0
	ExitConfig       = 1  // a missing or invalid setting or file
	ExitAuth         = 2  // login failed, or the token may not restore
	ExitLeader       = 3  // no leader could be found
	ExitSnapshot     = 4  // the snapshot is missing, empty, too large, or OpenBao refused it
	ExitStorage      = 5  // the object store refused access
	ExitVerification = 6  // size, digest or cluster pins do not match
	ExitTransient    = 10 // a transient failure; nothing was submitted; safe to retry
	ExitUnconfirmed  = 11 // submitted (or a submission was already recorded); outcome unconfirmed; never retry
)

// Environment of the executor: bao-backup's restore mode contract, so that
// openbao-operator's backup image also works as our executor, plus ours.
const (
	EnvExecutorMode        = "EXECUTOR_MODE" // ModeRestore or ModeStepDown
	EnvStepDownPod         = "RESTORE_STEP_DOWN_POD"
	EnvClusterName         = "CLUSTER_NAME"
	EnvStatefulSetName     = "STATEFULSET_NAME"
	EnvClusterNamespace    = "CLUSTER_NAMESPACE"
	EnvClusterReplicas     = "CLUSTER_REPLICAS"
	EnvProvider            = "BACKUP_PROVIDER"
	EnvEndpoint            = "BACKUP_ENDPOINT"
	EnvBucket              = "BACKUP_BUCKET"
	EnvRestoreKey          = "RESTORE_KEY"
	EnvRestoreBucket       = "RESTORE_BUCKET"
	EnvRestoreEndpoint     = "RESTORE_ENDPOINT"
	EnvRestoreForce        = "RESTORE_FORCE"
	EnvInsecureSkipVerify  = "BACKUP_INSECURE_SKIP_VERIFY"
	EnvRegion              = "BACKUP_REGION"
	EnvUsePathStyle        = "BACKUP_USE_PATH_STYLE"
	EnvRestoreRegion       = "RESTORE_REGION"
	EnvRestoreUsePathStyle = "RESTORE_USE_PATH_STYLE"
	EnvGCSProject          = "BACKUP_GCS_PROJECT"
	EnvAzureAccount        = "BACKUP_AZURE_STORAGE_ACCOUNT"
	EnvAzureContainer      = "BACKUP_AZURE_CONTAINER"
	EnvAWSRoleARN          = "AWS_ROLE_ARN"
	EnvAWSWebIdentityFile  = "AWS_WEB_IDENTITY_TOKEN_FILE"
	EnvAuthMethod          = "BACKUP_AUTH_METHOD" // "jwt" or "token"
	EnvJWTAuthRole         = "BACKUP_JWT_AUTH_ROLE"
	EnvTLSServerName       = "TLS_SERVER_NAME"
	EnvTLSCAPath           = "TLS_CA_PATH"
	EnvRestoreRequestName  = "RESTORE_REQUEST_NAME"
	EnvRestoreRequestUID   = "RESTORE_REQUEST_UID"
	EnvPodName             = "POD_NAME"
	EnvPodUID              = "POD_UID"

	// Ours: pins and the lock request the executor records its submission on.
	EnvExpectedDigest    = "RESTORE_EXPECTED_DIGEST"
	EnvExpectedSize      = "RESTORE_EXPECTED_SIZE"
	EnvExpectedClusterID = "RESTORE_EXPECTED_CLUSTER_ID"
	EnvExpectedVersion   = "RESTORE_EXPECTED_VERSION"
	EnvPathPrefix        = "BACKUP_PATH_PREFIX"
	// EnvNewestUnderPrefix: no key; restore the newest object under the
	// path prefix (safety snapshots aside), chosen once.
	EnvNewestUnderPrefix = "RESTORE_NEWEST_UNDER_PREFIX"
	EnvLockRequestName   = "RESTORE_LOCK_REQUEST_NAME"
	EnvOpenBaoAddr       = "OPENBAO_ADDR" // direct address override (tests, simple setups)
	// EnvAnswerTimeout bounds the wait for OpenBao's answer once the whole
	// snapshot is sent (a Go duration or whole seconds; default 5m): a node
	// that takes the body and stalls ends the run with exit 11 and a reason,
	// long before the Job's deadline would end it without one.
	EnvAnswerTimeout = "RESTORE_ANSWER_TIMEOUT"
	// EnvDryRun=true runs every check of a restore, the whole object
	// through the size, digest and archive checks included, and sends
	// nothing: no lock request, no submission record, no POST.
	EnvDryRun = "RESTORE_DRY_RUN"
	// EnvSafetySnapshot is Required, BestEffort or Off (unset: Off, as
	// bao-backup has none): whether the executor first streams the
	// cluster's current state into the object store (SafetySnapshotKey).
	EnvSafetySnapshot = "RESTORE_SAFETY_SNAPSHOT"
)

// The safety snapshot modes (spec.safetySnapshot, the Input's default).
const (
	// SafetyRequired: no snapshot, no restore.
	SafetyRequired = "Required"
	// SafetyBestEffort: the restore goes on without one, and says so.
	SafetyBestEffort = "BestEffort"
	// SafetyOff: none is taken.
	SafetyOff = "Off"
)

// SafetySnapshotKey is where a restore's safety snapshot is stored: under
// the target's path prefix, by namespace, cluster and restore, with the
// time (UTC, to the second) so that a retried Job never overwrites one.
func SafetySnapshotKey(pathPrefix, namespace, cluster, restore string, at time.Time) string {
	key := fmt.Sprintf("safety/%s/%s/%s-%s.snap", namespace, cluster, restore, at.UTC().Format("20060102T150405Z"))
	if p := strings.Trim(pathPrefix, "/"); p != "" {
		key = p + "/" + key
	}
	return key
}

// Mount paths in the restore pod, as in openbao-operator.
const (
	MountTLSCA       = "/etc/bao/tls"
	MountJWT         = "/var/run/secrets/tokens"
	FileJWT          = "/var/run/secrets/tokens/openbao-token"
	MountToken       = "/etc/bao/restore"
	FileToken        = "/etc/bao/restore/token"
	MountCredentials = "/etc/bao/backup/credentials"
	MountScratch     = "/tmp"
	// The Kubernetes API token the executor uses to record its submission.
	MountKubeToken = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// Keys in the storage credentials Secret, as in openbao-operator.
const (
	KeyAccessKeyID     = "accessKeyId"
	KeySecretAccessKey = "secretAccessKey"
	KeySessionToken    = "sessionToken"
	KeyRegion          = "region"
	KeyCACert          = "caCert"
	KeyGCSCredentials  = "credentials.json"
	KeyAzureAccountKey = "accountKey"
	KeyAzureConnString = "connectionString"
	KeyToken           = "token"
)

// MaxSnapshotSize is the largest snapshot accepted (8 GiB).
const MaxSnapshotSize = 8 << 30

// Terminal reports whether a restore's phase is final: Completed and Failed
// never change again.
func Terminal(phase string) bool {
	return phase == PhaseCompleted || phase == PhaseFailed
}

// DefaultJWTAudience is the audience of the executor's projected token for
// a JWT login when the cluster sets none (spec.selfInit.oidc.audience):
// openbao-operator's default, which its self-init writes into the JWT auth
// role and its own restore Job requests.
const DefaultJWTAudience = "openbao-internal"

// Labels. Ours are under Group; the others are the names other systems
// give, read here so that no package spells them itself.
const (
	// LabelRestore is on everything a restore composes, the Job's pods
	// included: the name of the restore's request.
	LabelRestore = Group + "/restore"
	// LabelRestoreCluster is on everything a restore composes: the
	// OpenBaoCluster it restores.
	LabelRestoreCluster = Group + "/cluster"
	// LabelJobRole marks the step-down Job (JobRoleStepDown) apart from
	// the restore Job, which has no such label.
	LabelJobRole    = Group + "/job-role"
	JobRoleStepDown = "step-down"
	// LabelComposite is Crossplane's label naming a composed object's XR.
	LabelComposite = "crossplane.io/composite"
	// LabelOperatorCluster is openbao-operator's label on an
	// OpenBaoCluster's StatefulSets and pods, naming the cluster.
	LabelOperatorCluster = "openbao.org/cluster"
)

// Condition types on the XR and the claim, by owner (docs/architecture.md).
const (
	// The function's.
	CondSpecValid = "SpecValid"
	CondComposed  = "Composed"
	// The reconciler's.
	CondRestored = "Restored"
	CondLockHeld = "LockHeld"
	// CondIdentityChanged is True when the restore replaced the cluster's
	// identity (cluster_id) while spec.expectedClusterID pinned none.
	CondIdentityChanged = "IdentityChanged"
	// CondOverride is on the XR and on the LockRequest when the request
	// cleared a foreign lock.
	CondOverride = "OperationLockOverride"
	// CondLockTaken is on the LockRequest and the XR when a writer that
	// does not compare-and-swap took the lock from the request while it
	// held it; False once the request took it back.
	CondLockTaken = "LockTaken"
	// CondDryRun is on a dry run's XR: True when every check passed
	// (reason Passed), False naming the check that failed (CheckFailed).
	CondDryRun = "DryRun"
	// CondRestartBlocked is on the XR while the API refuses the eviction
	// of the next OpenBao pod to restart (RBAC, admission, the disruption
	// budget); False once that pod was evicted.
	CondRestartBlocked = "RestartBlocked"
	// Crossplane's: False while its watch circuit breaker has stopped
	// following the XR closely.
	CondResponsive = "Responsive"
	// openbao-operator's on the OpenBaoCluster: True during a rolling or
	// blue/green upgrade (as its restore manager reads it).
	CondUpgrading = "Upgrading"
)

// StageFinished is the function's status.plan.stage once it has seen a
// terminal phase: the reconciler stops nudging the XR then.
const StageFinished = "Finished"

// Acknowledgements of an Unknown restore, the part of AcknowledgeAnnotation's
// value after "<uid>/".
const (
	AckResume  = "Resume"
	AckAbandon = "Abandon"
)

// AckHint says how to end the Unknown restore with this UID: resume (for
// the reason given) or abandon.
func AckHint(uid, resume string) string {
	return "annotate the XR or the claim with " + AcknowledgeAnnotation + "=" + uid + "/" + AckResume + " " + resume +
		", or " + AcknowledgeAnnotation + "=" + uid + "/" + AckAbandon + " to release the lock and end the restore as Failed"
}

// MsgNeedsClaim is the violation of a cluster-scoped XR made without a claim.
// SnapshotRef names a snapshot and pins it: openbao-operator's
// OpenBaoCluster.status.backup.latestSnapshot, and the function's choice in
// the XR's status.plan.snapshot when spec.source.key is unset.
type SnapshotRef struct {
	Key       string `json:"key"`
	Digest    string `json:"digest,omitempty"`
	Size      int64  `json:"size,omitempty"`
	ClusterID string `json:"clusterID,omitempty"`
	Version   string `json:"version,omitempty"`
}

// MsgNoSnapshot is the refusal of a restore with no key of a cluster that
// reports no backup.
func MsgNoSnapshot(cluster string) string {
	return fmt.Sprintf("spec.source.key is not set and OpenBaoCluster %s reports no status.backup.latestSnapshot: set spec.source.key to the snapshot's object key, or spec.source.target.pathPrefix to restore the newest object under it, or wait for the cluster's first backup", cluster)
}

const MsgNeedsClaim = "a cluster-scoped XOpenBaoRestore needs a claim: create an OpenBaoRestore in the OpenBaoCluster's namespace instead"

// The XR kinds: the legacy cluster-scoped XR of claims, and the namespaced
// XR of Crossplane v2.
var (
	LegacyXR     = schema.GroupVersionKind{Group: Group, Version: Version, Kind: XRKind}
	NamespacedXR = schema.GroupVersionKind{Group: "ns." + Group, Version: Version, Kind: ClaimKind}
	XRs          = []schema.GroupVersionKind{LegacyXR, NamespacedXR}
	// ClusterGVK is openbao-operator's OpenBaoCluster, which we read and
	// write as unstructured objects (we hold no Go types of the operator).
	ClusterGVK = schema.GroupVersionKind{Group: ClusterGroup, Version: ClusterVersion, Kind: ClusterKind}
)
