package restart

import (
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cluster3 is a healthy three-pod cluster whose leader is pod ordinal
// leader; edit changes the pods.
func cluster3(leader int, edit func(ps []Member)) *Members {
	m := &Members{StatefulSet: "prod", Replicas: 3}
	for i := range 3 {
		m.Pods = append(m.Pods, Member{Name: "prod-" + string(rune('0'+i)), UID: "old-" + string(rune('0'+i)), Ordinal: i, Ready: true,
			Health: Health{Initialized: true, Standby: i != leader}})
	}
	if edit != nil {
		edit(m.Pods)
	}
	return m
}

func refused(m *Members, why string) *Members {
	m.Refused, m.RefusedReason = why, ReasonForbidden
	return m
}

func at(t time.Time) *metav1.Time { mt := metav1.NewTime(t); return &mt }

// noStepDown are the default timeouts without the leader's step-down, for
// tests of the order alone.
var noStepDown = Timeouts{Gate: DefaultTimeouts.Gate, Sealed: DefaultTimeouts.Sealed}

func TestRestartStep(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	to := Timeouts{Gate: time.Minute, Sealed: 10 * time.Second}
	started := Restart{StartedAt: at(t0)}
	deleted1 := Restart{StartedAt: at(t0), Pods: []RestartedPod{{Name: "prod-1", UID: "old-1", DeletedAt: at(t0)}}}
	replaced := func(name string, edit func(*Member)) func([]Member) {
		return func(ps []Member) {
			for i := range ps {
				if ps[i].Name == name {
					ps[i].UID = "new-" + name
					if edit != nil {
						edit(&ps[i])
					}
				}
			}
		}
	}
	standbysDone := Restart{StartedAt: at(t0), Pods: []RestartedPod{
		{Name: "prod-1", UID: "old-1", DeletedAt: at(t0), HealthyAt: at(t0)},
		{Name: "prod-2", UID: "old-2", DeletedAt: at(t0), HealthyAt: at(t0)}}}
	allDone := standbysDone
	allDone.Pods = append(append([]RestartedPod(nil), standbysDone.Pods...), RestartedPod{Name: "prod-0", UID: "old-0", Leader: true, DeletedAt: at(t0), HealthyAt: at(t0)})

	cases := []struct {
		name     string
		cur      Restart
		m        *Members
		after    time.Duration
		phase    string
		msg      []string
		chosen   string // the pod recorded for deletion by this step
		leader   bool
		healthy  string // the pod marked healthy by this step
		complete bool
	}{
		{name: "standby with the lowest ordinal first", cur: started, m: cluster3(0, nil), phase: schemas.PhaseRunning,
			msg: []string{"evicting pod prod-1 (standby), 1 of 3"}, chosen: "prod-1"},
		{name: "the leader's ordinal does not matter", cur: started, m: cluster3(1, nil), phase: schemas.PhaseRunning, chosen: "prod-0"},
		{name: "old pod still there: wait for its deletion", cur: deleted1, m: cluster3(0, nil), phase: schemas.PhaseRunning,
			after: 20 * time.Second, msg: []string{"prod-1 (uid old-1) is being deleted"}},
		{name: "replacement not yet created", cur: deleted1, m: cluster3(0, nil),
			after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"not yet recreated pod prod-1"}},
		{name: "replacement not Ready", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Ready = false })),
			after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"pod prod-1 is not Ready", "0 of 3 done"}},
		{name: "replacement not Ready past the gate timeout", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Ready = false })),
			after: 2 * time.Minute, phase: schemas.PhaseUnknown, msg: []string{"stopped after 2m0s because pod prod-1 is not Ready", "u-1/Resume", "u-1/Abandon", "lock stays held"}},
		{name: "replacement sealed: short wait", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Health.Sealed = true })),
			after: 5 * time.Second, phase: schemas.PhaseRunning, msg: []string{"waiting for pod prod-1 to come back Ready, initialized and unsealed"}},
		{name: "replacement sealed past the sealed timeout", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Health.Sealed = true })),
			after: 11 * time.Second, phase: schemas.PhaseUnknown, msg: []string{"prod-1's OpenBao is sealed", "bao operator unseal", "another cluster"}},
		{name: "replacement not answering", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Health = Health{Err: "connection refused"} })),
			after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"does not answer (connection refused)"}},
		{name: "replacement uninitialized", cur: deleted1, m: cluster3(0, replaced("prod-1", func(p *Member) { p.Health.Initialized = false })),
			after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"not initialized"}},
		{name: "replacement healthy: next standby", cur: deleted1, m: cluster3(0, replaced("prod-1", nil)), phase: schemas.PhaseRunning,
			healthy: "prod-1", chosen: "prod-2", msg: []string{"evicting pod prod-2 (standby), 2 of 3"}},
		{name: "replacement healthy, but another pod is not: wait", cur: deleted1, m: cluster3(0, replaced("prod-1", func(*Member) {})),
			phase: schemas.PhaseRunning, healthy: "prod-1"},
		{name: "standbys done: the leader last", cur: standbysDone, m: cluster3(0, nil), phase: schemas.PhaseRunning,
			chosen: "prod-0", leader: true, msg: []string{"prod-0 (leader), 3 of 3"}},
		{name: "a restarted pod that became leader is not restarted again", cur: standbysDone, m: cluster3(2, nil), phase: schemas.PhaseRunning,
			chosen: "prod-0"},
		{name: "all back: completed", cur: allDone, m: cluster3(1, nil), phase: schemas.PhaseCompleted, complete: true,
			msg: []string{"all 3 OpenBao pods were restarted"}},
		{name: "no leader: wait", cur: started, m: cluster3(-1, nil), after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"0 active nodes"}},
		{name: "a short wait keeps the message of the step", cur: started, m: cluster3(-1, nil), phase: schemas.PhaseRunning,
			msg: []string{"restarting the OpenBao pods one by one (0 of 3 done): waiting for the cluster to be healthy before the next pod"}},
		{name: "two leaders: wait", cur: started, m: cluster3(0, func(ps []Member) { ps[2].Health.Standby = false }), after: 20 * time.Second, phase: schemas.PhaseRunning,
			msg: []string{"2 active nodes (prod-0, prod-2)"}},
		{name: "a pod missing: wait", cur: started, m: cluster3(0, func(ps []Member) {}), phase: schemas.PhaseRunning},
		{name: "StatefulSet missing past the timeout", cur: started, m: &Members{StatefulSet: "prod", Missing: true}, after: time.Hour,
			phase: schemas.PhaseUnknown, msg: []string{"StatefulSet prod does not exist"}},
		{name: "a terminating pod blocks the next deletion", cur: started, m: cluster3(0, func(ps []Member) { ps[2].Terminating = true }),
			after: 20 * time.Second, phase: schemas.PhaseRunning, msg: []string{"prod-2 is terminating"}},
		// Appended last: the index fix-ups below address earlier cases.
		{name: "a refused eviction is said at once", cur: deleted1, m: refused(cluster3(0, nil), "may not evict pod ns/prod-1"),
			phase: schemas.PhaseRunning, msg: []string{"waiting for pod prod-1", "(now: may not evict pod ns/prod-1)"}},
		{name: "a refused eviction past the gate timeout", cur: deleted1, m: refused(cluster3(0, nil), "may not evict pod ns/prod-1"),
			after: 2 * time.Minute, phase: schemas.PhaseUnknown, msg: []string{"because may not evict pod ns/prod-1", "u-1/Resume"}},
		{name: "a refusal no longer matters once the pod went", cur: deleted1, m: refused(cluster3(0, replaced("prod-1", nil)), "may not evict"),
			phase: schemas.PhaseRunning, healthy: "prod-1", chosen: "prod-2"},
	}
	// "replacement not yet created" lacks prod-1; "a pod missing" lacks prod-2.
	cases[3].m.Pods = append(cases[3].m.Pods[:1], cases[3].m.Pods[2])
	cases[18].m.Pods = cases[18].m.Pods[:2]
	// "replacement healthy, but another pod is not" makes prod-2 unready.
	cases[11].m.Pods[2].Ready = false
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(c.cur.Pods)
			r, phase, msg, _ := Step(c.cur, c.m, "u-1", to, t0.Add(c.after))
			if phase != c.phase {
				t.Fatalf("phase %s, want %s (%s)", phase, c.phase, msg)
			}
			for _, s := range c.msg {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
			switch {
			case c.chosen == "" && len(r.Pods) != before:
				t.Errorf("recorded %+v, want no new deletion", r.Pods[before:])
			case c.chosen != "" && (len(r.Pods) != before+1 || r.Pods[before].Name != c.chosen || r.Pods[before].Leader != c.leader):
				t.Errorf("recorded %+v, want %s (leader %v)", r.Pods, c.chosen, c.leader)
			case c.chosen != "" && r.Pods[before].UID != "old-"+c.chosen[len(c.chosen)-1:]:
				t.Errorf("recorded uid %s", r.Pods[before].UID)
			}
			if c.healthy != "" {
				if p := r.pod(c.healthy); p == nil || p.HealthyAt == nil {
					t.Errorf("%s not marked healthy: %+v", c.healthy, r.Pods)
				}
			}
			if (r.CompletedAt != nil) != c.complete {
				t.Errorf("completedAt %v", r.CompletedAt)
			}
			// The input is never changed.
			if len(c.cur.Pods) != before {
				t.Error("input changed")
			}
		})
	}
}

