package baotest

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// TestThreeVoters runs every check on one shared three-node cluster, in
// order: each subtest leaves the cluster healthy for the next.
func TestThreeVoters(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c := Start(t, 3)
	t.Logf("Start(3): %s (subnet %s)", time.Since(t0).Round(10*time.Millisecond), c.Nodes[0].IP)

	t.Run("one leader, two standby voters", func(t *testing.T) {
		leader := c.Leader(t)
		ids := map[string]bool{}
		for i := range c.Nodes {
			h := c.Health(t, i)
			if !h.Initialized || h.Sealed || h.Standby != (i != leader) || h.ClusterID == "" || h.Version != "2.4.0" {
				t.Errorf("node %d (leader %d): %+v", i, leader, h)
			}
			ids[h.ClusterID] = true
		}
		if len(ids) != 1 {
			t.Errorf("cluster ids: %v", ids)
		}
		code, b := c.Do(t, leader, "GET", "/v1/sys/storage/raft/autopilot/state", "")
		var ap struct{ Data autopilot }
		if code != 200 || json.Unmarshal(b, &ap) != nil {
			t.Fatalf("autopilot state: %d %s", code, b)
		}
		slices.Sort(ap.Data.Voters)
		if want := []string{"node0", "node1", "node2"}; !slices.Equal(ap.Data.Voters, want) || ap.Data.Leader != c.Nodes[leader].ID {
			t.Errorf("autopilot: voters %v leader %q, want %v and %q", ap.Data.Voters, ap.Data.Leader, want, c.Nodes[leader].ID)
		}
	})

	t.Run("data is read on every node", func(t *testing.T) {
		c.Put(t, "foo", "v1")
		for i := range c.Nodes {
			if v := c.Get(t, i, "foo"); v != "v1" {
				t.Errorf("node %d: foo=%q", i, v)
			}
			if v := c.Get(t, i, "nope"); v != "" {
				t.Errorf("node %d: nope=%q", i, v)
			}
		}
	})

	t.Run("standby restart", func(t *testing.T) {
		leader := c.Leader(t)
		i := (leader + 1) % 3
		c.Stop(t, i)
		if c.Running(i) {
			t.Fatal("still running after Stop")
		}
		if _, err := c.Probe(i); err == nil {
			t.Fatal("a stopped node answers")
		}
		t1 := time.Now()
		c.Start(t, i)
		t.Logf("standby unsealed %s after start", time.Since(t1).Round(10*time.Millisecond))
		if h := c.Health(t, i); !h.Standby || h.Sealed {
			t.Errorf("restarted standby: %+v", h)
		}
		if l := c.Leader(t); l != leader {
			t.Errorf("leader moved from %d to %d", leader, l)
		}
		c.Put(t, "foo", "v2")
		if v := c.Get(t, i, "foo"); v != "v2" {
			t.Errorf("foo=%q on the restarted standby", v)
		}
		c.WaitHealthy(t)
	})

	t.Run("leader restart", func(t *testing.T) {
		leader := c.Leader(t)
		t1 := time.Now()
		c.Stop(t, leader)
		stopped := time.Since(t1)
		l := c.Leader(t)
		t.Logf("SIGTERM to exit %s, new leader active %s after SIGTERM", stopped.Round(10*time.Millisecond), time.Since(t1).Round(10*time.Millisecond))
		if l == leader {
			t.Fatalf("leadership stayed on %d", l)
		}
		t2 := time.Now()
		c.Start(t, leader)
		t.Logf("old leader unsealed %s after start", time.Since(t2).Round(10*time.Millisecond))
		if h := c.Health(t, leader); !h.Standby || h.Sealed {
			t.Errorf("old leader: %+v", h)
		}
		if v := c.Get(t, leader, "foo"); v != "v2" {
			t.Errorf("foo=%q on the old leader", v)
		}
		t3 := time.Now()
		c.WaitHealthy(t)
		t.Logf("autopilot healthy %s later", time.Since(t3).Round(10*time.Millisecond))
	})

	t.Run("sealed standby stays sealed", func(t *testing.T) {
		leader := c.Leader(t)
		i := (leader + 2) % 3
		c.RestartSealed(t, i)
		// OpenBao retries the unseal every 5 s: outlast a retry.
		time.Sleep(6 * time.Second)
		h := c.Health(t, i)
		if !h.Initialized || !h.Sealed {
			t.Errorf("sealed node: %+v", h)
		}
		if l := c.Leader(t); l != leader {
			t.Errorf("leader moved from %d to %d", leader, l)
		}
		c.Put(t, "foo", "v3") // two of three voters still make a quorum
		c.Restart(t, i)
		if v := c.Get(t, i, "foo"); v != "v3" {
			t.Errorf("foo=%q after unsealing", v)
		}
		c.WaitHealthy(t)
	})

	t.Run("leader crash", func(t *testing.T) {
		leader := c.Leader(t)
		t1 := time.Now()
		c.Kill(t, leader)
		l := c.Leader(t)
		t.Logf("new leader active %s after SIGKILL", time.Since(t1).Round(10*time.Millisecond))
		if l == leader {
			t.Fatalf("leadership stayed on %d", l)
		}
		c.Start(t, leader)
		c.WaitHealthy(t)
	})

	t.Run("snapshot and restore", func(t *testing.T) {
		c.Put(t, "foo", "snap")
		b := c.Snapshot(t)
		if len(b) < 1000 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("snapshot: %d bytes, starts % x", len(b), b[:min(len(b), 4)])
		}
		t.Logf("snapshot: %d bytes", len(b))
		c.Put(t, "foo", "after")
		t1 := time.Now()
		c.Restore(t, b)
		t.Logf("restore to healthy: %s", time.Since(t1).Round(10*time.Millisecond))
		for i := range c.Nodes {
			if v := c.Get(t, i, "foo"); v != "snap" {
				t.Errorf("node %d: foo=%q after restore", i, v)
			}
		}
		c.WaitHealthy(t)
	})
}

func TestOneNode(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c := Start(t, 1)
	t.Logf("Start(1): %s", time.Since(t0).Round(10*time.Millisecond))
	if l := c.Leader(t); l != 0 {
		t.Fatalf("leader %d", l)
	}
	c.Put(t, "foo", "v1")
	t1 := time.Now()
	c.Restart(t, 0)
	c.Leader(t)
	t.Logf("restart to active: %s", time.Since(t1).Round(10*time.Millisecond))
	if v := c.Get(t, 0, "foo"); v != "v1" {
		t.Errorf("foo=%q after restart", v)
	}
	if len(c.Snapshot(t)) == 0 {
		t.Error("empty snapshot")
	}
}
