package kubelet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet/nsinit"
)

const (
	maxTerminationMessage = 4096
	// Tail of the log used by terminationMessagePolicy FallbackToLogsOnError
	// (the kubelet's limits).
	fallbackLogLines = 80
	fallbackLogBytes = 2048
	// Restart back-off: 1 s doubling up to 10 s (the kubelet's 10 s to 5 min
	// would make tests slow), reset after 10 s of running.
	backoffMin   = time.Second
	backoffMax   = 10 * time.Second
	backoffReset = 10 * time.Second
)

// podWorker runs one pod (one UID) from first sight to deletion.
type podWorker struct {
	k    *Kubelet
	uid  types.UID
	ns   string
	name string
	dir  string
	seen time.Time

	mu           sync.Mutex
	pod          *corev1.Pod // latest seen
	ip           string
	startTime    *metav1.Time
	volumesReady bool
	initsDone    bool
	initFailed   bool
	waitReason   string // pod-level problem before containers start
	waitMessage  string
	inits        []*container
	conts        []*container
	terminating  bool

	deleteOnce, goneOnce, stopOnce, termOnce sync.Once
	deleteCh, goneCh, stopCh                 chan struct{}
	term                                     chan struct{} // closed when containers must stop
	syncMu                                   sync.Mutex
}

// container is the state of one container of the pod.
type container struct {
	spec         corev1.Container
	init         bool
	restartCount int32
	state        corev1.ContainerState
	lastState    corev1.ContainerState
	ready        bool
	started      bool
	done         bool // will not run again
	binary       string
	proc         *nsinit.Process
}

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	w := &podWorker{k: k, uid: pod.UID, ns: pod.Namespace, name: pod.Name, seen: time.Now(), pod: pod,
		dir:      filepath.Join(k.dir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
		deleteCh: make(chan struct{}), goneCh: make(chan struct{}), stopCh: make(chan struct{}), term: make(chan struct{})}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	for _, c := range pod.Spec.InitContainers {
		w.inits = append(w.inits, &container{spec: c, init: true, state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}})
	}
	for _, c := range pod.Spec.Containers {
		st := waiting
		if len(pod.Spec.InitContainers) > 0 {
			st = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		}
		w.conts = append(w.conts, &container{spec: c, state: st})
	}
	w.initsDone = len(w.inits) == 0
	return w
}

func (w *podWorker) key() string { return w.ns + "/" + w.name }

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		w.deleteOnce.Do(func() { close(w.deleteCh) })
	}
}

func (w *podWorker) gone() { w.goneOnce.Do(func() { close(w.goneCh) }) }

// shutdown is the kubelet stopping: kill the processes, write nothing.
func (w *podWorker) shutdown(grace time.Duration) {
	w.stopOnce.Do(func() { close(w.stopCh) })
	w.kill(grace)
}

func (w *podWorker) latest() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// grace is the pod's termination grace period, capped.
func (w *podWorker) grace() time.Duration {
	pod := w.latest()
	g := time.Duration(ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		g = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if g > w.k.opts.MaxGrace {
		g = w.k.opts.MaxGrace
	}
	return g
}

// kill stops every container process: SIGTERM, SIGKILL after grace.
func (w *podWorker) kill(grace time.Duration) {
	w.mu.Lock()
	w.terminating = true
	var procs []*nsinit.Process
	for _, c := range append(append([]*container(nil), w.inits...), w.conts...) {
		if c.proc != nil {
			procs = append(procs, c.proc)
		}
	}
	w.mu.Unlock()
	w.termOnce.Do(func() { close(w.term) })
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, p := range procs {
		select {
		case <-p.Done:
		case <-deadline:
			p.Signal(syscall.SIGKILL)
			<-p.Done
		}
	}
}

func (w *podWorker) aborted() bool {
	select {
	case <-w.term:
		return true
	case <-w.deleteCh:
		return true
	case <-w.goneCh:
		return true
	case <-w.stopCh:
		return true
	default:
		return false
	}
}

// sleep waits d or until the pod must stop; it reports whether to go on.
func (w *podWorker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !w.aborted()
	case <-w.term:
	case <-w.deleteCh:
	case <-w.goneCh:
	case <-w.stopCh:
	}
	return false
}

