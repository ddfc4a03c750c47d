package baotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Probe asks node i's sys/health once; it fails if the node does not
// answer within 2 s (stopped, starting, or busy restoring a snapshot).
func (c *Cluster) Probe(i int) (Health, error) {
	var h Health
	resp, err := c.probe.Get(c.Nodes[i].Addr + healthPath)
	if err != nil {
		return h, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return h, err
	}
	if resp.StatusCode != 200 {
		return h, fmt.Errorf("sys/health: %d %s", resp.StatusCode, b)
	}
	return h, json.Unmarshal(b, &h)
}

// Health is node i's sys/health; the test fails if the node does not answer.
func (c *Cluster) Health(t testing.TB, i int) Health {
	t.Helper()
	h, err := c.Probe(i)
	if err != nil {
		t.Fatalf("baotest: %s health: %v", c.Nodes[i].ID, err)
	}
	return h
}

// waitHealth polls node's health until ok accepts it. It gives up early if
// the process exits (errExited).
func (c *Cluster) waitHealth(nd *Node, ok func(Health) bool) (Health, error) {
	c.mu.Lock()
	p := nd.proc
	c.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			select {
			case <-p.done:
				return Health{}, fmt.Errorf("%s: %w", nd.ID, errExited)
			default:
			}
		}
		h, err := c.Probe(nd.Index)
		if err == nil && ok(h) {
			return h, nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("health %+v", h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return Health{}, fmt.Errorf("%s: timeout after %s, last: %v", nd.ID, timeout, last)
}

// Leader waits until exactly one running node is active and returns its
// index.
func (c *Cluster) Leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		leader, n := -1, 0
		for i := range c.Nodes {
			if h, err := c.Probe(i); err == nil && h.Active() {
				leader = i
				n++
			}
		}
		if n == 1 {
			return leader
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("baotest: no single active node after %s", timeout)
	return -1
}

// autopilot is the part of sys/storage/raft/autopilot/state we check.
type autopilot struct {
	Healthy bool     `json:"healthy"`
	Leader  string   `json:"leader"`
	Voters  []string `json:"voters"`
	Servers map[string]struct {
		Healthy bool   `json:"healthy"`
		Status  string `json:"status"` // leader, voter or non-voter
	} `json:"servers"`
}

// WaitHealthy waits until every node is running, unsealed and a voter (a
// NonVoter node: a non-voter),
// autopilot reports the cluster healthy, and one node is active. Joined
// nodes start as non-voters; restarting anything before they are promoted
// can leave the cluster without a leader for half a minute.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if msg := c.unhealthy(); msg == "" {
			return
		} else {
			last = msg
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("baotest: cluster not healthy after %s: %s", timeout, last)
}

// unhealthy says why the cluster is not healthy, or "".
func (c *Cluster) unhealthy() string {
	leader := -1
	for i, nd := range c.Nodes {
		h, err := c.Probe(i)
		switch {
		case err != nil:
			return fmt.Sprintf("%s: %v", nd.ID, err)
		case !h.Initialized || h.Sealed:
			return fmt.Sprintf("%s: %+v", nd.ID, h)
		case h.Active():
			leader = i
		}
	}
	if leader < 0 {
		return "no active node"
	}
	var ap autopilot
	var wrap struct{ Data *autopilot }
	wrap.Data = &ap
	if err := c.call(c.Nodes[leader], "GET", "/v1/sys/storage/raft/autopilot/state", c.RootToken, "", 200, &wrap); err != nil {
		return err.Error()
	}
	voters, nonVoter := 0, map[string]bool{}
	for _, nd := range c.Nodes {
		if nd.NonVoter {
			nonVoter[nd.ID] = true
		} else {
			voters++
		}
	}
	if !ap.Healthy || len(ap.Servers) != len(c.Nodes) || len(ap.Voters) != voters {
		return fmt.Sprintf("autopilot: %+v", ap)
	}
	for id, s := range ap.Servers {
		// node_type says "voter" even before promotion; status tells.
		ok := s.Status == "voter" || s.Status == "leader"
		if nonVoter[id] {
			ok = s.Status == "non-voter"
		}
		if !ok || !s.Healthy {
			return fmt.Sprintf("autopilot: %s %+v", id, s)
		}
	}
	return ""
}

