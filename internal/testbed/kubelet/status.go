package kubelet

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

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