// Every pod is chosen once, standbys first and the leader last, whatever
// the order the pods are listed in.
func TestRestartStepOrderEndToEnd(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := cluster3(1, nil)
	m.Pods[0], m.Pods[2] = m.Pods[2], m.Pods[0]
	r := Restart{StartedAt: at(now)}
	var order []string
	for step := 0; step < 10; step++ {
		var phase string
		r, phase, _, _ = Step(r, m, "u", noStepDown, now)
		if phase == schemas.PhaseCompleted {
			break
		}
		if e := r.Pending(); e != nil {
			order = append(order, e.Name)
			for i := range m.Pods {
				if m.Pods[i].Name == e.Name {
					m.Pods[i].UID = "new"
				}
			}
		}
	}
	if strings.Join(order, ",") != "prod-0,prod-2,prod-1" {
		t.Fatalf("order %v", order)
	}
}

func TestAwaitsEviction(t *testing.T) {
	rs := &Restart{Pods: []RestartedPod{{Name: "prod-1", UID: "old-1"}}}
	for _, c := range []struct {
		name string
		m    *Members
		want bool
	}{
		{"the recorded pod is there", cluster3(0, nil), true},
		{"it is terminating", cluster3(0, func(ps []Member) { ps[1].Terminating = true }), false},
		{"it was replaced", cluster3(0, func(ps []Member) { ps[1].UID = "new-1" }), false},
		{"it is gone", cluster3(0, func(ps []Member) { ps[1].Name = "other" }), false},
		{"no members read", nil, false},
	} {
		if got := rs.AwaitsEviction(c.m); got != c.want {
			t.Errorf("%s: AwaitsEviction = %v, want %v", c.name, got, c.want)
		}
	}
	if (&Restart{}).AwaitsEviction(cluster3(0, nil)) {
		t.Error("a restart with nothing recorded awaits an eviction")
	}
}

