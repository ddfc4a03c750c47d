// Package restart is the follow-through after a restore: every OpenBao pod
// of the cluster is restarted, one at a time, standbys first and the leader
// last, each behind health gates. Step is the pure decision; Gatherer reads
// the members and their health; Evicter carries out a recorded deletion.
package restart

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// OpenBao can keep stale in-memory
// state after a Raft restore, so every pod of the cluster is restarted, one
// at a time, standbys first and the leader last, each behind health gates.
//
// Crash safety rests on one rule: a pod's eviction is recorded in
// status.restart (its name and UID) before it is carried out, and is
// carried out with that UID as a precondition. A restarted reconciler finds
// the record and either finishes that eviction (the old pod is still there)
// or waits for the replacement; it can never evict a replacement, and a
// pod name with a record is never chosen again.

// Event is a Kubernetes event to emit about the restore.
type Event struct {
	Warning         bool
	Reason, Message string
}

// Restart is the progress of the pod restarts, kept in status.restart
// (its schema: hack/genxrd).
type Restart struct {
	// StartedAt is when the restart began, or was resumed.
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// Pods are the pods deleted so far, in order.
	Pods []RestartedPod `json:"pods"`
	// CompletedAt is when every pod was back and healthy.
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
	// Acknowledged is the last acknowledgement acted on, so that an
	// annotation left in place resumes only once.
	Acknowledged string `json:"acknowledged,omitempty"`
	// StepDown is the leader's step-down before its restart, once asked.
	StepDown *StepDown `json:"stepDown,omitempty"`
}

// RestartedPod is one recorded deletion.
type RestartedPod struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
	// Leader says the pod was the active node when the restart reached
	// it (a leader that then stepped down included).
	Leader    bool         `json:"leader"`
	DeletedAt *metav1.Time `json:"deletedAt,omitempty"`
	// HealthyAt is when its replacement passed the gates.
	HealthyAt *metav1.Time `json:"healthyAt,omitempty"`
}

// Members is what the restart sees of the cluster's OpenBao pods.
type Members struct {
	// StatefulSet is the voters' StatefulSet.
	StatefulSet string
	// Missing: the voters' StatefulSet does not exist.
	Missing bool
	// ReadReplicas is the read replicas' StatefulSet, "" if there is none.
	ReadReplicas string
	// Replicas is the desired replica count of both StatefulSets.
	Replicas int
	Pods     []Member
	// Refused says why the API refused the last eviction of the pending
	// pod (RBAC, admission, the disruption budget), and RefusedReason is
	// the Refusal's reason; "" if it did not.
	Refused, RefusedReason string
	// StepDown is the step-down Job's report, nil until it ends.
	StepDown *StepDownReport
}

// Member is one pod of the StatefulSets and its health.
type Member struct {
	Name, UID, ResourceVersion, IP string
	Ordinal                        int
	Ready, Terminating             bool
	// ReadReplica: the pod is a read replica, not a voter.
	ReadReplica bool
	Health      Health
}

// Health is what OpenBao's unauthenticated sys/health said.
type Health struct {
	// Err says why the endpoint did not answer; empty when it did.
	Err                          string
	Initialized, Sealed, Standby bool
}

// Timeouts bound each wait of the restart.
type Timeouts struct {
	// Gate bounds any one wait: for a replacement to be Ready and
	// healthy, or for the cluster to be healthy before the next deletion.
	Gate time.Duration
	// Sealed bounds the wait on a sealed pod, which an auto-unseal opens
	// within seconds and a Shamir seal never opens by itself.
	Sealed time.Duration
	// StepDown bounds the wait for the leader's step-down, after which
	// the leader is restarted anyway; zero asks for no step-down.
	StepDown time.Duration
}

// slowWait is how long a restart waits before its message gives the
// reason of the wait.
const slowWait = 15 * time.Second

// DefaultTimeouts are the reconciler's defaults (its flags).
var DefaultTimeouts = Timeouts{Gate: 5 * time.Minute, Sealed: time.Minute, StepDown: 2 * time.Minute}

func (r *Restart) pod(name string) *RestartedPod {
	for i := range r.Pods {
		if r.Pods[i].Name == name {
			return &r.Pods[i]
		}
	}
	return nil
}

// Pending is the recorded deletion whose replacement has not yet passed
// the gates, if any: the reconciler deletes its pod while a pod with the
// recorded UID still exists.
func (r *Restart) Pending() *RestartedPod {
	if r == nil {
		return nil
	}
	for i := range r.Pods {
		if r.Pods[i].HealthyAt == nil {
			return &r.Pods[i]
		}
	}
	return nil
}

// AwaitsEviction reports whether the recorded deletion of the pending pod
// is still to be carried out: the pod with the recorded UID is there and
// not yet terminating.
func (r *Restart) AwaitsEviction(m *Members) bool {
	e := r.Pending()
	if e == nil || m == nil {
		return false
	}
	p := m.Pod(e.Name)
	return p != nil && p.UID == e.UID && !p.Terminating
}

