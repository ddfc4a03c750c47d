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
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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
