package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet/nsinit"
)

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
