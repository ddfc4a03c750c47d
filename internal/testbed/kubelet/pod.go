package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
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

func (w *podWorker) setWaiting(reason, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitReason, w.waitMessage = reason, msg
	for _, c := range append(append([]*container(nil), w.inits...), w.conts...) {
		if c.state.Running == nil && !c.done {
			c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
		}
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

// restartPolicy for a container: init containers restart on failure unless
// the pod's policy is Never.
func (w *podWorker) restarts(c *container, code int, policy corev1.RestartPolicy) bool {
	if c.init {
		return code != 0 && policy != corev1.RestartPolicyNever
	}
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

// runContainer runs one container until it is done for good.
func (w *podWorker) runContainer(ctx context.Context, c *container, vols map[string]volume) {
	backoff := backoffMin
	for {
		if w.aborted() {
			w.markDone(c)
			return
		}
		p, startedAt, logFile, logOffset, termFile, err := w.start(ctx, c, vols)
		if err != nil {
			reason := "CreateContainerError"
			var ce configError
			if errors.As(err, &ce) {
				reason = "CreateContainerConfigError"
			}
			if strings.Contains(err.Error(), "Options.Images") {
				reason = "ErrImagePull"
			}
			w.mu.Lock()
			repeated := c.state.Waiting != nil && c.state.Waiting.Message == err.Error()
			c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
			w.mu.Unlock()
			if !repeated {
				w.k.logf("pod %s container %s: %v", w.key(), c.spec.Name, err)
			}
			w.sync(ctx)
			if !w.sleep(backoff) {
				w.markDone(c)
				return
			}
			backoff = min(backoff*2, backoffMax)
			continue
		}
		probeCtx, stopProbe := context.WithCancel(ctx)
		if !c.init && c.spec.ReadinessProbe != nil {
			go w.probeLoop(probeCtx, c, p)
		}
		w.sync(ctx)
		<-p.Done
		stopProbe()
		finished := metav1.Now()
		code := p.Code
		msg := readTermination(termFile)
		reason := "Completed"
		if code != 0 {
			reason = "Error"
			if msg == "" && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
				msg = logTail(logFile, logOffset)
			}
		}
		if p.Err != nil && code < 0 {
			reason, msg = "Error", p.Err.Error()
		}
		policy := w.latest().Spec.RestartPolicy
		w.mu.Lock()
		c.proc = nil
		c.ready = false
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: int32(code), Reason: reason, Message: msg, StartedAt: startedAt, FinishedAt: finished,
			ContainerID: c.containerID(w.uid),
		}}
		again := !w.terminating && w.restarts(c, code, policy)
		if !again {
			c.done = true
		}
		w.mu.Unlock()
		w.k.logf("pod %s container %s exited with %d after %s", w.key(), c.spec.Name, code, finished.Sub(startedAt.Time).Round(time.Millisecond))
		if !again {
			if !c.init {
				w.sync(ctx)
			}
			return
		}
		if finished.Sub(startedAt.Time) > backoffReset {
			backoff = backoffMin
		}
		w.mu.Lock()
		c.lastState = c.state
		c.restartCount++
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container %s", backoff, c.spec.Name)}}
		w.mu.Unlock()
		w.sync(ctx)
		if !w.sleep(backoff) {
			w.markDone(c)
			return
		}
		backoff = min(backoff*2, backoffMax)
	}
}

func (w *podWorker) markDone(c *container) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c.done = true
	if c.state.Terminated == nil {
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown",
			Message: "The container could not be located when the pod was terminated", FinishedAt: metav1.Now()}}
	}
}

func (c *container) containerID(uid types.UID) string {
	return fmt.Sprintf("harness://%s-%s-%d", uid, c.spec.Name, c.restartCount)
}

