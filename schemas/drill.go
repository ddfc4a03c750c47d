package schemas

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DrillSpec is an OpenBaoRestoreDrill's spec after validation, with every
// default applied. It mirrors #DrillSpec in drill.cue.
type DrillSpec struct {
	Source                 DrillSource    `json:"source"`
	Schedule               string         `json:"schedule,omitempty"`
	EverySuccessfulBackups int64          `json:"everySuccessfulBackups,omitempty"`
	ClusterTemplate        map[string]any `json:"clusterTemplate"`
	CleanupAfterSeconds    int64          `json:"cleanupAfterSeconds"`
	Suspend                bool           `json:"suspend"`
	HistoryLimit           int64          `json:"historyLimit"`
	ReadPaths              []string       `json:"readPaths,omitempty"`
	TokenSecretRef         *SecretRef     `json:"tokenSecretRef,omitempty"`
}

// DrillSource is whose newest backup a drill restores, and where it is.
type DrillSource struct {
	Cluster string `json:"cluster"`
	Target  Target `json:"target"`
}

// Version is the template's OpenBao version.
func (d *DrillSpec) Version() string { v, _ := d.ClusterTemplate["version"].(string); return v }

// cronParser reads 5-field cron expressions, as Kubernetes CronJobs do.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Next is the first scheduled time after t (UTC); zero without a schedule.
func (d *DrillSpec) Next(t time.Time) time.Time {
	s, err := cronParser.Parse(d.Schedule)
	if d.Schedule == "" || err != nil {
		return time.Time{}
	}
	return s.Next(t.UTC())
}

// ValidateDrill checks a drill XR's spec (Crossplane's own fields are
// ignored) against the contract and the policy, as Validate does a
// restore's, and parses its schedule.
func ValidateDrill(spec map[string]any, p Policy) (*DrillSpec, []Violation, error) {
	mu.Lock()
	defer mu.Unlock()
	in, _ := normalize(spec).(map[string]any)
	if in == nil {
		in = map[string]any{}
	}
	c, err := acquire()
	if err != nil {
		return nil, nil, err
	}
	for _, f := range c.crossplane {
		delete(in, f)
	}
	key, keyed := cacheKey(map[string]any{"drill": in}, p)
	if keyed {
		if r, ok := results.Get(key); ok {
			return r.(drillResult).spec, r.(drillResult).vs, nil
		}
	}
	c.uses++
	out := &DrillSpec{}
	vs, err := c.evaluate(c.drill, in, p, nil, out)
	if err != nil {
		return nil, nil, err
	}
	if len(vs) == 0 && out.Schedule != "" {
		if _, err := cronParser.Parse(out.Schedule); err != nil {
			vs = []Violation{{Path: "spec.schedule", Message: fmt.Sprintf("spec.schedule %q is not a cron schedule (%v): write 5 fields, minute hour day-of-month month day-of-week, e.g. \"0 3 * * 0\" (UTC)", out.Schedule, strings.TrimPrefix(err.Error(), "failed to parse "))}}
		}
	}
	if len(vs) > 0 {
		out = nil
	}
	if keyed {
		results.Add(key, drillResult{spec: out, vs: vs})
	}
	return out, vs, nil
}

type drillResult struct {
	spec *DrillSpec
	vs   []Violation
}

// The drill's kinds: a claim (OpenBaoRestoreDrill) of a legacy XR
// (XOpenBaoRestoreDrill), and the namespaced XR of Crossplane v2.
const (
	DrillClaimKind = "OpenBaoRestoreDrill"
	DrillXRKind    = "XOpenBaoRestoreDrill"
)

var (
	LegacyDrillXR     = schema.GroupVersionKind{Group: Group, Version: Version, Kind: DrillXRKind}
	NamespacedDrillXR = schema.GroupVersionKind{Group: "ns." + Group, Version: Version, Kind: DrillClaimKind}
	DrillXRs          = []schema.GroupVersionKind{LegacyDrillXR, NamespacedDrillXR}
)

// IsDrill reports a drill's XR kind.
func IsDrill(kind string) bool { return kind == DrillXRKind || kind == DrillClaimKind }

// The drill's runs: each is an OpenBaoRestore claim in the drill's
// namespace, named by RunName, labelled with the drill and the run.
const (
	// LabelDrill is on a drill's runs and their check Jobs: the drill's
	// name as users know it.
	LabelDrill = Group + "/drill"
	// LabelDrillRun is the run's number.
	LabelDrillRun = Group + "/drill-run"
	// AnnotationRunNow on a drill starts a run now, once per value.
	AnnotationRunNow = Group + "/run-now"
	// ModeReadCheck is the executor's mode that reads a drill's paths
	// from the restored cluster (EnvReadPaths).
	ModeReadCheck = "read-check"
	// EnvReadPaths are the paths to read, comma-separated.
	EnvReadPaths = "RESTORE_READ_PATHS"
	// JobRoleReadCheck marks a drill's check Job (LabelJobRole).
	JobRoleReadCheck = "read-check"
	// CondPassed is the drill's condition: the last run passed.
	CondPassed = "Passed"
)

// The reasons of a drill's runs and of its Passed condition: the anchor's
// and ours (ReadCheckFailed, RestoreFailed, VersionMismatch).
const (
	DrillPassed               = "Passed"
	DrillRunning              = "Running"
	DrillNoCompatibleSnapshot = "NoCompatibleSnapshot"
	DrillVersionMismatch      = "VersionMismatch"
	DrillRestoreFailed        = "RestoreFailed"
	DrillReadCheckFailed      = "ReadCheckFailed"
	DrillInvalidSchedule      = "InvalidSchedule"
)

// RunName is the name of a drill's run number n: its claim and its new
// cluster. The cluster's pods are <RunName>-<i>, so it stays short.
func RunName(drill string, n int64) string {
	s := fmt.Sprintf("-run-%d", n)
	if len(drill)+len(s) > 52 {
		drill = strings.TrimRight(drill[:52-len(s)], "-.")
	}
	return drill + s
}