func (w *podWorker) run() {
	ctx, cancel := context.WithCancel(w.k.ctx)
	defer cancel()
	defer w.releaseIP()
	vols := w.prepare(ctx)
	all := make(chan struct{})
	if vols != nil {
		go func() {
			defer close(all)
			if w.runInits(ctx, vols) {
				var wg sync.WaitGroup
				for _, c := range w.conts {
					wg.Add(1)
					go func() { defer wg.Done(); w.runContainer(ctx, c, vols) }()
				}
				wg.Wait()
			}
		}()
	} else {
		close(all)
	}
	select {
	case <-all:
		// Every container has finished for good (or never could start):
		// the phase is terminal. The IP is free again (status keeps it, as
		// the kubelet's does); wait for the pod's deletion.
		w.sync(ctx)
		w.releaseIP()
		select {
		case <-w.deleteCh:
			w.deleteObject(ctx)
		case <-w.goneCh:
		case <-w.stopCh:
		}
	case <-w.deleteCh:
		began := time.Now()
		w.kill(w.grace())
		<-all
		w.releaseIP()
		w.sync(ctx)
		w.deleteObject(ctx)
		w.k.logf("pod %s deleted: processes stopped in %s", w.key(), time.Since(began).Round(time.Millisecond))
	case <-w.goneCh:
		w.kill(w.grace())
		<-all
	case <-w.stopCh:
		<-all
	}
}

// releaseIP gives the pod's IP back once no process of the pod runs, and
// drops the pod from the other pods' /etc/hosts.
func (w *podWorker) releaseIP() {
	w.mu.Lock()
	ip := w.ip
	w.ip = ""
	w.mu.Unlock()
	if ip != "" {
		w.k.releaseIP(ip, w.uid)
		_ = w.k.refreshHosts(nil)
	}
}

// deleteObject removes the pod object once its processes are gone, as the
// kubelet does, so that a StatefulSet can recreate the pod.
func (w *podWorker) deleteObject(ctx context.Context) {
	err := w.k.cs.CoreV1().Pods(w.ns).Delete(ctx, w.name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &w.uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		w.k.logf("delete pod %s: %v", w.key(), err)
	}
}

// prepare allocates the IP and writes the volumes, retrying while the
// pod's objects are missing. nil means the pod must stop.
func (w *podWorker) prepare(ctx context.Context) map[string]volume {
	pod := w.latest()
	for {
		if w.aborted() {
			return nil
		}
		ip, err := w.k.allocateIP(pod)
		if err == nil {
			w.mu.Lock()
			w.ip = ip
			w.mu.Unlock()
			var vols map[string]volume
			if vols, err = w.prepareVolumes(ctx, pod); err == nil {
				if err = w.k.refreshHosts(w); err == nil {
					w.mu.Lock()
					w.volumesReady = true
					w.waitReason, w.waitMessage = "", ""
					w.mu.Unlock()
					return vols
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		reason := "ContainerCreating"
		var ce configError
		if errors.As(err, &ce) {
			reason = "CreateContainerConfigError"
		}
		if err.Error() != w.waitMessage {
			w.k.logf("pod %s: %v", w.key(), err)
		}
		w.setWaiting(reason, err.Error())
		w.sync(ctx)
		if !w.sleep(time.Second) {
			return nil
		}
		pod = w.latest()
	}
}

// hostsEntry is the pod's line in /etc/hosts files ("" without an IP): its
// DNS names under its subdomain (a StatefulSet's headless service), as
// cluster DNS would serve them, and its bare hostname.
func (w *podWorker) hostsEntry() string {
	w.mu.Lock()
	ip, pod := w.ip, w.pod
	w.mu.Unlock()
	if ip == "" {
		return ""
	}
	h := hostname(pod)
	names := h
	if pod.Spec.Subdomain != "" {
		base := h + "." + pod.Spec.Subdomain + "." + pod.Namespace
		names = fmt.Sprintf("%s.svc.cluster.local %s.svc %s %s.%s %s", base, base, base, h, pod.Spec.Subdomain, h)
	}
	return ip + "\t" + names + "\n"
}

func (w *podWorker) hostsFile() string { return filepath.Join(w.dir, "etc-hosts") }

// runInits runs the init containers in order; false means the pod must not
// go on (failed with restartPolicy Never, or stopping).
func (w *podWorker) runInits(ctx context.Context, vols map[string]volume) bool {
	for _, c := range w.inits {
		w.runContainer(ctx, c, vols)
		w.mu.Lock()
		ok := c.state.Terminated != nil && c.state.Terminated.ExitCode == 0
		if !ok && !w.terminating {
			w.initFailed = true
			for _, m := range w.conts {
				m.done = true
			}
		}
		w.mu.Unlock()
		if !ok {
			w.sync(ctx)
			return false
		}
	}
	w.mu.Lock()
	w.initsDone = true
	for _, c := range w.conts {
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	}
	w.mu.Unlock()
	return true
}