// Read replicas restart after the standby voters and before the leader, as
// openbao-operator orders its own restart; the count covers both sets.
func TestReadReplicasBetweenStandbysAndLeader(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := cluster3(0, nil)
	m.ReadReplicas, m.Replicas = "prod-read", 5
	for i := range 2 {
		n := "prod-read-" + string(rune('0'+i))
		m.Pods = append(m.Pods, Member{Name: n, UID: "old-" + n, Ordinal: i, Ready: true, ReadReplica: true,
			Health: Health{Initialized: true, Standby: true}})
	}
	r := Restart{StartedAt: at(t0)}
	var order []string
	for range 5 {
		next, phase, msg, _ := Step(r, m, "u-1", noStepDown, t0)
		if phase != schemas.PhaseRunning {
			t.Fatalf("phase %s (%s), want Running", phase, msg)
		}
		p := next.Pods[len(next.Pods)-1]
		order = append(order, p.Name)
		if strings.HasPrefix(p.Name, "prod-read-") && !strings.Contains(msg, "(read replica)") {
			t.Errorf("message %q does not say it is a read replica", msg)
		}
		// The replacement is back and healthy.
		next.Pods[len(next.Pods)-1].HealthyAt = at(t0)
		r = next
	}
	if want := "prod-1 prod-2 prod-read-0 prod-read-1 prod-0"; strings.Join(order, " ") != want {
		t.Errorf("order %v, want %s", order, want)
	}
	_, phase, msg, _ := Step(r, m, "u-1", noStepDown, t0)
	if phase != schemas.PhaseCompleted || !strings.Contains(msg, "all 5 OpenBao pods") {
		t.Errorf("after the leader: %s %q, want Completed with all 5 pods", phase, msg)
	}

	// A missing read replica counts against the cluster being whole.
	short := cluster3(0, nil)
	short.ReadReplicas, short.Replicas = "prod-read", 4
	_, _, msg, _ = Step(Restart{StartedAt: at(t0.Add(-time.Minute))}, short, "u-1", DefaultTimeouts, t0)
	if !strings.Contains(msg, "3 of 4 pods exist") {
		t.Errorf("message %q, want the missing read replica counted", msg)
	}
}

