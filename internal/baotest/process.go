package baotest

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// boot creates n nodes on a fresh subnet, starts them and initialises node 0.
func (c *Cluster) boot(t testing.TB, n, attempt int) error {
	base := freeSubnet(t, n)
	c.Nodes = nil
	for i := range n {
		ip := fmt.Sprintf("%s.%d", base, i+1)
		nd := &Node{
			Index: i,
			ID:    fmt.Sprintf("node%d", i),
			IP:    ip,
			Addr:  fmt.Sprintf("http://%s:%d", ip, APIPort),
			Dir:   filepath.Join(c.dir, fmt.Sprintf("try%d", attempt), fmt.Sprintf("node%d", i)),
		}
		if err := os.MkdirAll(filepath.Join(nd.Dir, "raft"), 0o700); err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		if err := c.spawn(nd, c.KeyFile); err != nil {
			return err
		}
	}
	return c.initialize()
}

// initialize initialises node 0 through sys/init and waits until every
// node is unsealed.
func (c *Cluster) initialize() error {
	n0 := c.Nodes[0]
	if _, err := c.waitHealth(n0, func(Health) bool { return true }); err != nil {
		return err
	}
	var init struct {
		RootToken    string   `json:"root_token"`
		RecoveryKeys []string `json:"recovery_keys_base64"`
	}
	// The static seal gives recovery keys, not unseal keys.
	if err := c.call(n0, "PUT", "/v1/sys/init", "", `{"recovery_shares":1,"recovery_threshold":1}`, 200, &init); err != nil {
		return err
	}
	c.RootToken = init.RootToken
	if len(init.RecoveryKeys) > 0 {
		c.RecoveryKey = init.RecoveryKeys[0]
	}
	if _, err := c.waitHealth(n0, Health.Active); err != nil {
		return err
	}
	// Autopilot promotes a joined node once it has been healthy this long
	// (default 10 s); a shorter time only speeds up Start.
	if err := c.call(n0, "POST", "/v1/sys/storage/raft/autopilot/configuration", c.RootToken, `{"server_stabilization_time":"1s"}`, 204, nil); err != nil {
		return err
	}
	// Mount before the others join: they then unseal with it in place.
	if err := c.call(n0, "POST", "/v1/sys/mounts/secret", c.RootToken, `{"type":"kv","options":{"version":"2"}}`, 204, nil); err != nil {
		return err
	}
	for _, nd := range c.Nodes[1:] {
		if _, err := c.waitHealth(nd, func(h Health) bool { return h.Initialized && !h.Sealed }); err != nil {
			return err
		}
	}
	return nil
}

// freeSubnet returns "127.A.B" where A.B is random and port 8200 and 8201 of
// 127.A.B.1…n can be bound.
func freeSubnet(t testing.TB, n int) string {
	for range 50 {
		base := fmt.Sprintf("127.%d.%d", 2+randInt(t, 249), randInt(t, 256))
		if subnetFree(base, n) {
			return base
		}
	}
	t.Fatal("baotest: no free loopback subnet")
	return ""
}

func subnetFree(base string, n int) bool {
	for i := range n {
		for _, p := range []int{APIPort, ClusterPort} {
			l, err := net.Listen("tcp", fmt.Sprintf("%s.%d:%d", base, i+1, p))
			if err != nil {
				return false
			}
			_ = l.Close()
		}
	}
	return true
}

func randInt(t testing.TB, n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return int(v.Int64())
}

// config is the node's server configuration with the given seal key file.
func (c *Cluster) config(nd *Node, keyFile string) string {
	return NodeConfig(nd.Index, nd.IP, c.Nodes[0].Addr, filepath.Join(nd.Dir, "raft"), keyFile, NodeOptions{})
}

// NodeOptions are what NodeConfig varies beyond the layout, as
// openbao-operator configures its pods.
type NodeOptions struct {
	// NonVoter joins the node as a permanent non-voter
	// (retry_join_as_non_voter): a read replica.
	NonVoter bool
	// TLS, if set, serves the API over TLS and joins the leader over
	// verified TLS; otherwise the API is plain HTTP.
	TLS *NodeTLS
}

// NodeTLS are a node's TLS files and the name its peers' certificates are
// verified under when it joins (they name services, never pod IPs).
type NodeTLS struct {
	CertFile, KeyFile, CAFile, ServerName string
}