// start builds the container's namespace and starts its process.
func (w *podWorker) start(ctx context.Context, c *container, vols map[string]volume) (p *nsinit.Process, startedAt metav1.Time, logFile string, logOffset int64, termFile string, err error) {
	pod := w.latest()
	w.mu.Lock()
	ip := w.ip
	run := filepath.Join(w.dir, c.spec.Name+"-"+strconv.Itoa(int(c.restartCount)))
	w.mu.Unlock()
	home := filepath.Join(w.dir, c.spec.Name+"-home")
	for _, d := range []string{run, filepath.Join(run, "root"), home} {
		if err = os.MkdirAll(d, 0o755); err != nil {
			return
		}
	}
	env, err := w.buildEnv(ctx, pod, &c.spec, ip, home)
	if err != nil {
		return
	}
	command := make([]string, len(c.spec.Command))
	for i, s := range c.spec.Command {
		command[i] = expand(s, env.vals)
	}
	args := make([]string, len(c.spec.Args))
	for i, s := range c.spec.Args {
		args[i] = expand(s, env.vals)
	}
	bin, argv, err := w.k.program(c.spec.Image, command, args)
	if err != nil {
		return
	}
	mounts, err := w.mounts(pod, &c.spec, vols)
	if err != nil {
		return
	}
	termFile = filepath.Join(run, "termination-log")
	if err = os.WriteFile(termFile, nil, 0o666); err != nil {
		return
	}
	_ = os.Chmod(termFile, 0o666)
	termPath := c.spec.TerminationMessagePath
	if termPath == "" {
		termPath = corev1.TerminationMessagePathDefault
	}
	mounts = append(mounts,
		nsinit.Mount{Source: termFile, Target: termPath},
		nsinit.Mount{Source: filepath.Join(w.dir, "etc-hosts"), Target: "/etc/hosts", ReadOnly: true})
	logFile = filepath.Join(w.dir, c.spec.Name+".log")
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer func() { _ = lf.Close() }()
	if fi, serr := lf.Stat(); serr == nil {
		logOffset = fi.Size()
	}
	w.k.addLog(w.ns, w.name, logFile)
	wd := c.spec.WorkingDir
	var dirs []string
	if wd == "" {
		wd = filepath.Join(run, "workdir")
		if err = os.MkdirAll(wd, 0o755); err != nil {
			return
		}
	} else {
		dirs = append(dirs, wd)
	}
	spec := nsinit.Spec{
		Root: filepath.Join(run, "root"), Scratch: run, Mounts: mounts, Dirs: dirs, Hostname: hostname(pod),
		Path: bin, Args: argv, Env: env.list(), Dir: wd, Log: lf,
	}
	w.mu.Lock()
	if w.terminating {
		w.mu.Unlock()
		err = errors.New("pod is terminating")
		return
	}
	p, err = nsinit.Start(spec)
	if err != nil {
		w.mu.Unlock()
		return
	}
	startedAt = metav1.Now()
	c.proc = p
	c.binary = bin
	c.started = true
	c.ready = c.spec.ReadinessProbe == nil && !c.init
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
	if w.startTime == nil {
		w.startTime = &startedAt
	}
	w.mu.Unlock()
	w.k.logf("pod %s container %s started (pid %d, IP %s) %s after the pod was seen", w.key(), c.spec.Name, p.Pid, ip,
		time.Since(w.seen).Round(time.Millisecond))
	return
}

// mounts lists a container's volume mounts (and the default token mount).
func (w *podWorker) mounts(pod *corev1.Pod, c *corev1.Container, vols map[string]volume) ([]nsinit.Mount, error) {
	var out []nsinit.Mount
	hasSA := false
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return nil, configError{fmt.Errorf("volume mount %s: no volume %q", m.MountPath, m.Name)}
		}
		src := v.dir
		if m.SubPath != "" || m.SubPathExpr != "" {
			sub := m.SubPath
			if sub == "" {
				sub = m.SubPathExpr // $(VAR) expansion of subPathExpr is not done
			}
			src = filepath.Join(v.dir, filepath.Clean("/"+sub))
			if _, err := os.Stat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, err
				}
			}
		}
		if filepath.Clean(m.MountPath) == ServiceAccountMountPath {
			hasSA = true
		}
		out = append(out, nsinit.Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly || v.readOnly})
	}
	if v, ok := vols[defaultTokenVolume]; ok && !hasSA {
		out = append(out, nsinit.Mount{Source: v.dir, Target: ServiceAccountMountPath, ReadOnly: true})
	}
	return out, nil
}