// The leader steps down before its restart: asked once, when every other
// pod is restarted; waited for; then the old leader, now a standby, is
// restarted and recorded as the leader. A failed or timed-out step-down
// is a Warning, and the leader is restarted anyway; a step-down is never
// asked twice.
func TestLeaderStepsDownFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	to := Timeouts{Gate: time.Minute, Sealed: 10 * time.Second, StepDown: 30 * time.Second}
	standbysDone := Restart{StartedAt: at(t0), Pods: []RestartedPod{
		{Name: "prod-1", UID: "old-1", DeletedAt: at(t0), HealthyAt: at(t0)},
		{Name: "prod-2", UID: "old-2", DeletedAt: at(t0), HealthyAt: at(t0)}}}
	replacedStandbys := func(ps []Member) { ps[1].UID, ps[2].UID = "new-1", "new-2" }

	r, phase, msg, evs := Step(standbysDone, cluster3(0, replacedStandbys), "u", to, t0)
	if phase != schemas.PhaseRunning || r.StepDown == nil || r.StepDown.Pod != "prod-0" || len(r.Pods) != 2 ||
		!strings.Contains(msg, "asking the leader prod-0 to step down") || len(evs) != 1 || evs[0].Reason != "LeaderStepDown" {
		t.Fatalf("at the leader: %s %q %+v %+v, want a step-down asked and nothing evicted", phase, msg, r.StepDown, evs)
	}
	asked := r

	// No report yet: it waits, and asks nothing again.
	r, phase, msg, evs = Step(asked, cluster3(0, replacedStandbys), "u", to, t0.Add(10*time.Second))
	if phase != schemas.PhaseRunning || len(r.Pods) != 2 || r.StepDown.EndedAt != nil || len(evs) != 0 || !strings.Contains(msg, "waiting for the leader prod-0 to step down") {
		t.Fatalf("waiting: %s %q %+v %+v", phase, msg, r.StepDown, evs)
	}

	// It stepped down: prod-1 is active; prod-0, a standby now, goes next,
	// recorded as the leader.
	m := cluster3(1, replacedStandbys)
	m.StepDown = &StepDownReport{SteppedDown: true, NewLeader: "prod-1", Message: "prod-1 is active after 1.2s"}
	r, phase, msg, evs = Step(asked, m, "u", to, t0.Add(2*time.Second))
	if phase != schemas.PhaseRunning || r.StepDown.Outcome != StepDownDone || r.StepDown.NewLeader != "prod-1" || r.StepDown.EndedAt == nil {
		t.Fatalf("stepped down: %s %q %+v", phase, msg, r.StepDown)
	}
	if len(r.Pods) != 3 || r.Pods[2].Name != "prod-0" || !r.Pods[2].Leader || !strings.Contains(msg, "the leader, stepped down") {
		t.Fatalf("after the step-down: %q %+v, want prod-0 evicted as the leader", msg, r.Pods)
	}
	if len(evs) != 2 || evs[0].Reason != "LeaderSteppedDown" || evs[0].Warning || evs[1].Reason != "RestartingPod" {
		t.Errorf("events %+v", evs)
	}
	if asked.StepDown.EndedAt != nil {
		t.Error("the input was changed")
	}

	for _, c := range []struct {
		name    string
		report  *StepDownReport
		at      time.Duration
		outcome string
	}{
		{"the Job failed", &StepDownReport{Message: "permission denied on sys/step-down"}, 2 * time.Second, StepDownFailed},
		{"no report in time", nil, 30 * time.Second, StepDownTimedOut},
	} {
		m := cluster3(0, replacedStandbys)
		m.StepDown = c.report
		r, phase, msg, evs := Step(asked, m, "u", to, t0.Add(c.at))
		if phase != schemas.PhaseRunning || r.StepDown.Outcome != c.outcome || len(r.Pods) != 3 || r.Pods[2].Name != "prod-0" || !r.Pods[2].Leader {
			t.Errorf("%s: %s %q %+v %+v, want %s and the leader evicted", c.name, phase, msg, r.StepDown, r.Pods, c.outcome)
			continue
		}
		if len(evs) == 0 || !evs[0].Warning || evs[0].Reason != "LeaderStepDownFailed" {
			t.Errorf("%s: events %+v, want a Warning first", c.name, evs)
		}
		// Once ended, a leader still active is not asked again.
		r.Pods = r.Pods[:2]
		if r2, _, msg, _ := Step(r, cluster3(0, replacedStandbys), "u", to, t0.Add(time.Minute)); len(r2.Pods) != 3 || r2.StepDown.RequestedAt != asked.StepDown.RequestedAt {
			t.Errorf("%s: asked again: %q %+v", c.name, msg, r2.StepDown)
		}
	}
}