// call sends a request to nd and decodes a JSON answer into out (if not nil);
// any status but want is an error.
func (c *Cluster) call(nd *Node, method, path, token, body string, want int, out any) error {
	code, b, err := c.do(nd, method, path, token, body)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("%s %s on %s: %d %s", method, path, nd.ID, code, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *Cluster) do(nd *Node, method, path, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, nd.Addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Do sends an authenticated (root token) request to node i and returns the
// status and body. Redirects are not followed.
func (c *Cluster) Do(t testing.TB, i int, method, path, body string) (int, []byte) {
	t.Helper()
	code, b, err := c.do(c.Nodes[i], method, path, c.RootToken, body)
	if err != nil {
		t.Fatalf("baotest: %s %s on %s: %v", method, path, c.Nodes[i].ID, err)
	}
	return code, b
}

// Put writes secret/<key> = {"value": value} (kv-v2) through the leader. A
// freshly mounted kv-v2 refuses writes until its upgrade is done, so errors
// are retried for a few seconds.
func (c *Cluster) Put(t testing.TB, key, value string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"data": map[string]string{"value": value}})
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for range 100 {
		code, b, err := c.do(c.Nodes[c.Leader(t)], "POST", "/v1/secret/data/"+key, c.RootToken, string(body))
		if err == nil && code == 200 {
			return
		}
		last = fmt.Sprintf("%d %s %v", code, b, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("baotest: put %s: %s", key, last)
}

// Get reads secret/<key> (kv-v2) through node i and returns its "value", or
// "" if the secret does not exist. A standby forwards the read to the
// active node (no X-Vault-No-Request-Forwarding, which would get a 307).
// Errors other than 404 (a node still connecting to the leader) are retried
// for a few seconds.
func (c *Cluster) Get(t testing.TB, i int, key string) string {
	t.Helper()
	var last string
	for range 100 {
		code, b, err := c.do(c.Nodes[i], "GET", "/v1/secret/data/"+key, c.RootToken, "")
		if err == nil && code == 404 {
			return ""
		}
		if err == nil && code == 200 {
			var r struct {
				Data struct {
					Data map[string]string `json:"data"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("baotest: get %s on %s: %v: %s", key, c.Nodes[i].ID, err, b)
			}
			return r.Data.Data["value"]
		}
		last = fmt.Sprintf("%d %s %v", code, b, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("baotest: get %s on %s: %s", key, c.Nodes[i].ID, last)
	return ""
}

// Snapshot takes a Raft snapshot from the leader (standbys answer 307).
func (c *Cluster) Snapshot(t testing.TB) []byte {
	t.Helper()
	nd := c.Nodes[c.Leader(t)]
	code, b, err := c.do(nd, "GET", "/v1/sys/storage/raft/snapshot", c.RootToken, "")
	if err != nil || code != 200 || len(b) == 0 {
		t.Fatalf("baotest: snapshot from %s: %d %v %s", nd.ID, code, err, bytes.TrimSpace(b[:min(len(b), 200)]))
	}
	return b
}

// Restore posts snap to the leader's sys/storage/raft/snapshot (not
// -force: a snapshot of another seal key is refused) and waits until every
// running node answers sys/health again and one is active. OpenBao answers
// 204 at once, then blocks every request to the leader for about 5.5 s.
// A snapshot of this cluster keeps RootToken valid.
func (c *Cluster) Restore(t testing.TB, snap []byte) {
	t.Helper()
	nd := c.Nodes[c.Leader(t)]
	req, err := http.NewRequest("POST", nd.Addr+"/v1/sys/storage/raft/snapshot", bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", c.RootToken)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("baotest: restore on %s: %v", nd.ID, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("baotest: restore on %s: %d %s", nd.ID, resp.StatusCode, b)
	}
	for _, nd := range c.Nodes {
		if c.Running(nd.Index) {
			if _, err := c.waitHealth(nd, func(h Health) bool { return h.Initialized && !h.Sealed }); err != nil {
				t.Fatalf("baotest: after restore: %v", err)
			}
		}
	}
	c.Leader(t)
}
