package testbed

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func (e *Env) startHelpers(opts Options, paths map[string]string) error {
	kc := "--kubeconfig=" + e.Kubeconfig
	// kube-controller-manager and kwok act under the identities a real
	// cluster gives them (with every permission), which the operator's
	// admission policy lets through.
	as := func(user string) (string, error) {
		path, err := e.UserKubeconfig(user, "system:masters")
		return "--kubeconfig=" + path, err
	}
	if !opts.NoKCM {
		kc, err := as(kcmUser)
		if err != nil {
			return err
		}
		p, err := startProc(e.Dir, "kube-controller-manager", paths["kube-controller-manager"], nil, kc,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
			"--use-service-account-credentials=false",
			"--controllers=job-controller,garbage-collector-controller,ttl-after-finished-controller,namespace-controller,statefulset-controller,disruption-controller,persistentvolumeclaim-protection-controller",
			"--kube-api-qps=200", "--kube-api-burst=400")
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
	}
	if !opts.NoScheduler {
		p, err := startProc(e.Dir, "kube-scheduler", paths["kube-scheduler"], nil, kc,
			"--authentication-kubeconfig="+e.Kubeconfig, "--authorization-kubeconfig="+e.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
			"--kube-api-qps=200", "--kube-api-burst=400")
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
	}
	if opts.NoKwok {
		return nil
	}
	ctx := context.Background()
	if err := e.ApplyYAML(ctx, kwokDefaultStages); err != nil {
		return fmt.Errorf("default stages: %w", err)
	}
	// HOME points into the state dir so that a user's ~/.kwok/kwok.yaml
	// cannot change the fake kubelet's behaviour.
	home := filepath.Join(e.Dir, "kwok-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	kc, err := as(kubeletUser)
	if err != nil {
		return err
	}
	startKwok := func() (*proc, error) {
		p, err := startProc(e.Dir, "kwok", paths["kwok"], []string{"HOME=" + home}, kc,
			"--enable-crds=Stage",
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
			"--cidr=10.0.0.0/16", "--node-ip=10.0.0.2")
		if err == nil {
			e.procs = append(e.procs, p)
		}
		return p, err
	}
	kwok, err := startKwok()
	if err != nil {
		return err
	}
	if err := e.createNode(ctx); err != nil {
		return err
	}
	// kwok once sat on a loaded machine for over a minute after "Watch
	// nodes" without ever taking the node (CI, 2026-12-04): start it again,
	// once, before giving up.
	if e.nodeReady(ctx, 45*time.Second) {
		return nil
	}
	if err := e.exitedHelper(); err != nil {
		return err
	}
	kwok.stop(5 * time.Second)
	if _, err := startKwok(); err != nil {
		return err
	}
	if e.nodeReady(ctx, 60*time.Second) {
		return nil
	}
	if err := e.exitedHelper(); err != nil {
		return err
	}
	return errors.New("kwok's node never became Ready (kwok was started twice)")
}

// createNode registers kwok's fake node.
func (e *Env) createNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        NodeName,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		Labels: map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux",
			"kubernetes.io/arch": "amd64", "type": "kwok"},
	}}
	if err := e.Client.Create(ctx, node); err != nil {
		return err
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("1000")}
	node.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity}
	if err := e.Client.Status().Update(ctx, node); err != nil {
		return err
	}
	return nil
}

// exitedHelper is an error with the log of a helper (other than a kwok
// stopped for a restart) that exited, nil when none did.
func (e *Env) exitedHelper() error {
	for _, p := range e.procs {
		if p.exited() && !p.stopped.Load() {
			return fmt.Errorf("%s exited at start:\n%s", p.name, p.tail(3000))
		}
	}
	return nil
}

// nodeReady waits up to timeout for kwok's node to be Ready; false also
// when a helper exited.
func (e *Env) nodeReady(ctx context.Context, timeout time.Duration) bool {
	node := &corev1.Node{}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if e.exitedHelper() != nil {
			return false
		}
		if err := e.Client.Get(ctx, client.ObjectKey{Name: NodeName}, node); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
