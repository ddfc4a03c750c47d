// Package baotest starts a real OpenBao 2.4.0 Raft cluster of n voters as
// local processes, for tests that restart nodes one by one (as a reconciler
// restarts pods) and for end-to-end tests.
//
// Layout, like pods: node i listens on its own loopback address
// 127.A.B.(i+1), API on port 8200 and cluster on 8201, with plain HTTP
// (tls_disable). A and B are random, so that test packages running at the
// same time get different addresses; the ports are probed by binding first.
// Every node has its own Raft directory and the same static seal key, so a
// node that starts again unseals itself. Node 0 is initialised through
// sys/init; the others join it through retry_join and are promoted to
// voters by autopilot.
//
// Start shortens autopilot's server_stabilization_time from 10 s to 1 s;
// it only delays the promotion of joined nodes to voters. Joined nodes
// start as non-voters, and the cluster can lose its leader for half a
// minute if a node restarts before they are promoted: Start waits for that.
//
// Measured on the 2-core development machine (OpenBao 2.4.0), with other
// tests running:
//   - Start(3) takes about 14 s: 1.7 s to init node 0, 5 s until the others
//     have joined and unsealed, then autopilot's reconcile interval (10 s,
//     fixed) before they are voters (24 s with the default stabilization
//     time). Start(1) takes about 2 s.
//   - Restart of a standby: an unsealed standby 0.15 s after its start.
//   - Restart of the leader: SIGTERM makes it exit in about 0.6 s, by which
//     time another node is active; the old leader is an unsealed standby
//     0.2 s after its start, and autopilot is healthy again 1.8 s later.
//   - Kill (SIGKILL) of the leader: another node is active after 1.8 s.
//   - Restore: 204 at once, then the leader answers nothing for about 5.6 s.
//     Reads work again right after, but autopilot shows the standbys as
//     node_status "left", unhealthy, for about 4 s more (its state is
//     rebuilt from the snapshot): a health gate on autopilot must wait.
//   - Restart of a single node: active again after about 1.1 s.
//
// A node started with StartSealed gets a different static key (same key id).
// OpenBao 2.4.0 then keeps running, answers sys/health with initialized=true
// and sealed=true (HTTP 503 by default), logs "failed to unseal core …
// cipher: message authentication failed" and retries every 5 s with the key
// it read at start (fixing the file does not help; a restart does). A sealed
// node takes no part in Raft. Restart (or Stop and Start) brings it back
// with the right key and it unseals as usual.
//
// Reads: standbys never answer reads themselves; they forward them to the
// active node. Get therefore proves that node i is unsealed and reaches the
// active node, not that its own Raft copy holds the data.
package baotest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

// Ports every node uses on its own address, as in a pod.
const (
	APIPort     = 8200
	ClusterPort = 8201
)

// timeout bounds every wait; it only matters when something is broken.
const timeout = 90 * time.Second

// Cluster is a running OpenBao cluster. Its processes live as long as the
// test given to Start; the methods' own t is only used to report failures,
// so subtests may restart nodes of a cluster their parent started. Methods
// fail with t.Fatal, so call them from the test's goroutine; Probe never
// fails the test and suits polling from elsewhere.
type Cluster struct {
	Nodes     []*Node
	RootToken string
	// KeyFile holds the 32-byte static seal key all nodes share.
	KeyFile string
	// RecoveryKey is the single recovery key (base64) sys/init returned.
	RecoveryKey string

	bin      string
	dir      string
	wrongKey string
	hc       *http.Client // no redirects: a standby's 307 stays visible
	probe    *http.Client
	mu       sync.Mutex // guards Node.proc
}

// Node is one OpenBao server of the cluster.
type Node struct {
	Index int
	ID    string // Raft node_id
	IP    string // e.g. 127.23.7.1
	Addr  string // http://IP:8200
	// Dir holds config.hcl, raft/ and server.log (appended across restarts).
	Dir string
	// NonVoter: the node joins as a permanent non-voter (a read replica).
	NonVoter bool

	proc *proc
}

// Health is the unauthenticated sys/health answer.
type Health struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Standby     bool   `json:"standby"`
	ClusterID   string `json:"cluster_id"` // empty while sealed
	Version     string `json:"version"`
}

// Active reports an unsealed node that is not a standby: the leader.
func (h Health) Active() bool { return h.Initialized && !h.Sealed && !h.Standby }

// healthPath makes every state answer 200, so the body decides.
const healthPath = "/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200"

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts n voters (n ≥ 1), initialises the cluster, mounts kv-v2 at
// secret/ and returns once every node is an unsealed voter, autopilot
// reports the cluster healthy and exactly one node is active.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("baotest: %d nodes", n)
	}
	c := newCluster(t)
	c.bin = testbin.Path(t, "openbao")
	t.Cleanup(func() { c.teardown(t) })

	// A subnet free at probe time can be taken before the servers bind (a
	// server that cannot bind exits): try a few.
	for attempt := 0; ; attempt++ {
		err := c.boot(t, n, attempt)
		if err == nil {
			break
		}
		if attempt == 2 || !errors.Is(err, errExited) {
			t.Fatalf("baotest: start %d nodes: %v", n, err)
		}
		t.Logf("baotest: attempt %d: %v; retrying on another subnet", attempt, err)
		c.stopAll()
	}
	c.WaitHealthy(t)
	return c
}

var errExited = errors.New("server exited")

// newCluster makes a cluster's clients and its two 32-byte static keys.
func newCluster(t testing.TB) *Cluster {
	dir := t.TempDir()
	c := &Cluster{
		dir:      dir,
		KeyFile:  filepath.Join(dir, "seal.key"),
		wrongKey: filepath.Join(dir, "wrong-seal.key"),
		hc: &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		probe: &http.Client{Timeout: 2 * time.Second},
	}
	for _, f := range []string{c.KeyFile, c.wrongKey} {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Attach is a cluster whose servers something else runs (the pods of a
// StatefulSet, say), node i at ips[i] with NodeConfig's layout: the same
// client methods, and Init instead of Start's initialisation, but no
// process control (Stop, Start and the like fail the test). KeyFile holds a
// fresh static key for the servers' configuration.
func Attach(t testing.TB, ips []string) *Cluster {
	t.Helper()
	c := newCluster(t)
	for i, ip := range ips {
		c.Nodes = append(c.Nodes, &Node{Index: i, ID: fmt.Sprintf("node%d", i), IP: ip, Addr: fmt.Sprintf("http://%s:%d", ip, APIPort)})
	}
	return c
}

// UseTLS makes the clients speak https to every node, verifying its
// certificate against caPEM under serverName, as a client of an
// openbao-operator cluster must: the certificates name no pod IP.
func (c *Cluster) UseTLS(t testing.TB, caPEM []byte, serverName string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("baotest: the CA holds no PEM certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	c.hc.Transport = &http.Transport{TLSClientConfig: cfg}
	c.probe.Transport = &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	for _, nd := range c.Nodes {
		nd.Addr = fmt.Sprintf("https://%s:%d", nd.IP, APIPort)
	}
}

// Init initialises an attached cluster as Start does (sys/init on node 0,
// kv-v2 at secret/, every node unsealed) and waits until it is healthy.
func (c *Cluster) Init(t testing.TB) {
	t.Helper()
	if err := c.initialize(); err != nil {
		t.Fatalf("baotest: init: %v", err)
	}
	c.WaitHealthy(t)
}

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
