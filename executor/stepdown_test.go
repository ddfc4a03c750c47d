package executor

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// A step-down run against a real three-voter OpenBao: the leader it is
// given steps down and another node takes over; a pod that is not the
// leader is left alone; a token without sudo on sys/step-down is refused
// with exit 4 naming the grant, and the leader stays; a step-down run
// needs no store settings or credentials, but the pod's name.
func TestStepDown(t *testing.T) {
	testbin.SkipShort(t, "starts a three-voter OpenBao")
	t.Parallel()
	bao := baotest.Start(t, 3)
	run := func(t *testing.T, env map[string]string, token string) (int, schemas.TerminationMessage, string) {
		t.Helper()
		paths := testPaths(t, map[string]string{"token": token})
		var log bytes.Buffer
		code := Main(t.Context(), envOf(env), Options{Paths: paths, Log: &log, Retries: 2, RetryDelay: 50 * time.Millisecond})
		var tm schemas.TerminationMessage
		b, err := os.ReadFile(paths.Termination)
		if err != nil || json.Unmarshal(b, &tm) != nil {
			t.Fatalf("termination message: %v %s", err, b)
		}
		return code, tm, log.String()
	}
	envFor := func(i int) map[string]string {
		return map[string]string{
			schemas.EnvExecutorMode: schemas.ModeStepDown,
			schemas.EnvStepDownPod:  bao.Nodes[i].ID,
			schemas.EnvOpenBaoAddr:  bao.Nodes[i].Addr,
			schemas.EnvAuthMethod:   "token",
		}
	}

	t.Run("a token without sudo on sys/step-down", func(t *testing.T) {
		leader := bao.Leader(t)
		if code, b := bao.Do(t, leader, "PUT", "/v1/sys/policies/acl/no-step-down", `{"policy":"path \"sys/step-down\" { capabilities = [\"update\"] }"}`); code != 204 {
			t.Fatalf("policy: %d %s", code, b)
		}
		code, b := bao.Do(t, leader, "POST", "/v1/auth/token/create", `{"policies":["no-step-down"],"ttl":"10m"}`)
		var tok struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			}
		}
		if code != 200 || json.Unmarshal(b, &tok) != nil {
			t.Fatalf("token: %d %s", code, b)
		}
		code, tm, log := run(t, envFor(leader), tok.Auth.ClientToken)
		if code != schemas.ExitAuth || tm.StepDown == nil || tm.StepDown.SteppedDown || !strings.Contains(tm.Message, "sudo on sys/step-down") {
			t.Fatalf("exit %d %+v: %s\n%s; want exit 4 naming the grant", code, tm.StepDown, tm.Message, log)
		}
		if now := bao.Leader(t); now != leader {
			t.Errorf("the leader changed from node%d to node%d", leader, now)
		}
		if strings.Contains(log, tok.Auth.ClientToken) || strings.Contains(tm.Message, tok.Auth.ClientToken) {
			t.Error("the token leaked into the log or the termination message")
		}
	})

	t.Run("the leader steps down", func(t *testing.T) {
		leader := bao.Leader(t)
		code, tm, log := run(t, envFor(leader), bao.RootToken)
		if code != schemas.ExitOK || tm.StepDown == nil || !tm.StepDown.SteppedDown || tm.StepDown.NewLeader == "" || tm.StepDown.NewLeader == bao.Nodes[leader].Addr {
			t.Fatalf("exit %d %+v: %s\n%s", code, tm.StepDown, tm.Message, log)
		}
		if tm.Submitted || !strings.Contains(tm.Message, "stepped down") || !strings.Contains(tm.Message, "No snapshot was sent") {
			t.Errorf("termination message %+v", tm)
		}
		if now := bao.Leader(t); bao.Nodes[now].Addr != tm.StepDown.NewLeader {
			t.Errorf("active node %s, the run said %s", bao.Nodes[now].Addr, tm.StepDown.NewLeader)
		}
		bao.WaitHealthy(t)
	})

	t.Run("a pod that is not the leader", func(t *testing.T) {
		leader := bao.Leader(t)
		standby := (leader + 1) % 3
		code, tm, log := run(t, envFor(standby), bao.RootToken)
		if code != schemas.ExitOK || !tm.StepDown.SteppedDown || !strings.Contains(tm.Message, "not the active node") {
			t.Fatalf("exit %d %+v: %s\n%s", code, tm.StepDown, tm.Message, log)
		}
		if now := bao.Leader(t); now != leader {
			t.Errorf("the leader changed from node%d to node%d", leader, now)
		}
	})

	t.Run("no pod named", func(t *testing.T) {
		env := envFor(0)
		delete(env, schemas.EnvStepDownPod)
		code, tm, _ := run(t, env, bao.RootToken)
		if code != schemas.ExitConfig || !strings.Contains(tm.Message, schemas.EnvStepDownPod) {
			t.Errorf("exit %d: %s; want exit 1 naming %s", code, tm.Message, schemas.EnvStepDownPod)
		}
	})
}
