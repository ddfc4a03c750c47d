package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet/nsinit"
)

// probeLoop runs a container's readiness probe while its process p runs.
// Until the container is first ready, probes run every 100 ms; then every
// min(periodSeconds, 1 s), so that tests need not wait the default 10 s.
// initialDelaySeconds, timeoutSeconds and the success and failure
// thresholds are honoured.
func (w *podWorker) probeLoop(ctx context.Context, c *container, p *nsinit.Process) {
	pr := c.spec.ReadinessProbe
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	period = min(period, time.Second)
	success, failure := int(max(pr.SuccessThreshold, 1)), int(max(pr.FailureThreshold, 1))
	if pr.FailureThreshold == 0 {
		failure = 3
	}
	if pr.InitialDelaySeconds > 0 {
		t := time.NewTimer(time.Duration(pr.InitialDelaySeconds) * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	okRun, failRun := 0, 0
	everReady := false
	for {
		err := w.probe(ctx, c, pr, p)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		w.mu.Lock()
		was := c.ready
		switch {
		case okRun >= success:
			c.ready = c.proc == p
		case failRun >= failure:
			c.ready = false
		}
		changed := was != c.ready
		everReady = everReady || c.ready
		w.mu.Unlock()
		if changed {
			if err != nil {
				w.k.logf("pod %s container %s not ready: %v", w.key(), c.spec.Name, err)
			} else {
				w.k.logf("pod %s container %s ready %s after the pod was seen", w.key(), c.spec.Name, time.Since(w.seen).Round(time.Millisecond))
			}
			w.sync(ctx)
		}
		next := period
		if !everReady {
			next = 100 * time.Millisecond
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// probe runs one probe; nil means success.
func (w *podWorker) probe(ctx context.Context, c *container, pr *corev1.Probe, p *nsinit.Process) error {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w.mu.Lock()
	ip := w.ip
	w.mu.Unlock()
	switch {
	case pr.HTTPGet != nil:
		g := pr.HTTPGet
		host := g.Host
		if host == "" {
			host = ip
		}
		port, err := resolvePort(g.Port, &c.spec)
		if err != nil {
			return err
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := g.Path
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		for _, h := range g.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // like the kubelet's probes
		resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case pr.TCPSocket != nil:
		host := pr.TCPSocket.Host
		if host == "" {
			host = ip
		}
		port, err := resolvePort(pr.TCPSocket.Port, &c.spec)
		if err != nil {
			return err
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.Exec != nil:
		return w.execProbe(ctx, c, pr.Exec.Command, p)
	}
	return fmt.Errorf("probe type not supported by the harness kubelet")
}

// execProbe runs the command inside the container's root: chroot into
// /proc/<pid>/root reaches the container's mount namespace's view.
func (w *podWorker) execProbe(ctx context.Context, c *container, command []string, p *nsinit.Process) error {
	if len(command) == 0 {
		return fmt.Errorf("empty exec probe")
	}
	pod := w.latest()
	w.mu.Lock()
	ip := w.ip
	w.mu.Unlock()
	env, err := w.buildEnv(ctx, pod, &c.spec, ip, "/")
	if err != nil {
		return err
	}
	bin, argv, err := w.k.program(c.spec.Image, command, nil)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Args = argv
	cmd.Env = env.list()
	cmd.Dir = "/"
	if c.spec.WorkingDir != "" {
		cmd.Dir = c.spec.WorkingDir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: fmt.Sprintf("/proc/%d/root", p.Pid), Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("exec probe: %w: %s", err, out)
	}
	return nil
}

func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}