// since is when the current wait began: the last step taken.
func (r *Restart) since() time.Time {
	var t time.Time
	later := func(p *metav1.Time) {
		if p != nil && p.After(t) {
			t = p.Time
		}
	}
	later(r.StartedAt)
	for _, p := range r.Pods {
		later(p.DeletedAt)
		later(p.HealthyAt)
	}
	return t
}

// Pod is the member of that name, nil if none.
func (m *Members) Pod(name string) *Member {
	for i := range m.Pods {
		if m.Pods[i].Name == name {
			return &m.Pods[i]
		}
	}
	return nil
}

// WaitsOnHealth says whether the restart can only go on after a change that
// no watch reports: a Ready pod's OpenBao not answering, uninitialized or
// sealed, or no active node among healthy pods. Everything else it waits
// for (a pod deleted, replaced, Ready) is a pod event.
func (m *Members) WaitsOnHealth() bool {
	if m == nil {
		return true
	}
	ready, active := 0, false
	for i := range m.Pods {
		p := &m.Pods[i]
		if !p.Ready || p.Terminating {
			continue
		}
		if why, _ := p.gate(); why != "" {
			return true
		}
		ready++
		active = active || !p.Health.Standby
	}
	return ready > 0 && !active
}

// gate says why a pod is not yet serving, "" when it is, and whether the
// reason is a seal.
func (p *Member) gate() (why string, sealed bool) {
	switch {
	case p.Terminating:
		return fmt.Sprintf("pod %s is terminating", p.Name), false
	case !p.Ready:
		return fmt.Sprintf("pod %s is not Ready", p.Name), false
	case p.Health.Err != "":
		return fmt.Sprintf("pod %s's health endpoint does not answer (%s)", p.Name, p.Health.Err), false
	case !p.Health.Initialized:
		return fmt.Sprintf("pod %s's OpenBao is not initialized", p.Name), false
	case p.Health.Sealed:
		return fmt.Sprintf("pod %s's OpenBao is sealed", p.Name), true
	}
	return "", false
}

