package schemas

// What the executor reports to the reconciler: its termination message and
// the parts of it the reconciler copies into status.

// TerminationMessage is the JSON the executor writes to
// /dev/termination-log for the reconciler. It never holds a secret.
type TerminationMessage struct {
	SnapshotKey  string `json:"snapshotKey,omitempty"`
	SnapshotSize int64  `json:"snapshotSize,omitempty"`
	// SnapshotVersion is the object's version tag (ETag, or the GCS
	// generation) as its HEAD gave it.
	SnapshotVersion string       `json:"snapshotVersion,omitempty"`
	SHA256          string       `json:"sha256,omitempty"`
	Archive         *ArchiveInfo `json:"archive,omitempty"`
	// Safety is the safety snapshot taken (or skipped) before the restore.
	Safety *SafetySnapshot `json:"safety,omitempty"`
	// DryRun is set by a dry run, which sends nothing; Checks is its report.
	DryRun          bool    `json:"dryRun,omitempty"`
	Checks          []Check `json:"checks,omitempty"`
	Endpoint        string  `json:"endpoint,omitempty"`
	Duration        string  `json:"duration,omitempty"`
	Submitted       bool    `json:"submitted"`
	Sealed          *bool   `json:"sealed,omitempty"`
	ClusterIDBefore string  `json:"clusterIDBefore,omitempty"`
	ClusterIDAfter  string  `json:"clusterIDAfter,omitempty"`
	ExitCode        int     `json:"exitCode"`
	Message         string  `json:"message,omitempty"`
	// StepDown is set by a step-down run (EnvExecutorMode=ModeStepDown).
	StepDown *StepDownResult `json:"stepDown,omitempty"`
	// ReadCheck is what a drill's read check found (ModeReadCheck).
	ReadCheck []PathCheck `json:"readCheck,omitempty"`
}

// PathCheck is one path a drill's read check read.
type PathCheck struct {
	Path string `json:"path"`
	OK   bool   `json:"ok"`
	// Message says what was found: the number of keys, or why not.
	Message string `json:"message,omitempty"`
}

// StepDownResult is what a step-down run did: whether the pod it was
// given is no longer the active node, and which node is.
type StepDownResult struct {
	Pod         string `json:"pod"`
	SteppedDown bool   `json:"steppedDown"`
	NewLeader   string `json:"newLeader,omitempty"`
}

// The executor's modes (EnvExecutorMode).
const (
	ModeRestore = "restore"
	// ModeStepDown asks the active node, the pod EnvStepDownPod, to step
	// down (sys/step-down) with the restore's credentials, and waits for
	// another node to take over; it reads no snapshot.
	ModeStepDown = "step-down"
)

// ArchiveInfo is what the executor read from a snapshot archive it checked:
// the Raft metadata of meta.json, the size of the data (state.bin), and
// whether the archive carries the seal's copy of its sums
// (SHA256SUMS.sealed), which only the source cluster's seal can open.
type ArchiveInfo struct {
	ID         string `json:"id,omitempty"`
	Index      uint64 `json:"index,omitempty"`
	Term       uint64 `json:"term,omitempty"`
	StateSize  int64  `json:"stateSize"`
	SealedSums bool   `json:"sealedSums"`
}

// SafetySnapshot is what the executor took of the cluster before the
// restore: the object, its digest and size, and whose state it is.
type SafetySnapshot struct {
	Key       string `json:"key,omitempty"`
	URL       string `json:"url,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Size      int64  `json:"size,omitempty"`
	ClusterID string `json:"clusterID,omitempty"`
	TakenAt   string `json:"takenAt,omitempty"`
	// Duration is how long it took, stream and check (a Go duration).
	Duration string `json:"duration,omitempty"`
	// Skipped says why there is none, when BestEffort went on without it.
	Skipped string `json:"skipped,omitempty"`
}

// The checks of a run, named in a dry run's report (TerminationMessage.Checks)
// in the order they run.
const (
	CheckConfig     = "configuration" // the environment and mounted files
	CheckObject     = "object"        // the object exists (HEAD), with an acceptable size and the size pin
	CheckLeader     = "leader"        // the active OpenBao node answers
	CheckAuth       = "auth"          // the token or JWT login
	CheckCapability = "capability"    // update on the endpoint a restore would use
	CheckClusterPin = "clusterPin"    // the cluster's cluster_id and version pins
	CheckSnapshot   = "snapshot"      // the whole object: size, digest pin and archive
)

// DryRunReport is status.dryRun: what a dry run found, from the executor's
// termination message (the reconciler writes it).
type DryRunReport struct {
	SnapshotKey     string       `json:"snapshotKey,omitempty"`
	SnapshotSize    int64        `json:"snapshotSize,omitempty"`
	SnapshotVersion string       `json:"snapshotVersion,omitempty"`
	SHA256          string       `json:"sha256,omitempty"`
	Endpoint        string       `json:"endpoint,omitempty"`
	ClusterID       string       `json:"clusterID,omitempty"`
	Archive         *ArchiveInfo `json:"archive,omitempty"`
	Checks          []Check      `json:"checks,omitempty"`
}

// Check is one check of a dry run and what it found.
type Check struct {
	Name    string `json:"name"`
	Passed  bool   `json:"passed"`
	Message string `json:"message"`
}