// TestLoneVoterIsNotAskedToStepDown: a cluster of one voter (a fresh
// target's default) has no standby to take over, so its leader is
// restarted at once, even beside a read replica.
func TestLoneVoterIsNotAskedToStepDown(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &Members{StatefulSet: "restored", Replicas: 1, Pods: []Member{
		{Name: "restored-0", UID: "old-0", Ready: true, Health: Health{Initialized: true}},
	}}
	r, phase, msg, _ := Step(Restart{StartedAt: at(t0)}, m, "u", DefaultTimeouts, t0)
	if phase != schemas.PhaseRunning || r.StepDown != nil || len(r.Pods) != 1 || !r.Pods[0].Leader {
		t.Fatalf("lone voter: %s %q %+v %+v, want it restarted as the leader without a step-down", phase, msg, r.StepDown, r.Pods)
	}
	m.Pods = append(m.Pods, Member{Name: "restored-read-0", UID: "old-r", Ready: true, ReadReplica: true, Health: Health{Initialized: true, Standby: true}})
	m.ReadReplicas = "restored-read"
	r = Restart{StartedAt: at(t0), Pods: []RestartedPod{{Name: "restored-read-0", UID: "old-r", DeletedAt: at(t0), HealthyAt: at(t0)}}}
	m.Pods[1].UID = "new-r"
	r, _, msg, _ = Step(r, m, "u", DefaultTimeouts, t0)
	if r.StepDown != nil || len(r.Pods) != 2 || r.Pods[1].Name != "restored-0" {
		t.Fatalf("lone voter beside a read replica: %q %+v %+v", msg, r.StepDown, r.Pods)
	}
}