// Step takes the restart as far as the facts allow: it marks a
// replacement healthy, or records the next pod to delete. It returns the
// new progress, the outcome (Running while in progress, Completed, or
// Unknown when a gate timed out), a message and the events of the step.
func Step(cur Restart, m *Members, uid string, to Timeouts, now time.Time) (Restart, string, string, []Event) {
	r := cur
	r.Pods = slices.Clone(cur.Pods)
	if cur.StepDown != nil {
		sd := *cur.StepDown
		r.StepDown = &sd
	}
	if m == nil {
		return r, schemas.PhaseRunning, "reading the cluster's pods", nil
	}
	var evs []Event
	stuck := func(why string, sealed bool) (Restart, string, string, []Event) {
		waited := now.Sub(r.since())
		limit := to.Gate
		if sealed && to.Sealed < limit {
			limit = to.Sealed
		}
		if waited >= limit {
			return r, schemas.PhaseUnknown, stuckMessage(why, sealed, waited, uid), evs
		}
		// Every write of the XR's status is a watch event for Crossplane,
		// whose circuit breaker stops reconciling an XR that gets too many
		// (v2.4: a burst of 50, then one every 2 s). So the message
		// changes with each step, not with each passing state of a pod; the
		// reason appears only once a wait is long enough to interest a
		// person.
		msg := fmt.Sprintf("restarting the OpenBao pods one by one (%d of %d done): ", done(r), max(m.Replicas, len(r.Pods)))
		if e := r.Pending(); e != nil {
			msg += fmt.Sprintf("waiting for pod %s to come back Ready, initialized and unsealed", e.Name)
		} else {
			msg += "waiting for the cluster to be healthy before the next pod"
		}
		if waited >= slowWait || m.Refused != "" {
			// A refusal needs a person now, not in 15 s.
			msg += " (now: " + why + ")"
		}
		return r, schemas.PhaseRunning, msg, evs
	}
	if m.Missing {
		return stuck(fmt.Sprintf("the cluster's StatefulSet %s does not exist", m.StatefulSet), false)
	}
	if e := r.Pending(); e != nil {
		p := m.Pod(e.Name)
		switch {
		case p == nil:
			return stuck(fmt.Sprintf("the StatefulSet has not yet recreated pod %s", e.Name), false)
		case p.UID == e.UID && m.Refused != "":
			return stuck(m.Refused, false)
		case p.UID == e.UID:
			return stuck(fmt.Sprintf("pod %s (uid %s) is being deleted", e.Name, e.UID), false)
		}
		if why, sealed := p.gate(); why != "" {
			return stuck(why, sealed)
		}
		t := metav1.NewTime(now)
		r.pod(e.Name).HealthyAt = &t
		evs = append(evs, Event{Reason: "PodRestarted", Message: fmt.Sprintf("pod %s was replaced and is Ready, initialized and unsealed", e.Name)})
	}
	// Before each deletion the whole cluster must be serving, with one
	// leader: deleting a pod of an unhealthy cluster could cost quorum.
	if len(m.Pods) < m.Replicas {
		return stuck(fmt.Sprintf("%d of %d pods exist", len(m.Pods), m.Replicas), false)
	}
	if sd := r.Asked(); sd != nil {
		if ev, ended := endStepDown(sd, m.StepDown, to.StepDown, now); ended {
			evs = append(evs, ev)
		}
	}
	var leaders []string
	for i := range m.Pods {
		if why, sealed := m.Pods[i].gate(); why != "" {
			return stuck(why, sealed)
		}
		if !m.Pods[i].Health.Standby {
			leaders = append(leaders, m.Pods[i].Name)
		}
	}
	if len(leaders) != 1 {
		return stuck(fmt.Sprintf("the cluster has %d active nodes (%s), not one", len(leaders), strings.Join(leaders, ", ")), false)
	}
	// As openbao-operator orders its own restart: standby voters by
	// ordinal, then read replicas, then the leader.
	order := slices.Clone(m.Pods)
	rank := func(p Member) int {
		switch {
		case !p.Health.Standby:
			return 2
		case p.ReadReplica:
			return 1
		}
		return 0
	}
	slices.SortFunc(order, func(a, b Member) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return a.Ordinal - b.Ordinal
	})
	for _, p := range order {
		if r.pod(p.Name) != nil {
			continue
		}
		if !p.Health.Standby && to.StepDown > 0 && voters(m) > 1 {
			// The leader steps down first, so that a restarted standby
			// takes over before the leader's pod goes. A lone voter (a
			// fresh target's default) has no standby to take over.
			if r.StepDown == nil {
				t := metav1.NewTime(now)
				r.StepDown = &StepDown{Pod: p.Name, RequestedAt: &t}
				msg := fmt.Sprintf("restarting the OpenBao pods one by one, standbys first: asking the leader %s to step down before its restart (%d of %d)", p.Name, len(r.Pods)+1, len(m.Pods))
				evs = append(evs, Event{Reason: "LeaderStepDown", Message: msg})
				return r, schemas.PhaseRunning, msg, evs
			}
			if r.StepDown.EndedAt == nil {
				return r, schemas.PhaseRunning, fmt.Sprintf("restarting the OpenBao pods one by one (%d of %d done): waiting for the leader %s to step down", done(r), len(m.Pods), p.Name), evs
			}
		}
		t := metav1.NewTime(now)
		// The leader that stepped down is still the leader's restart.
		leader := !p.Health.Standby || r.StepDown != nil && r.StepDown.Pod == p.Name
		r.Pods = append(r.Pods, RestartedPod{Name: p.Name, UID: p.UID, Leader: leader, DeletedAt: &t})
		role := "standby"
		switch {
		case leader && p.Health.Standby:
			role = "the leader, stepped down"
		case leader:
			role = "leader"
		case p.ReadReplica:
			role = "read replica"
		}
		msg := fmt.Sprintf("restarting the OpenBao pods one by one, standbys first: evicting pod %s (%s), %d of %d", p.Name, role, len(r.Pods), len(m.Pods))
		evs = append(evs, Event{Reason: "RestartingPod", Message: msg})
		return r, schemas.PhaseRunning, msg, evs
	}
	t := metav1.NewTime(now)
	r.CompletedAt = &t
	return r, schemas.PhaseCompleted, fmt.Sprintf("all %d OpenBao pods were restarted (standbys first, the leader last) and are Ready, initialized and unsealed", len(r.Pods)), evs
}

func done(r Restart) int {
	n := 0
	for _, p := range r.Pods {
		if p.HealthyAt != nil {
			n++
		}
	}
	return n
}

func stuckMessage(why string, sealed bool, waited time.Duration, uid string) string {
	what := "find out why (kubectl describe pod, the pod's logs), fix it"
	if sealed {
		what = "unseal it (bao operator unseal; if the snapshot came from another cluster, OpenBao sealed itself and needs that cluster's unseal or recovery keys)"
	}
	return fmt.Sprintf("the snapshot was restored, but the restart of the OpenBao pods stopped after %s because %s; the operation lock stays held. "+
		"To go on: %s, then %s", waited.Round(time.Second), why, what, schemas.AckHint(uid, "to re-run the health gates and finish the restart"))
}

// voters counts the voters among the members.
func voters(m *Members) int {
	n := 0
	for _, p := range m.Pods {
		if !p.ReadReplica {
			n++
		}
	}
	return n
}