// NodeConfig is the server configuration of node index of a cluster: its
// own address ip (API on APIPort, cluster on ClusterPort), Raft data in
// dataDir, the static seal key in keyFile, and, past node 0, a retry_join
// to node 0 at leaderAddr. Start uses it, and so do tests that run OpenBao
// as the pods of a StatefulSet.
func NodeConfig(index int, ip, leaderAddr, dataDir, keyFile string, o NodeOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "storage \"raft\" {\n  path = %q\n  node_id = \"node%d\"\n  performance_multiplier = 1\n", dataDir, index)
	if o.NonVoter {
		b.WriteString("  retry_join_as_non_voter = true\n")
	}
	if index > 0 {
		// retry_join only matters on first start, when the node has no
		// Raft state yet; later starts rejoin from their own data.
		fmt.Fprintf(&b, "  retry_join {\n    leader_api_addr = %q\n", leaderAddr)
		if o.TLS != nil {
			fmt.Fprintf(&b, "    leader_ca_cert_file = %q\n    leader_tls_servername = %q\n", o.TLS.CAFile, o.TLS.ServerName)
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	scheme := "http"
	fmt.Fprintf(&b, "listener \"tcp\" {\n  address = \"%s:%d\"\n  cluster_address = \"%s:%d\"\n", ip, APIPort, ip, ClusterPort)
	if o.TLS != nil {
		scheme = "https"
		fmt.Fprintf(&b, "  tls_cert_file = %q\n  tls_key_file = %q\n}\n", o.TLS.CertFile, o.TLS.KeyFile)
	} else {
		b.WriteString("  tls_disable = true\n}\n")
	}
	fmt.Fprintf(&b, "seal \"static\" {\n  current_key_id = \"1\"\n  current_key = \"file://%s\"\n}\n", keyFile)
	fmt.Fprintf(&b, "api_addr = \"%s://%s:%d\"\ncluster_addr = \"https://%s:%d\"\n", scheme, ip, APIPort, ip, ClusterPort)
	return b.String()
}

func (c *Cluster) spawn(nd *Node, keyFile string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := nd.proc; p != nil {
		select {
		case <-p.done: // it died by itself; start it again
		default:
			return fmt.Errorf("%s is running", nd.ID)
		}
	}
	conf := filepath.Join(nd.Dir, "config.hcl")
	if err := os.WriteFile(conf, []byte(c.config(nd, keyFile)), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(nd.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "===== baotest: start %s (key %s) at %s\n", nd.ID, filepath.Base(keyFile), time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "server", "-config="+conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HOME="+nd.Dir)
	// Pdeathsig kills the server if the test binary dies without cleaning
	// up (a test timeout exits without running cleanups); its own process
	// group keeps a terminal's Ctrl-C from reaching it before the test
	// stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	nd.proc = p
	return nil
}

// halt signals node's process and waits for it; after grace it kills it.
func (c *Cluster) halt(nd *Node, sig syscall.Signal, grace time.Duration) {
	c.mu.Lock()
	p := nd.proc
	nd.proc = nil
	c.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for _, nd := range c.Nodes {
		wg.Go(func() { c.halt(nd, syscall.SIGTERM, 5*time.Second) })
	}
	wg.Wait()
}

// teardown stops every node and, if the test failed, logs their logs' tails.
func (c *Cluster) teardown(t testing.TB) {
	c.stopAll()
	if !t.Failed() {
		return
	}
	for _, nd := range c.Nodes {
		b, err := os.ReadFile(filepath.Join(nd.Dir, "server.log"))
		if err != nil {
			t.Logf("baotest: %s log: %v", nd.ID, err)
			continue
		}
		const max = 16 << 10
		if len(b) > max {
			b = b[len(b)-max:]
		}
		t.Logf("baotest: %s (%s) server.log, last %d bytes:\n%s", nd.ID, nd.Addr, len(b), b)
	}
}

// local fails the test for an attached cluster, whose processes are not
// the cluster's to start.
func (c *Cluster) local(t testing.TB) {
	t.Helper()
	if c.bin == "" {
		t.Fatal("baotest: an attached cluster's servers are run by something else")
	}
}

// Running reports whether node i's process is running.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.Nodes[i].proc
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to node i and waits until it has exited (SIGKILL after
// 10 s). A leader stopped this way hands leadership over.
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.local(t)
	c.halt(c.Nodes[i], syscall.SIGTERM, 10*time.Second)
}

// Kill sends SIGKILL to node i, a crash: no leadership hand-over.
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	c.local(t)
	c.halt(c.Nodes[i], syscall.SIGKILL, 10*time.Second)
}

// Start starts the stopped node i with its data directory and the right
// key, and waits until it is unsealed (the static seal needs no unseal call).
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	c.local(t)
	nd := c.Nodes[i]
	if err := c.spawn(nd, c.KeyFile); err != nil {
		t.Fatalf("baotest: start %s: %v", nd.ID, err)
	}
	if _, err := c.waitHealth(nd, func(h Health) bool { return h.Initialized && !h.Sealed }); err != nil {
		t.Fatalf("baotest: %s did not unseal: %v", nd.ID, err)
	}
}

// Restart stops node i with SIGTERM and starts it again (see Start).
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Stop(t, i)
	c.Start(t, i)
}

// StartSealed starts the stopped node i with a wrong static key (same key
// id, other bytes) and waits until it answers sys/health as initialised and
// sealed. It stays sealed until it is stopped and started with Start.
func (c *Cluster) StartSealed(t testing.TB, i int) {
	t.Helper()
	c.local(t)
	nd := c.Nodes[i]
	if err := c.spawn(nd, c.wrongKey); err != nil {
		t.Fatalf("baotest: start %s: %v", nd.ID, err)
	}
	if _, err := c.waitHealth(nd, func(h Health) bool { return h.Initialized && h.Sealed }); err != nil {
		t.Fatalf("baotest: %s did not come up sealed: %v", nd.ID, err)
	}
}

// RestartSealed stops node i with SIGTERM and starts it sealed (see
// StartSealed).
func (c *Cluster) RestartSealed(t testing.TB, i int) {
	t.Helper()
	c.Stop(t, i)
	c.StartSealed(t, i)
}