func readTermination(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	b := make([]byte, maxTerminationMessage)
	n, _ := f.Read(b)
	return string(b[:n])
}

// logTail is the tail of what this run wrote to the log.
func logTail(path string, from int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	b = b[from:]
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > fallbackLogLines {
		lines = lines[len(lines)-fallbackLogLines:]
	}
	s := strings.Join(lines, "")
	if len(s) > fallbackLogBytes {
		s = s[len(s)-fallbackLogBytes:]
	}
	return s
}

// ---- status ----

// sync writes the pod's status from the worker's state.
func (w *podWorker) sync(ctx context.Context) {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	if ctx.Err() != nil || w.k.ctx.Err() != nil {
		return
	}
	select {
	case <-w.stopCh:
		return
	case <-w.goneCh:
		return
	default:
	}
	pods := w.k.cs.CoreV1().Pods(w.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != w.uid || cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
			return nil // never leave a terminal phase
		}
		w.mu.Lock()
		cur.Status = w.status(cur.Status)
		w.mu.Unlock()
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.k.logf("status of pod %s: %v", w.key(), err)
	}
}

func (w *podWorker) phase() corev1.PodPhase {
	if w.initFailed {
		return corev1.PodFailed
	}
	allDone, allOK, anyStarted := true, true, false
	for _, c := range w.conts {
		if !c.done {
			allDone = false
		}
		if c.started {
			anyStarted = true
		}
		if c.state.Terminated == nil || c.state.Terminated.ExitCode != 0 {
			allOK = false
		}
	}
	switch {
	case allDone && allOK:
		return corev1.PodSucceeded
	case allDone:
		return corev1.PodFailed
	case anyStarted && w.initsDone:
		return corev1.PodRunning
	}
	return corev1.PodPending
}

func (w *podWorker) status(old corev1.PodStatus) corev1.PodStatus {
	st := *old.DeepCopy()
	st.Phase = w.phase()
	st.HostIP = w.k.hostIP
	st.HostIPs = []corev1.HostIP{{IP: w.k.hostIP}}
	if w.ip != "" {
		st.PodIP = w.ip
		st.PodIPs = []corev1.PodIP{{IP: w.ip}}
	}
	if w.startTime != nil {
		st.StartTime = w.startTime
	} else if st.StartTime == nil {
		st.StartTime = ptr.To(metav1.NewTime(w.seen))
	}
	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	allReady := !terminal && len(w.conts) > 0
	for _, c := range w.conts {
		if !c.ready {
			allReady = false
		}
	}
	readyReason := ""
	if terminal {
		readyReason = "PodCompleted"
	} else if !allReady {
		readyReason = "ContainersNotReady"
	}
	setCondition(&st, corev1.PodReadyToStartContainers, w.volumesReady, "", "")
	initReason := ""
	if !w.initsDone {
		initReason = "ContainersNotInitialized"
	}
	setCondition(&st, corev1.PodInitialized, w.initsDone, initReason, "")
	setCondition(&st, corev1.ContainersReady, allReady, readyReason, "")
	setCondition(&st, corev1.PodReady, allReady, readyReason, "")
	st.InitContainerStatuses = containerStatuses(w.inits, w.uid)
	st.ContainerStatuses = containerStatuses(w.conts, w.uid)
	return st
}

func containerStatuses(cs []*container, uid types.UID) []corev1.ContainerStatus {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, 0, len(cs))
	for _, c := range cs {
		s := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: "harness://" + c.binary,
			Ready: c.ready, RestartCount: c.restartCount, State: c.state, LastTerminationState: c.lastState,
			Started: ptr.To(c.state.Running != nil),
		}
		if c.started {
			s.ContainerID = c.containerID(uid)
		}
		if s.ImageID == "harness://" {
			s.ImageID = ""
		}
		out = append(out, s)
	}
	return out
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason, msg string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: now})
}
